// relprop web page: pick an image, a model and an LRP setting; see the explanation.
// Plain JavaScript, no external assets. Server text is always inserted with textContent.
"use strict";

const state = {
  models: [], composites: [], methods: [], parameters: {}, samples: [],
  image: null,            // {kind: "upload", file: File} or {kind: "sample", id: "..."}
  panels: [],
};

const SEEDS = [
  {title: "LRP-0", composite: "lrp-0", params: {}},
  {title: "LRP-ε (0.25)", composite: "epsilon", params: {epsilon: 0.25}},
  {title: "LRP-γ (0.25)", composite: "gamma", params: {gamma: 0.25}},
  {title: "ε-γ-box composite", composite: "epsilon-gamma-box", params: {epsilon: 0.25, gamma: 0.25}},
];
const DEBOUNCE_MS = 150;

function $(selector, root = document) { return root.querySelector(selector); }
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e4)) return value.toExponential(2);
  return Number(value.toFixed(digits)).toString();
}
function percent(p) {
  const value = p * 100;
  return value >= 0.1 || value === 0 ? `${value.toFixed(1)}%` : `${value.toExponential(1)}%`;
}
function setStatus(text) { $("#status").textContent = text; }
function currentModel() { return state.models.find((m) => m.name === $("#model").value); }

async function getJSON(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function errorText(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  return `HTTP ${status}`;
}

// -- sliders: log or linear scale on a 0..1000 range ------------------------------------------
function sliderToValue(spec, position) {
  const t = position / 1000;
  if (spec.scale === "log") {
    const lo = Math.log10(spec.min), hi = Math.log10(spec.max);
    return Number((10 ** (lo + t * (hi - lo))).toPrecision(3));
  }
  return Number((spec.min + t * (spec.max - spec.min)).toFixed(3));
}
function valueToSlider(spec, value) {
  if (spec.scale === "log") {
    const lo = Math.log10(spec.min), hi = Math.log10(spec.max);
    return Math.round(((Math.log10(Math.max(value, spec.min)) - lo) / (hi - lo)) * 1000);
  }
  return Math.round(((value - spec.min) / (spec.max - spec.min)) * 1000);
}

// -- panels -----------------------------------------------------------------------------------
class Panel {
  constructor(key, title, defaults) {
    this.key = key;
    this.node = $("#panel-template").content.firstElementChild.cloneNode(true);
    this.node.id = `panel-${key}`;
    $(".panel-title", this.node).textContent = title;
    $("#panels").append(this.node);
    this.values = {};
    this.controller = null;
    this.timer = null;
    this.lastForm = null;
    this.build(defaults);
  }

  role(name) { return $(`[data-role="${name}"]`, this.node); }

  build(defaults) {
    const method = this.role("method");
    for (const m of state.methods) method.append(el("option", {value: m.name, text: m.name, title: m.description}));
    method.value = "lrp";
    const composite = this.role("composite");
    for (const c of state.composites) composite.append(el("option", {value: c.name, text: c.name, title: c.description}));
    composite.value = defaults.composite;
    for (const [name, spec] of Object.entries(state.parameters)) {
      this.values[name] = defaults.params?.[name] ?? spec.default;
      const slider = el("input", {type: "range", min: "0", max: "1000", step: "1", dataset: {param: name}});
      slider.value = String(valueToSlider(spec, this.values[name]));
      const output = el("output", {dataset: {param: name}, text: fmt(this.values[name], 3)});
      const row = el("label", {class: "param", title: spec.description, dataset: {param: name}},
        [el("span", {class: "param-name", text: spec.label}), slider, output]);
      this.role("params").append(row);
      slider.addEventListener("input", () => this.onSlider(name, sliderToValue(spec, Number(slider.value))));
    }
    method.addEventListener("change", () => { this.syncControls(); this.explain(); });
    composite.addEventListener("change", () => { this.syncControls(); this.explain(); });
    this.role("target").addEventListener("change", () => this.explain());
    this.role("score").addEventListener("change", () => this.explain());
    this.role("download-npy").addEventListener("click", () => this.downloadRelevance());
    this.fillTargets();
    this.syncControls();
  }

  onSlider(name, value) {
    this.values[name] = value;
    // α = β + 1 is what the αβ rule conserves; moving one slider moves the other.
    if (name === "alpha") this.setValue("beta", Math.max(0, Number((value - 1).toFixed(3))));
    if (name === "beta") this.setValue("alpha", Number((value + 1).toFixed(3)));
    $(`output[data-param="${name}"]`, this.node).textContent = fmt(value, 3);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.explain(), DEBOUNCE_MS);
  }

  setValue(name, value) {
    const spec = state.parameters[name];
    if (!spec) return;
    this.values[name] = value;
    $(`input[data-param="${name}"]`, this.node).value = String(valueToSlider(spec, value));
    $(`output[data-param="${name}"]`, this.node).textContent = fmt(value, 3);
  }

  fillTargets() {
    const select = this.role("target");
    const previous = select.value;
    select.replaceChildren(el("option", {value: "predicted", text: "predicted class"}));
    const model = currentModel();
    if (model) model.classes.forEach((name, i) => select.append(el("option", {value: String(i), text: `${i}: ${name}`})));
    select.value = [...select.options].some((o) => o.value === previous) ? previous : "predicted";
  }

  tunable() {
    if (this.role("method").value !== "lrp") return [];
    const composite = state.composites.find((c) => c.name === this.role("composite").value);
    return composite ? composite.tunable : [];
  }

  syncControls() {
    const lrp = this.role("method").value === "lrp";
    this.role("composite-field").hidden = !lrp;
    this.role("score-field").hidden = !lrp;
    const tunable = this.tunable();
    for (const row of this.role("params").children) row.hidden = !tunable.includes(row.dataset.param);
  }

  form(output = "json") {
    const data = new FormData();
    if (state.image.kind === "upload") data.append("image", state.image.file, "upload");
    else data.append("sample", state.image.id);
    data.append("model", $("#model").value);
    data.append("method", this.role("method").value);
    if (this.role("method").value === "lrp") {
      data.append("composite", this.role("composite").value);
      data.append("score", this.role("score").value);
      for (const name of this.tunable()) data.append(name, String(this.values[name]));
    }
    data.append("target", this.role("target").value);
    data.append("output", output);
    return data;
  }

  async explain() {
    if (!state.image) return;
    if (this.controller) this.controller.abort();  // only the newest setting matters
    const controller = new AbortController();
    this.controller = controller;
    this.node.dataset.state = "loading";
    try {
      const response = await fetch("/api/explain", {method: "POST", body: this.form(), signal: controller.signal});
      const body = await response.json().catch(() => null);
      if (controller !== this.controller) return;
      if (!response.ok) throw new Error(errorText(body, response.status));
      this.show(body);
      this.node.dataset.state = "ready";
    } catch (error) {
      if (error.name === "AbortError") return;
      this.clear();  // the previous picture's heatmap and prediction must not stand under this error
      const box = this.role("error");
      box.textContent = error.message;
      box.hidden = false;
      this.node.dataset.state = "error";
    } finally {
      if (controller === this.controller) this.node.dataset.requests = String(Number(this.node.dataset.requests) + 1);
    }
  }

  clear() {
    this.result = null;
    for (const role of ["input", "heatmap", "overlay"]) this.role(role).removeAttribute("src");
    this.role("input-caption").textContent = "what the model saw";
    for (const role of ["scale-top", "scale-bottom", "notes"]) this.role(role).textContent = "";
    for (const role of ["top", "ledger", "layers", "caveats"]) this.role(role).replaceChildren();
    this.role("caveat").hidden = true;
    const png = this.role("download-png");
    png.removeAttribute("href");
    png.classList.add("disabled");
    this.role("download-npy").disabled = true;
  }

  show(result) {
    this.result = result;
    this.role("error").hidden = true;
    this.role("input").src = result.images.input;
    const shape = result.relevance.shape;
    this.role("input-caption").textContent =
      `what the model saw: ${shape.slice(1).join("×")} ${shape[0] === 1 ? "grey" : "colour"}`;
    this.role("caveats").replaceChildren(...result.caveats.map((c) => el("li", {text: c})));
    this.role("caveat").hidden = result.caveats.length === 0;
    this.role("heatmap").src = result.images.heatmap;
    this.role("overlay").src = result.images.overlay;
    this.role("scale-top").textContent = `+${fmt(result.relevance.scale, 3)}`;
    this.role("scale-bottom").textContent = `−${fmt(result.relevance.scale, 3)}`;
    const png = this.role("download-png");
    png.href = result.images.heatmap;
    png.classList.remove("disabled");
    this.role("download-npy").disabled = false;

    const top = this.role("top");
    top.replaceChildren();
    for (const c of result.top) {
      const bar = el("span", {class: "prob"});
      bar.style.width = `${Math.max(1, Math.round(c.probability * 100))}%`;
      const item = el("li", {dataset: {index: String(c.index)}, title: "explain this class"}, [
        el("span", {class: "name", text: c.name}), el("span", {class: "value", text: percent(c.probability)}), bar,
      ]);
      if (c.index === result.target.index) item.classList.add("explained");
      item.addEventListener("click", () => { this.role("target").value = String(c.index); this.explain(); });
      top.append(item);
    }

    const ledger = result.ledger;
    const rows = [
      ["explained class", `${result.target.index}: ${result.target.name}`],
      [`score (${result.score_type})`, fmt(ledger.score)],
      ["Σ relevance at the input", fmt(ledger.input_relevance)],
      ["absorbed in the network", `${fmt(ledger.absorbed)} (biases ${fmt(ledger.bias_absorbed)})`],
    ];
    if (ledger.top_absorbed !== null) rows.push(["absorbed by the log-odds layer", fmt(ledger.top_absorbed)]);
    rows.push(["residual", `${fmt(ledger.residual)} ${ledger.closes ? "✓ closes" : "✗ does not close"}`]);
    rows.push(["positive / negative", `${fmt(result.relevance.positive)} / ${fmt(result.relevance.negative)}`]);
    this.role("ledger").replaceChildren(...rows.map(([k, v]) => el("tr", {}, [el("th", {text: k}), el("td", {text: v})])));
    const head = el("tr", {}, ["#", "module", "rule", "from above", "absorbed", "bias"].map((t) => el("th", {text: t})));
    const layerRows = ledger.layers.map((l) => el("tr", {}, [
      l.index, l.path, l.rule, fmt(l.relevance_in), fmt(l.absorbed), fmt(l.bias),
    ].map((t) => el("td", {text: String(t)}))));
    this.role("layers").replaceChildren(head, ...layerRows);
    this.role("notes").textContent = [
      result.method === "lrp" ? `${result.composite} ${JSON.stringify(result.params)}` : result.method,
      `${(result.seconds * 1000).toFixed(0)} ms`, ...result.notes,
    ].join(" · ");
  }

  async downloadRelevance() {
    const response = await fetch("/api/explain", {method: "POST", body: this.form("npy")});
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      this.role("error").textContent = errorText(body, response.status);
      this.role("error").hidden = false;
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", {href: url, download: "relprop-relevance.npy"});
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}

// -- input ------------------------------------------------------------------------------------
function explainAll() {
  for (const panel of state.panels) if (!panel.node.hidden) panel.explain();
  if (!$("#seeds-row").hidden) runSeeds();
}

function chooseImage(image) {
  state.image = image;
  for (const button of document.querySelectorAll(".samples button")) {
    button.classList.toggle("chosen", image.kind === "sample" && button.dataset.sample === image.id);
  }
  explainAll();
}

function fillSamples() {
  const box = $("#samples");
  for (const s of state.samples) {
    const button = el("button", {type: "button", title: s.title, dataset: {sample: s.id, kind: s.kind}},
      [el("img", {src: s.url, alt: s.title})]);
    button.addEventListener("click", () => chooseImage({kind: "sample", id: s.id}));
    box.append(button);
  }
}

function defaultSample(model) {
  const kind = model && model.name === "digits" ? "digit" : "photo";
  return state.samples.find((s) => s.kind === kind) || state.samples[0];
}

function onModelChange() {
  const model = currentModel();
  $("#model-notes").textContent = model
    ? `${model.channels === 1 ? "grey" : "RGB"} input ${model.input_shape.join("×")}, ${model.num_classes} classes` +
      (model.notes.length ? ` · ${model.notes.join("; ")}` : "")
    : "";
  for (const panel of state.panels) panel.fillTargets();
  const wanted = model && model.name === "digits" ? "digit" : "photo";
  const sample = state.image && state.image.kind === "sample" ? state.samples.find((s) => s.id === state.image.id) : null;
  if (!state.image || (sample && sample.kind !== wanted && defaultSample(model))) {
    chooseImage({kind: "sample", id: defaultSample(model).id});
  } else {
    explainAll();
  }
}

function setupUpload() {
  const input = $("#file");
  input.addEventListener("change", () => { if (input.files.length) chooseImage({kind: "upload", file: input.files[0]}); });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) chooseImage({kind: "upload", file});
  });
}

// -- the seeds' comparison: LRP-0, ε, γ and the composite on the same input and class ----------
let seedsController = null;
async function runSeeds() {
  if (!state.image) return;
  const row = $("#seeds-row");
  row.hidden = false;
  row.dataset.state = "loading";
  if (seedsController) seedsController.abort();
  const controller = new AbortController();
  seedsController = controller;
  const base = state.panels[0];
  const target = base.result ? String(base.result.target.index) : base.role("target").value;
  const grid = $("#seeds-grid");
  grid.replaceChildren();
  for (const seed of SEEDS) {
    const data = new FormData();
    if (state.image.kind === "upload") data.append("image", state.image.file, "upload");
    else data.append("sample", state.image.id);
    data.append("model", $("#model").value);
    data.append("composite", seed.composite);
    for (const [k, v] of Object.entries(seed.params)) data.append(k, String(v));
    data.append("target", target);
    const figure = el("figure", {}, []);
    grid.append(figure);
    try {
      const response = await fetch("/api/explain", {method: "POST", body: data, signal: controller.signal});
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error(errorText(body, response.status));
      figure.append(el("img", {src: body.images.heatmap, alt: seed.title}),
        el("figcaption", {text: `${seed.title} · Σ R ${fmt(body.ledger.input_relevance, 3)} of ${fmt(body.ledger.score, 3)}`}));
    } catch (error) {
      if (error.name === "AbortError") return;
      figure.append(el("figcaption", {class: "error", text: `${seed.title}: ${error.message}`}));
    }
  }
  if (controller === seedsController) row.dataset.state = "ready";
}

// -- start ------------------------------------------------------------------------------------
async function start() {
  try {
    const [models, composites, methods, parameters, samples] = await Promise.all(
      ["/api/models", "/api/composites", "/api/methods", "/api/parameters", "/api/samples"].map(getJSON));
    Object.assign(state, {models, composites, methods, samples});
    for (const p of parameters) state.parameters[p.name] = p;
  } catch (error) {
    setStatus(`cannot reach the server: ${error.message}`);
    return;
  }
  const select = $("#model");
  for (const m of state.models) select.append(el("option", {value: m.name, text: m.name}));
  select.value = (state.models.find((m) => m.default) || state.models[0]).name;
  fillSamples();
  setupUpload();
  state.panels.push(new Panel("a", "Setting A", {composite: "epsilon-gamma-box"}));
  const b = new Panel("b", "Setting B", {composite: "lrp-0"});
  b.node.hidden = true;
  state.panels.push(b);
  $("#compare").addEventListener("change", (event) => {
    b.node.hidden = !event.target.checked;
    $("#panels").classList.toggle("two", event.target.checked);
    if (event.target.checked) b.explain();
  });
  $("#seeds").addEventListener("click", runSeeds);
  select.addEventListener("change", onModelChange);
  setStatus(`${state.models.length} model(s), ${state.composites.length} composites, ${state.methods.length} method(s)`);
  onModelChange();
}

document.addEventListener("DOMContentLoaded", start);

// The store browser: the SpRAy embedding (click a point: that sample), a sample with its input, heatmap,
// prediction and concepts, and a cluster's members. Everything comes from /api/browse/* on this server.
"use strict";

const COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const colour = (rank) => (rank < 0 ? "#bbb" : COLOURS[rank % COLOURS.length]);
let summary = null;

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : response.statusText);
  return body;
}

function status(text) { $("status").textContent = text; }

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

function thumbnail(index, kind = "heatmap") {
  const img = element("img", { src: `/api/browse/samples/${index}/${kind}.png`, alt: `sample ${index}`,
    title: `sample ${index}`, "data-index": String(index) });
  img.addEventListener("click", () => showSample(index));
  return img;
}

function drawEmbedding(points) {
  const svg = $("embedding");
  svg.replaceChildren();
  const xs = points.map((p) => p[1]), ys = points.map((p) => p[2]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 12 + ((x - x0) / (x1 - x0 || 1)) * 476;
  const sy = (y) => 388 - ((y - y0) / (y1 - y0 || 1)) * 376;
  for (const [index, x, y, cluster] of points) {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", sx(x).toFixed(1));
    dot.setAttribute("cy", sy(y).toFixed(1));
    dot.setAttribute("r", points.length > 2000 ? "2" : "4");
    dot.setAttribute("fill", colour(cluster));
    dot.dataset.index = String(index);
    dot.dataset.cluster = String(cluster);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `sample ${index}, cluster ${cluster}`;
    dot.appendChild(title);
    dot.addEventListener("click", () => showSample(index));
    svg.appendChild(dot);
  }
}

function drawClusters(clusters) {
  const body = $("cluster-table").querySelector("tbody");
  body.replaceChildren();
  for (const c of clusters) {
    const row = element("tr", { "data-rank": String(c.rank) });
    const first = element("td");
    const swatch = element("span", { class: "swatch" });
    swatch.style.background = colour(c.rank);
    first.append(swatch, String(c.rank));
    row.append(first, element("td", {}, String(c.size)), element("td", {}, `${(100 * c.share).toFixed(1)} %`),
      element("td", {}, c.score.toFixed(4)));
    row.addEventListener("click", () => showCluster(c.rank));
    body.appendChild(row);
  }
}

async function showCluster(rank) {
  const card = $("cluster");
  try {
    const cluster = await getJSON(`/api/browse/clusters/${rank}`);
    $("cluster-title").textContent =
      `${rank}: ${cluster.size} samples, unusualness ${cluster.score.toFixed(4)} (most typical first)`;
    const grid = $("cluster-grid");
    grid.replaceChildren(...cluster.members.slice(0, 60).map((i) => thumbnail(i)));
    card.dataset.rank = String(rank);
  } catch (error) { status(error.message); }
}

function fact(list, name, value) { list.append(element("dt", {}, name), element("dd", {}, value)); }

async function showSample(index) {
  const card = $("sample");
  card.dataset.state = "loading";
  try {
    const sample = await getJSON(`/api/browse/samples/${index}`);
    $("sample-title").textContent = String(index);
    $("sample-input").src = sample.input;
    $("sample-heatmap").src = sample.heatmap;
    const facts = $("sample-facts");
    facts.replaceChildren();
    const named = (k, n) => (n ? `${k} (${n})` : String(k));
    fact(facts, "label", String(sample.label));
    fact(facts, "prediction", named(sample.prediction, sample.prediction_name));
    fact(facts, "explained class", named(sample.target, sample.target_name));
    fact(facts, "score", sample.score.toPrecision(4));
    fact(facts, "cluster", sample.cluster === null ? "—" : String(sample.cluster));
    fact(facts, "source", sample.source);
    for (const dot of document.querySelectorAll("#embedding circle.chosen")) dot.classList.remove("chosen");
    const dot = document.querySelector(`#embedding circle[data-index="${index}"]`);
    if (dot) dot.classList.add("chosen");
    card.dataset.index = String(index);
    await showConcepts(index);
    card.dataset.state = "ready";
    status(`sample ${index}`);
  } catch (error) {
    card.dataset.state = "error";
    status(error.message);
  }
}

async function showConcepts(index) {
  const list = $("concepts");
  const layer = $("layer").value;
  list.replaceChildren();
  if (!layer) return;
  list.dataset.state = "loading";
  const found = await getJSON(`/api/browse/samples/${index}/concepts?layer=${encodeURIComponent(layer)}&top=5`);
  for (const concept of found.concepts) {
    const item = element("li", { "data-channel": String(concept.channel) },
      `channel ${concept.channel}: relevance ${concept.relevance.toPrecision(3)} — reference samples:`);
    const refs = element("div", { class: "refs" });
    if (concept.heatmap) {
      refs.appendChild(element("img", { src: concept.heatmap, class: "conditional", "data-role": "conditional",
        alt: `where channel ${concept.channel} is`, title: `conditional heatmap of channel ${concept.channel}` }));
    }
    refs.append(...concept.references.map((i) => thumbnail(i, "input")));
    item.appendChild(refs);
    list.appendChild(item);
  }
  list.dataset.state = "ready";
}

async function start() {
  try {
    summary = await getJSON("/api/browse");
  } catch (error) { status(error.message); return; }
  const counts = summary.counts;
  status(`${summary.store}: ${summary.samples} samples (${counts.ok} explained, ${counts.failed} failed)`);
  const layer = $("layer");
  layer.replaceChildren(...summary.layers.map((name) => element("option", { value: name }, name)));
  $("no-layers").hidden = summary.layers.length > 0;
  $("layer-field").hidden = summary.layers.length === 0;
  layer.addEventListener("change", () => {
    const index = $("sample").dataset.index;
    if (index !== "") showConcepts(Number(index)).catch((error) => status(error.message));
  });
  if (summary.spray === null) {
    $("no-spray").hidden = false;
    $("embedding").hidden = true;
    showSample(0);
    return;
  }
  const spray = summary.spray;
  $("embedding-method").textContent =
    `${spray.n_clusters} clusters; embedding: ${spray.embedding.method}; class ${spray.params.class ?? "all"}`;
  drawEmbedding(spray.embedding.points);
  drawClusters(spray.clusters);
  if (spray.clusters.length) showCluster(0);
  const first = spray.embedding.points.length ? spray.embedding.points[0][0] : 0;
  showSample(first);
}

start();

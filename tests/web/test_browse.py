"""Browsing a relevance store in the web app (relprop serve --store STORE --spray DIR): the JSON routes
against the store and the library, the refusals, and the page in a real browser (screenshot artefact)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from relprop.concepts import reference_samples
from relprop.dataset import RelevanceStore, explain_dataset
from relprop.dataset.lock import StoreLock
from relprop.errors import RelpropError, StoreError
from relprop.models import digits_test_set, load_digits_model
from relprop.spray import analyze, write_report
from relprop.web import WebSettings, create_app

from .conftest import live_server
from .test_page import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, require_browser

LAYER = "features.5"


@pytest.fixture(scope="module")
def browsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("browse")
    store = folder / "digits.zarr"
    explain_dataset(load_digits_model(), "digits", store, target="label", layers=[LAYER], progress="none",
                    low=0.0, high=1.0)  # fmt: skip
    result = analyze(RelevanceStore(store), class_=3, embedding="pca")
    write_report(result, folder / "spray")
    return store, folder / "spray"


@pytest.fixture(scope="module")
def client(browsed: tuple[Path, Path]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    store, spray = browsed
    with TestClient(create_app(WebSettings(store=store, spray=spray))) as test_client:
        yield test_client


def test_summary_and_a_sample_agree_with_the_store_and_the_model(client: Any, browsed: tuple[Path, Path]) -> None:
    spray = browsed[1]
    summary = client.get("/api/browse").json()
    clusters = json.loads((spray / "clusters.json").read_text())
    test_set = digits_test_set()
    threes = np.flatnonzero(test_set.labels.numpy() == 3)
    assert summary["samples"] == 360 and summary["layers"] == [LAYER] and summary["counts"]["ok"] == 360
    assert sorted(p[0] for p in summary["spray"]["embedding"]["points"]) == threes.tolist()
    assert [c["size"] for c in summary["spray"]["clusters"]] == [c["size"] for c in clusters["clusters"]]

    index = int(threes[4])
    sample = client.get(f"/api/browse/samples/{index}").json()
    with torch.no_grad():
        logits = load_digits_model()(test_set.images[index : index + 1])
    assert sample["label"] == 3 and sample["target"] == 3 and sample["prediction"] == int(logits.argmax())
    assert sample["score"] == pytest.approx(float(logits[0, 3]), rel=1e-5)
    assert sample["cluster"] == clusters["samples"]["cluster"][clusters["samples"]["index"].index(index)]

    heatmap = client.get(sample["heatmap"])
    assert heatmap.status_code == 200 and heatmap.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(client.get(sample["input"]).content)).convert("L"))[::12, ::12]
    expected = (test_set.images[index, 0].numpy().clip(0, 1) * 255).round()
    np.testing.assert_array_equal(shown, expected)  # the source read again: the model input, enlarged 12×


def test_a_cluster_and_the_concepts_of_a_sample(client: Any, browsed: tuple[Path, Path]) -> None:
    store, _ = browsed
    top = client.get("/api/browse/clusters/0").json()
    assert top["size"] == len(top["members"]) and top["rank"] == 0
    concepts = client.get(f"/api/browse/samples/{top['members'][0]}/concepts", params={"layer": LAYER, "top": 4})
    found = concepts.json()
    stored = RelevanceStore(store).layer(LAYER)[top["members"][0]]
    assert [c["channel"] for c in found["concepts"]] == np.argsort(-stored, kind="stable")[:4].tolist()
    references = reference_samples(RelevanceStore(store), LAYER, [c["channel"] for c in found["concepts"]], count=6)
    for concept in found["concepts"]:
        assert concept["references"] == references[concept["channel"]][0].tolist()


def test_conditional_heatmaps_with_the_model_that_wrote_the_store(client: Any, browsed: tuple[Path, Path]) -> None:
    import relprop
    from relprop import viz
    from relprop.concepts import conditional_heatmaps
    from relprop.web.browse import BrowseError, StoreBrowser

    index = 17
    found = client.get(f"/api/browse/samples/{index}/concepts", params={"layer": LAYER, "top": 2}).json()
    assert found["model"] == "digits"  # the server's digits model has the store's weights
    concept = found["concepts"][1]
    picture = client.get(concept["heatmap"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(picture.content)).convert("RGB"))[::12, ::12]
    explainer = relprop.Explainer(load_digits_model(), "epsilon-gamma-box", low=0.0, high=1.0)
    x = digits_test_set().images[index : index + 1]
    labels = digits_test_set().labels[index : index + 1]
    expected = conditional_heatmaps(explainer, x, labels, LAYER, [concept["channel"]])[0, 0]
    np.testing.assert_array_equal(shown, viz.heatmap_array(expected, clip_percentile=99.5))
    without = StoreBrowser(browsed[0])
    assert without.concepts(index, LAYER, 2)["concepts"][0]["heatmap"] is None
    with pytest.raises(BrowseError, match=r"^none of this server's models has the weights .* with \(DigitsCNN\);"):
        without.conditional_png(index, LAYER, 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/api/browse/samples/360", "no sample 360; {store} has samples 0 to 359."),
        ("/api/browse/samples/-1/heatmap.png", "no sample -1; {store} has samples 0 to 359."),
        ("/api/browse/clusters/99", "no cluster 99; the SpRAy result has clusters 0 to {last}."),
        (
            "/api/browse/samples/3/concepts?layer=nope",
            "{store} holds no relevance for layer 'nope' (it holds: features.5); explain the data set again with "
            "--layers nope.",
        ),
    ],
)
def test_what_the_store_does_not_have_is_a_404_naming_it(
    client: Any, browsed: tuple[Path, Path], url: str, message: str
) -> None:
    last = client.get("/api/browse").json()["spray"]["n_clusters"] - 1
    answer = client.get(url)
    assert answer.status_code == 404
    assert answer.json() == {"detail": message.format(store=browsed[0], last=last)}


def test_refusals_at_start(browsed: tuple[Path, Path], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    store, spray = browsed
    with TestClient(create_app(WebSettings())) as plain:
        assert plain.get("/api/browse").status_code == 404 and plain.get("/browse").status_code == 404
    with pytest.raises(RelpropError, match=r"^a SpRAy result \(--spray\) is browsed with its relevance store"):
        create_app(WebSettings(spray=spray))
    lock = StoreLock(store)
    lock.acquire()
    try:
        with pytest.raises(StoreError, match=rf"^store {store} is still being written"):
            create_app(WebSettings(store=store))
    finally:
        lock.release()
    (tmp_path / "bad").mkdir()
    with pytest.raises(RelpropError, match=r"cannot read .*clusters\.json"):
        create_app(WebSettings(store=store, spray=tmp_path / "bad"))


def test_the_page_in_a_browser(browsed: tuple[Path, Path], tmp_path: Path) -> None:
    sync_playwright = require_browser()
    store, spray = browsed
    app = create_app(WebSettings(store=store, spray=spray))
    with live_server(app) as base, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 1100},
        )  # fmt: skip
        requested: list[str] = []
        errors: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        try:
            tab.goto(base + "/browse")
            tab.wait_for_selector("#sample[data-state=ready]", timeout=30_000)
            tab.wait_for_selector("#cluster-grid img", timeout=30_000)
            dots = tab.query_selector_all("#embedding circle")
            assert len(dots) == len(RelevanceStore(store).indices(class_=3))
            # Click a point of the second cluster: the sample panel shows that sample and its concepts.
            dot = tab.query_selector('#embedding circle[data-cluster="1"]')
            index = dot.get_attribute("data-index")
            dot.click()
            tab.wait_for_function(
                "i => { const s = document.querySelector('#sample'); return s.dataset.index === i && "
                "s.dataset.state === 'ready'; }",
                arg=index,
                timeout=30_000,
            )
            sample = json.loads(tab.evaluate(f"fetch('/api/browse/samples/{index}').then(r => r.text())"))
            facts = tab.text_content("#sample-facts") or ""
            assert f"prediction{sample['prediction']}" in facts.replace(" ", "") and "cluster1" in facts
            assert len(tab.query_selector_all("#concepts li")) == 5
            assert len(tab.query_selector_all("#concepts li:first-child .refs img[data-index]")) == 6
            assert len(tab.query_selector_all("#concepts li [data-role=conditional]")) == 5
            tab.click('#cluster-table tr[data-rank="1"]')
            tab.wait_for_function("() => document.querySelector('#cluster').dataset.rank === '1'", timeout=30_000)
            assert tab.query_selector("#cluster-grid img").get_attribute("data-index") is not None
            tab.wait_for_load_state("networkidle")
            tab.wait_for_function("() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
            tab.screenshot(path=str(artifacts_dir() / "browse.png"), full_page=True)
        finally:
            context.close()
    assert errors == []
    assert all(url.startswith(base) for url in requested), [u for u in requested if not u.startswith(base)]


def test_serve_with_a_store(browsed: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from relprop.web import command

    store, spray = browsed
    started: list[Any] = []
    monkeypatch.setattr(command, "run_server", lambda app, *args, **kwargs: started.append(app))
    result = CliRunner().invoke(command.serve, ["--port", "0", "--store", str(store), "--spray", str(spray)])
    assert result.exit_code == 0, result.output
    assert f"browse {store} at http://127.0.0.1:" in result.stdout
    assert started[0].state.browser.store.path == store
    for args, message in [
        (["--spray", str(spray)], "error: a SpRAy result (--spray) is browsed with its relevance store; give --store"),
        (["--store", str(tmp_path)], f"error: {tmp_path} is not a relevance store"),
    ]:
        refused = CliRunner().invoke(command.serve, ["--port", "0", *args])
        assert refused.exit_code == 2 and refused.stderr.startswith(message), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

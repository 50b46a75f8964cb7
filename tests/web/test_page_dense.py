"""The page on a dense model, in a real browser: the output map is shown, a box drawn on it is explained.

Headless Chromium driven by Playwright, as in ``test_page.py``; the screenshot goes to
``test-artifacts/web/page-dense.png`` (or ``$RELPROP_TEST_ARTIFACTS/web/``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relprop.models.digit_scenes import digit_scenes_test_set
from relprop.web import WebSettings, create_app

from .conftest import live_server
from .test_page import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, heatmap, requests_done, require_browser, wait_for_result


@pytest.fixture
def dense_page(tmp_path: Path) -> Iterator[tuple[Any, str, list[str]]]:
    sync_playwright = require_browser()
    app = create_app(WebSettings(models=("digit-scenes", "digits")))
    with live_server(app) as base, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        errors: list[str] = []
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        try:
            yield tab, base, errors
        finally:
            context.close()


def drag(tab: Any, box: tuple[int, int, int, int], size: int) -> None:
    """Drag with the mouse over the output map picture from output position (x0, y0) to (x1 - 1, y1 - 1)."""
    script = "img => { const r = img.getBoundingClientRect(); return [r.x, r.y, r.width]; }"
    rect = tab.eval_on_selector("#panel-a [data-role=output-map]", script)
    left, top, width = rect
    step = width / size

    def at(x: int, y: int) -> tuple[float, float]:
        return left + (x + 0.5) * step, top + (y + 0.5) * step

    x0, y0, x1, y1 = box
    tab.mouse.move(*at(x0, y0))
    tab.mouse.down()
    tab.mouse.move(*at((x0 + x1) // 2, (y0 + y1) // 2), steps=3)
    tab.mouse.move(*at(x1 - 1, y1 - 1), steps=3)
    tab.mouse.up()


def ledger_row(tab: Any) -> str:
    return tab.text_content("#panel-a [data-role=ledger] tr:first-child td") or ""


def test_drawing_a_box_on_the_output_map_explains_that_region(dense_page: Any, tmp_path: Path) -> None:
    tab, base, errors = dense_page
    tab.goto(base + "/")
    wait_for_result(tab, "a", 0)  # the first digit scene, its whole output map explained
    assert tab.is_visible("#panel-a [data-role=output-map]")
    assert ledger_row(tab) == "sum of channels 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 over whole map (2304 positions)"
    caption = tab.text_content("#panel-a [data-role=output-caption]")
    assert caption == "model output 48×48: drag a box to explain it"
    assert tab.is_hidden("#panel-a [data-role=top-block]")  # no class probabilities for a dense output
    whole_map = heatmap(tab)

    digit = digit_scenes_test_set(3).objects[0][0]
    done = requests_done(tab, "a")
    tab.select_option("#panel-a [data-role=channel]", str(digit.label))
    wait_for_result(tab, "a", done)
    done = requests_done(tab, "a")
    drag(tab, digit.box, 48)
    wait_for_result(tab, "a", done)
    x0, y0, x1, y1 = digit.box
    assert ledger_row(tab) == f"sum of channel {digit.label} over box ({x0}, {y0}, {x1}, {y1}) (256 positions)"
    assert "closes" in (tab.text_content("#panel-a [data-role=ledger]") or "")
    assert heatmap(tab) not in (whole_map, "None")
    assert tab.is_visible("#panel-a [data-role=region-box]")  # the drawn box stays on the map

    with tab.expect_download() as download:  # the relevance of the drawn box lies on the digit
        tab.click("#panel-a [data-role=download-npy]")
    saved = tmp_path / "relevance.npy"
    download.value.save_as(saved)
    positive = np.clip(np.load(saved)[0], 0, None)
    assert positive[y0:y1, x0:x1].sum() / positive.sum() > 0.8
    tab.click("#seeds")  # the four rules on the same drawn region
    tab.wait_for_selector("#seeds-row[data-state=ready]", timeout=60_000)
    captions = [c.text_content() or "" for c in tab.query_selector_all("#seeds-grid figcaption")]
    assert [c.split(" · ")[0] for c in captions] == ["LRP-0", "LRP-ε (0.25)", "LRP-γ (0.25)", "ε-γ-box composite"]
    assert len({c.rsplit(" of ", 1)[1] for c in captions}) == 1  # one region score, explained four ways
    tab.screenshot(path=str(artifacts_dir() / "page-dense.png"), full_page=True)

    done = requests_done(tab, "a")
    tab.select_option("#panel-a [data-role=target]", f"class:{digit.label}")  # inside the drawn box
    wait_for_result(tab, "a", done)
    assert ledger_row(tab).startswith(f"sum of channel {digit.label} over pixels predicted as class {digit.label} (")
    assert tab.is_disabled("#panel-a [data-role=channel]")  # class K explains channel K
    assert tab.is_visible("#panel-a [data-role=region-box]")

    done = requests_done(tab, "a")
    tab.select_option("#model", "digits")  # back to a classifier: classes again, no output map
    wait_for_result(tab, "a", done)
    assert tab.is_hidden("#panel-a [data-role=output-map-figure]")
    assert len(tab.query_selector_all("#panel-a [data-role=top] li")) == 5
    assert errors == []

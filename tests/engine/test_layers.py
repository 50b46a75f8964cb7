"""Inner-layer relevance (``layers=``) and conditions (``conditions=``, Concept Relevance Propagation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop

from models import small_cnn, torchvision_model

COMPOSITES = ["lrp-0", "epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "alpha2-beta1", "montavon"]


def gradient_times_output(model: nn.Module, x: torch.Tensor, path: str, target: torch.Tensor) -> torch.Tensor:
    """y ⊙ ∂z_c/∂y at a module's output, by plain autograd (LRP-0 on a ReLU net is exactly this)."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    handle = dict(model.named_modules())[path].register_forward_hook(hook)
    try:
        out = model(x.clone())
        out.gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    (y,) = captured
    assert y.grad is not None
    return (y * y.grad).detach()


@pytest.fixture
def bn_model() -> nn.Module:
    model = small_cnn(batchnorm=True).double().eval()
    with torch.no_grad():
        model[1].running_mean.normal_(0, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model


def test_no_layers_by_default(bn_model: nn.Module) -> None:
    assert relprop.explain(bn_model, torch.randn(2, 3, 8, 8, dtype=torch.float64)).layers == {}


@pytest.mark.parametrize("canonize", [True, False])
@pytest.mark.parametrize("path", ["0", "1", "2", "3", "4", "6", "8", "9", "11"])
def test_lrp0_layer_relevance_is_gradient_times_output_with_folding_and_fusion(
    bn_model: nn.Module, path: str, canonize: bool
) -> None:
    """conv "0" + batch norm "1" + in-place ReLU "2": taps on each, with the batch norm folded or not.

    Folded, the conv's output is the folded layer's output (the batch norm's), as in a canonized model.
    """
    model = bn_model
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.bias = None  # bias-free: LRP-0 with the ledger equals the gradient everywhere
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0", layers=[path], canonize=canonize)
    seen_at = "1" if canonize and path == "0" else path
    expected = gradient_times_output(model, x, seen_at, result.target)
    torch.testing.assert_close(result.layers[path], expected, rtol=1e-10, atol=1e-12)
    if seen_at != "0":  # above the batch norm's shift, LRP-0 without biases holds the whole score
        torch.testing.assert_close(result.layers[path].flatten(1).sum(1), result.score, rtol=1e-9, atol=1e-12)


def test_lrp0_bias_free_relevance_sums_to_the_score_at_every_layer() -> None:
    model = small_cnn(bias=False).double().eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    paths = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
    result = relprop.explain(model, x, composite="lrp-0", layers=paths)
    torch.testing.assert_close(result.relevance.flatten(1).sum(1), result.score, rtol=1e-10, atol=1e-12)
    for path in paths:
        torch.testing.assert_close(result.layers[path].flatten(1).sum(1), result.score, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("composite", COMPOSITES)
def test_what_arrives_at_a_layer_is_the_score_less_what_the_layers_above_absorbed(
    bn_model: nn.Module, composite: str
) -> None:
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    paths = ["1", "2", "3", "4", "8", "9"]
    result = relprop.explain(bn_model, x, composite=composite, layers=paths)
    ledger = result.ledger
    assert ledger.closes(rtol=1e-9)
    top = 0.0 if ledger.top_absorbed is None else ledger.top_absorbed
    for path in paths:
        above = sum((e.absorbed for e in ledger.entries if int(e.path) > int(path)), torch.zeros_like(ledger.score))
        arrived = result.layers[path].flatten(1).sum(1)
        torch.testing.assert_close(arrived, ledger.score - top - above, rtol=1e-9, atol=1e-12, msg=path)


def test_layer_relevance_has_the_output_shape_or_one_value_per_channel(bn_model: nn.Module) -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    full = relprop.explain(bn_model, x, layers=["2", "4", "8"])
    assert full.layers["2"].shape == (2, 8, 8, 8) and full.layers["4"].shape == (2, 12, 4, 4)
    assert full.layers["8"].shape == (2, 16)
    channels = relprop.explain(bn_model, x, layers=["2", "4", "8"], layer_reduce="channels")
    torch.testing.assert_close(channels.layers["2"], full.layers["2"].sum((2, 3)), rtol=1e-12, atol=1e-14)
    assert channels.layers["4"].shape == (2, 12) and channels.layers["8"].shape == (2, 16)
    torch.testing.assert_close(channels.relevance, full.relevance, rtol=0, atol=0)


def test_taps_leave_the_explanation_unchanged_on_a_resnet() -> None:
    model = torchvision_model("resnet18").double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    explainer = relprop.Explainer(model, "epsilon-gamma-box")
    plain = explainer(x)
    tapped = explainer(x, layers=["layer4", "layer3.1.conv2", "layer3.1.bn2", "layer1.0.bn1", "layer1"])
    torch.testing.assert_close(tapped.relevance, plain.relevance, rtol=1e-10, atol=1e-12)
    assert tapped.ledger.closes(rtol=1e-9)
    assert tapped.layers["layer4"].shape == (2, 512, 1, 1)


def test_conditional_heatmaps_of_all_channels_sum_to_the_unconditional_one() -> None:
    model = torchvision_model("resnet18").double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    explainer = relprop.Explainer(model, "epsilon-gamma-box")
    unconditional = explainer(x, target=3, layers=["layer3"])
    channels = unconditional.layers["layer3"].shape[1]
    masks = torch.eye(channels, dtype=torch.float64).view(channels, channels, 1, 1)
    conditional = explainer(x.expand(channels, -1, -1, -1), target=3, conditions={"layer3": masks}, layers=["layer3"])
    torch.testing.assert_close(
        conditional.relevance.sum(0, keepdim=True), unconditional.relevance, rtol=1e-9, atol=1e-12
    )
    # each copy explains one channel of layer3: its relevance there is that channel's
    per_channel = unconditional.layers["layer3"].flatten(2).sum(2)[0]
    torch.testing.assert_close(
        conditional.relevance.flatten(1).sum(1), per_channel - _below(conditional), rtol=1e-9, atol=1e-10
    )
    assert conditional.ledger.closes(rtol=1e-9)
    rows = [e for e in conditional.ledger.entries if e.rule == "condition"]
    assert len(rows) == 1 and rows[0].path == "layer3"


def _below(result: relprop.Explanation) -> torch.Tensor:
    """What the operations below the condition absorbed (per sample)."""
    (condition,) = [e for e in result.ledger.entries if e.rule == "condition"]
    return sum(
        (e.absorbed for e in result.ledger.entries if e.index <= condition.index and e is not condition),
        torch.zeros_like(result.score),
    )


def test_layer_errors_name_the_module(bn_model: nn.Module) -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(relprop.ConfigurationError, match=r"the model has no module 'features\.28' to tap; .*'0', '1'"):
        relprop.explain(bn_model, x, layers=["features.28"])
    with pytest.raises(relprop.ConfigurationError, match="layer_reduce must be None or 'channels', got 'mean'"):
        relprop.explain(bn_model, x, layers=["2"], layer_reduce="mean")
    with pytest.raises(relprop.ConfigurationError, match=r"the condition for '4' has shape \(2, 5, 1, 1\)"):
        relprop.explain(bn_model, x, conditions={"4": torch.ones(2, 5, 1, 1)})

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.ReLU()
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.act(self.fc(self.act(x))))

    with pytest.raises(relprop.ConfigurationError, match="module 'act' runs more than once"):
        relprop.explain(Twice().eval(), torch.randn(2, 4), layers=["act"])

"""Engine properties: conservation, LRP-0 = Gradient×Input, architectures, finiteness, CPU/CUDA."""

from __future__ import annotations

import pytest
import torch

import relprop

from helpers import assert_close_relative
from models import TORCHVISION, FunctionalNet, small_cnn, torchvision_model


def gradient_x_input(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    out = model(xx)
    (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), xx)
    return g * x


@pytest.mark.parametrize(
    "model_fn", [lambda: small_cnn(bias=False), lambda: FunctionalNet(bias=False)], ids=["sequential", "functional"]
)
def test_lrp0_conserves_relevance_exactly_without_biases(model_fn) -> None:
    model = model_fn().double().eval()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    logit = result.output.gather(1, result.target[:, None]).squeeze(1)
    total = result.relevance.flatten(1).sum(1)
    assert torch.allclose(total, logit, rtol=1e-6, atol=0)
    assert torch.equal(result.score, logit)


@pytest.mark.parametrize(
    "composite", ["lrp-0", "epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "alpha2-beta1", "montavon"]
)
@pytest.mark.parametrize(
    "model_fn", [lambda: small_cnn(batchnorm=True), FunctionalNet], ids=["sequential-bn", "functional"]
)
def test_ledger_closes_with_biases(model_fn, composite: str) -> None:
    model = model_fn().double().eval()
    torch.nn.init.normal_(model.state_dict()["b1"] if isinstance(model, FunctionalNet) else model[0].bias, 0, 0.3)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, composite=composite)
    ledger = result.ledger
    logit = result.output.gather(1, result.target[:, None]).squeeze(1)
    assert torch.allclose(ledger.score, logit, rtol=1e-12)
    closed = ledger.input_relevance + ledger.absorbed
    assert torch.allclose(closed, logit, rtol=1e-5, atol=0)
    assert ledger.bias_absorbed.abs().sum() > 0  # biases really take part
    assert ledger.closes(rtol=1e-9)


@pytest.mark.parametrize(
    "model_fn", [lambda: small_cnn(batchnorm=True), FunctionalNet], ids=["sequential-bn", "functional"]
)
def test_lrp0_equals_gradient_times_input(model_fn) -> None:
    model = model_fn().double().eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    assert_close_relative(result.relevance, gradient_x_input(model, x, result.target), 1e-12)


def test_lrp0_on_torchvision_resnet_equals_gradient_times_input() -> None:
    model = torchvision_model("resnet18").double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    assert_close_relative(result.relevance, gradient_x_input(model, x, result.target), 1e-10)


@pytest.mark.parametrize("name", TORCHVISION)
@pytest.mark.parametrize("composite", ["epsilon-gamma-box", "epsilon-plus-flat"])
def test_torchvision_architectures_explain(name: str, composite: str) -> None:
    model = torchvision_model(name)
    x = torch.randn(2, 3, 64, 64)
    result = relprop.explain(model, x, composite=composite)
    assert result.relevance.shape == x.shape
    assert torch.isfinite(result.relevance).all()
    assert result.ledger.closes(rtol=1e-4), result.ledger.table(top=5)
    assert result.relevance.abs().sum() > 0


def test_functional_model_explains_and_assigns_rules_to_functional_ops() -> None:
    model = FunctionalNet().eval()
    x = torch.randn(2, 3, 8, 8)
    explainer = relprop.Explainer(model, "epsilon-gamma-box")
    result = explainer(x)
    assert torch.isfinite(result.relevance).all() and result.ledger.closes(rtol=1e-4)
    kinds = {(op.kind, type(op.rule).__name__) for op in explainer.plan(x).ops if op.rule is not None}
    assert ("conv", "ZBoxRule") in kinds and ("conv", "GammaRule") in kinds
    assert ("add", "NormRule") in kinds  # the residual `h + r` gets the proportional rule
    assert ("relu", "PassRule") in kinds


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(2, 3, 8, 8, dtype=torch.float64),
        torch.full((2, 3, 8, 8), 1e6, dtype=torch.float64),
        -torch.full((2, 3, 8, 8), 1e6, dtype=torch.float64),
        torch.randn(2, 3, 8, 8, dtype=torch.float64) * 1e8,
    ],
    ids=["zeros", "huge-positive", "huge-negative", "huge-random"],
)
@pytest.mark.parametrize(
    "composite", ["lrp-0", "epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "alpha2-beta1", "gamma"]
)
def test_degenerate_inputs_give_finite_relevance(x: torch.Tensor, composite: str) -> None:
    model = small_cnn(batchnorm=True).double().eval()
    result = relprop.explain(model, x, composite=composite)
    assert torch.isfinite(result.relevance).all()
    assert torch.isfinite(result.ledger.absorbed).all()


def test_dead_network_gives_zero_relevance_not_nan() -> None:
    model = small_cnn(bias=True).double().eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # every first-layer unit is dead
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for composite in ("epsilon-gamma-box", "gamma", "alpha2-beta1", "lrp-0"):
        result = relprop.explain(model, x, composite=composite)
        assert torch.isfinite(result.relevance).all()
        assert result.relevance.abs().max() == 0


def test_explainer_reuses_plan_and_cached_weights_until_they_change() -> None:
    model = small_cnn(batchnorm=True).double().eval()
    explainer = relprop.Explainer(model, "epsilon-gamma-box")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    first = explainer(x)
    again = explainer(x)
    assert torch.equal(first.relevance, again.relevance)
    assert len(explainer._plans) == 1
    with torch.no_grad():
        model[4].weight.mul_(1.5)  # an in-place update, as an optimiser step would do
    changed = explainer(x)
    fresh = relprop.Explainer(model, "epsilon-gamma-box")(x)
    assert torch.equal(changed.relevance, fresh.relevance)
    assert not torch.equal(changed.relevance, first.relevance)


def test_batches_of_other_sizes_and_shapes_reuse_or_replan() -> None:
    model = FunctionalNet().double().eval()
    explainer = relprop.Explainer(model, "epsilon")
    a = explainer(torch.randn(5, 3, 8, 8, dtype=torch.float64))
    b = explainer(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert a.relevance.shape[0] == 5 and b.relevance.shape[0] == 1
    assert len(explainer._plans) == 1


def test_data_dependent_branch_is_replanned_on_the_batch() -> None:
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 3)
            self.b = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.sum() > 0 else torch.relu(self.b(x))

    model = Branchy().double().eval()
    x = torch.tensor([[1.0, 1, 1, 1], [-5.0, -5, -5, -5]], dtype=torch.float64)  # sample 0 takes branch a
    result = relprop.explain(model, x, composite="lrp-0")  # the batch takes branch b
    assert torch.isfinite(result.relevance).all() and result.ledger.closes(rtol=1e-9)


def test_inputs_follow_the_model_device() -> None:
    model = small_cnn().eval()
    x = torch.randn(2, 3, 8, 8)
    result = relprop.explain(model, x)
    assert result.relevance.device == next(model.parameters()).device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    model = torchvision_model("resnet18").double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    cpu = relprop.explain(model, x, composite="epsilon-gamma-box")
    gpu = relprop.explain(model.cuda(), x, composite="epsilon-gamma-box")
    assert gpu.relevance.is_cuda
    assert_close_relative(gpu.relevance.cpu(), cpu.relevance, 1e-9)
    model.cpu()


@pytest.mark.parametrize("composite", ["lrp-0", "epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "alpha2-beta1"])
@pytest.mark.parametrize("name", ["sequential-bn", "resnet18"])
def test_ledger_off_gives_the_same_relevance(composite: str, name: str) -> None:
    model = (small_cnn(batchnorm=True).eval() if name == "sequential-bn" else torchvision_model("resnet18")).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with_ledger = relprop.explain(model, x, composite=composite)
    without = relprop.explain(model, x, composite=composite, ledger=False)
    assert_close_relative(without.relevance, with_ledger.relevance, 1e-12)
    assert without.ledger.entries == []


class BufferNet(torch.nn.Module):
    """Weights held as buffers (as converted or quantised models do): no parameters at all."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w1", torch.randn(5, 3))
        self.register_buffer("w2", torch.randn(2, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, self.w1)), self.w2)


def test_inputs_follow_a_model_without_parameters_to_its_buffers_device() -> None:
    """A device test that can fail without a GPU: the "meta" device stands in for an accelerator.

    CPU inputs must be moved to the model's device, found from its buffers when it has no
    parameters; recording a plan runs the model, which fails if the inputs stay on the CPU.
    """
    model = BufferNet().to("meta").eval()
    x = torch.randn(2, 3)
    plan = relprop.Explainer(model, "epsilon").plan(x)
    assert [op.kind for op in plan.ops] == ["linear", "relu", "linear"]
    from relprop.methods import _common

    assert _common.prepare_inputs(model, x).device.type == "meta"
    cpu = BufferNet().eval()
    result = relprop.explain(cpu, x, composite="lrp-0")
    assert result.relevance.device.type == "cpu" and result.ledger.closes(rtol=1e-5)

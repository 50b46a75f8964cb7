"""LRP-ε's fused kernels (``Explainer(..., compile=True)``) against the eager rules.

The compiled factor is the same arithmetic as the eager one (``|y| / (|y| + ε)`` is
``y / stab(y)`` bit for bit), so relevance must agree to rounding in float64; the ledger sums
are the same sums in another order. Where no compiler works, the fallback must warn once and
give the eager values.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import relprop
from relprop.rules import kernels
from test_invariance import assert_unchanged, snapshot


class Block(nn.Module):
    """A residual block: conv → BN → ReLU → conv → BN, added to its input, then ReLU (ResNet's pattern)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + x)


def residual_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        Block(6),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 10),
        nn.ReLU(),
        nn.Linear(10, 4),
    )
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model.double().eval()


@pytest.fixture(autouse=True)
def fresh_kernels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The test models are small; below this size the kernels would run eagerly (see the last test).
    monkeypatch.setattr(kernels, "_MIN_VALUES", 0)
    kernels.reset()
    yield
    kernels.reset()


def _rows(explanation: relprop.Explanation) -> torch.Tensor:
    entries = explanation.ledger.entries
    return torch.stack([torch.stack([e.relevance_out, e.relevance_in]) for e in entries])


@pytest.mark.parametrize("ledger", [True, False])
def test_compiled_kernels_give_the_eager_relevance_and_ledger(ledger: bool) -> None:
    model = residual_net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    before = snapshot(model)
    eager = relprop.Explainer(model, "epsilon", epsilon=1e-3, ledger=ledger)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback here would hide the compiled path
        compiled = relprop.Explainer(model, "epsilon", epsilon=1e-3, ledger=ledger, compile=True)(x)
    assert kernels.compile_failure() is None
    torch.testing.assert_close(compiled.relevance, eager.relevance, rtol=1e-12, atol=1e-14)
    if ledger:
        assert len(compiled.ledger.entries) == len(eager.ledger.entries)
        torch.testing.assert_close(_rows(compiled), _rows(eager), rtol=1e-10, atol=1e-12)
        assert compiled.ledger.closes()
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("kernel", "composite"),
    [
        ("relu-booked", "epsilon"),  # a layer whose output only a ReLU reads
        ("signed-booked", "epsilon"),  # the top layer (outputs of both signs)
        ("signed-booked", "epsilon-gamma-box"),  # its dense layers use LRP-ε
    ],
)
def test_each_compiled_kernel_is_the_one_that_ran(kernel: str, composite: str) -> None:
    """A kernel that gives other values must show in the result (else the tests above prove nothing)."""
    model = residual_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    params = {"low": -3.0, "high": 3.0} if "box" in composite else {}
    eager = relprop.Explainer(model, composite, **params)(x)
    original = kernels._BODIES[kernel]

    def doubled(*args: object) -> object:
        result = original(*args)
        return (2 * result[0], *result[1:]) if isinstance(result, tuple) else 2 * result

    kernels._BODIES[kernel] = doubled
    try:
        kernels.reset()
        changed = relprop.Explainer(model, composite, compile=True, **params)(x)
    finally:
        kernels._BODIES[kernel] = original
    assert not torch.allclose(changed.relevance, eager.relevance)


def test_without_a_compiler_it_warns_once_and_computes_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(body: object) -> object:
        def fail(*args: object) -> object:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

        return fail

    monkeypatch.setattr(kernels, "_compile", no_compiler)
    model = residual_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    eager = relprop.Explainer(model, "epsilon", epsilon=1e-3)(x)
    explainer = relprop.Explainer(model, "epsilon", epsilon=1e-3, compile=True)
    with pytest.warns(RuntimeWarning) as caught:
        first = explainer(x)
    messages = [str(w.message) for w in caught if "fused kernels" in str(w.message)]
    assert messages == [
        "relprop could not compile its fused kernels (RuntimeError: InvalidCxxCompiler: No working C++ compiler "
        "found); it computes them eagerly instead (the same values, more slowly). Pass compile=False to silence this."
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        second = explainer(x)
    assert kernels.compile_failure() == "RuntimeError: InvalidCxxCompiler: No working C++ compiler found"
    for result in (first, second):
        torch.testing.assert_close(result.relevance, eager.relevance, rtol=0, atol=0)
        torch.testing.assert_close(_rows(result), _rows(eager), rtol=0, atol=0)


def test_compile_is_an_option_of_explain_and_checked() -> None:
    model = residual_net()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    eager = relprop.explain(model, x, method="lrp", composite="epsilon", epsilon=1e-3)
    compiled = relprop.explain(model, x, method="lrp", composite="epsilon", epsilon=1e-3, compile=True)
    torch.testing.assert_close(compiled.relevance, eager.relevance, rtol=1e-12, atol=1e-14)
    with pytest.raises(relprop.ConfigurationError, match="compile"):
        relprop.Explainer(model, "epsilon", compile="yes")


@pytest.mark.parametrize("composite", ["epsilon-gamma-box", "gamma"])
def test_composites_mixing_epsilon_with_other_rules_give_the_eager_relevance(composite: str) -> None:
    """The compiled ε kernels beside LRP-γ and z^B layers (which keep their eager arithmetic)."""
    model = residual_net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    params = {"low": -3.0, "high": 3.0} if "box" in composite else {}
    eager = relprop.Explainer(model, composite, **params)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        compiled = relprop.Explainer(model, composite, compile=True, **params)(x)
    torch.testing.assert_close(compiled.relevance, eager.relevance, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(_rows(compiled), _rows(eager), rtol=1e-10, atol=1e-12)
    assert compiled.ledger.closes()


def test_small_activations_run_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below ``_MIN_VALUES`` a compiled call costs more than it saves: the eager arithmetic runs."""
    monkeypatch.setattr(kernels, "_MIN_VALUES", 1 << 17)
    monkeypatch.setitem(kernels._BODIES, "relu-booked", lambda *args: pytest.fail("compiled kernel ran"))
    monkeypatch.setitem(kernels._BODIES, "signed-booked", lambda *args: pytest.fail("compiled kernel ran"))
    model = residual_net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    eager = relprop.Explainer(model, "epsilon")(x)
    compiled = relprop.Explainer(model, "epsilon", compile=True)(x)
    torch.testing.assert_close(compiled.relevance, eager.relevance, rtol=0, atol=0)

"""The kind registry: one declaration per kind, and a new kind added from outside with the public API.

The promise of the redesign: a new kind of operation touches at most two files (its declaration,
and a rule module if no existing rule fits), and a new rule for an existing kind touches one.
This test file *is* the second file: it declares a kind and a rule and explains a model with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import relprop
from relprop import kinds, match, rules
from relprop.rules.products import GradScale


class ExpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.fc2 = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.exp(self.fc1(x)))


@pytest.fixture
def exp_kind() -> Iterator[kinds.Kind]:
    """``torch.exp`` as an element-wise kind whose default is the pass-through rule."""
    kind = kinds.register(
        kinds.Kind(
            "exp",
            {torch.exp, torch.Tensor.exp},
            kinds.Signature(("input",)),
            groups=("elementwise",),
            default_rule="pass",
        )
    )
    yield kind
    kinds.KINDS.unregister("exp")


def test_unknown_operation_is_refused_before_the_kind_exists() -> None:
    with pytest.raises(relprop.UnsupportedOperationError, match=r"no rule for torch\.exp"):
        relprop.explain(ExpNet().double().eval(), torch.randn(2, 4, dtype=torch.float64), composite="lrp-0")


def test_a_registered_kind_gets_its_default_rule_and_group(exp_kind: kinds.Kind) -> None:
    model = ExpNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    explainer = relprop.Explainer(model, "lrp-0")
    plan = explainer.plan(x)
    (op,) = [op for op in plan.ops if op.kind == "exp"]
    assert type(op.rule).__name__ == "PassRule"  # the elementwise group's default
    assert "exp" in rules.PassRule.kinds and "exp" in rules.GradientRule.kinds
    assert match.kind("elementwise")(op.info)
    result = explainer(x)
    # pass-through on exp and LRP-0 on bias-free layers: the logit is conserved exactly
    torch.testing.assert_close(result.relevance.sum(1), result.score, rtol=1e-10, atol=1e-12)
    (row,) = [e for e in result.ledger.entries if e.rule == "pass"]
    torch.testing.assert_close(row.relevance_in, row.relevance_out, rtol=1e-10, atol=1e-12)


class HalfRule(rules.Rule):
    """A user-defined rule: the gradient of the operation, halved (it hands on half the relevance)."""

    applies_to = ("exp",)
    label = "half"

    def compute(self, call: Any) -> torch.Tensor:
        return GradScale.apply(call.native(), 0.5)


def test_a_user_rule_for_the_new_kind_gets_ledger_rows_without_extra_work(exp_kind: kinds.Kind) -> None:
    model = ExpNet().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0", rules=[(match.kind("exp"), HalfRule())])
    (row,) = [e for e in result.ledger.entries if e.rule == "half"]
    h = model.fc1(x)
    y = torch.exp(h)
    # the ledger row holds Σ y ⊙ g at the output and Σ h ⊙ g/2·exp(h) at the input
    g_out = model.fc2.weight[result.target]
    torch.testing.assert_close(row.relevance_out, (y * g_out).sum(1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(row.relevance_in, (h * 0.5 * y * g_out).sum(1), rtol=1e-10, atol=1e-12)
    assert result.ledger.closes(rtol=1e-10)


def test_kind_names_and_functions_are_unique() -> None:
    with pytest.raises(relprop.ConfigurationError, match="already registered"):
        kinds.register(kinds.Kind("conv"))
    with pytest.raises(relprop.ConfigurationError, match="already belongs to kind 'relu'"):
        kinds.register(kinds.Kind("my_relu", {torch.relu}))
    assert "my_relu" not in kinds.KINDS


def test_groups_expand_to_kinds() -> None:
    assert kinds.KINDS.expand(["layer"]) == {"conv", "conv_transpose", "linear"}
    assert kinds.KINDS.expand(["pool", "relu"]) == {"maxpool", "avgpool", "relu"}
    assert rules.LinearRule.kinds == {"conv", "conv_transpose", "linear"}
    assert rules.NormRule.kinds == {"add", "avgpool", "batchnorm"}
    assert "conv" not in rules.GradientRule.kinds and "softmax" in rules.GradientRule.kinds

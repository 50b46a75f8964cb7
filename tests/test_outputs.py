"""The output= selector: dict keys, tuple indices, attributes, dotted paths, callables; LRP and every method."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import relprop
from relprop.outputs import select_output
from relprop.targets import region

from dense_models import DataclassOut, TupleOut, tiny_segnet
from helpers import assert_close_relative


class OnlyOut(nn.Module):
    """The reference: the same model returning its "out" tensor alone."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)["out"]


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 8, 8, dtype=torch.float64)


def test_dict_key_explains_like_a_model_returning_that_tensor(x) -> None:
    model = tiny_segnet()
    target = region(box=(1, 1, 5, 6), channel=2)
    selected = relprop.explain(model, x, target=target, output="out", composite="epsilon")
    reference = relprop.explain(OnlyOut(model).eval(), x, target=target, composite="epsilon")
    assert torch.equal(selected.relevance, reference.relevance)
    assert torch.equal(selected.output, model(x)["out"].detach())
    assert selected.ledger.closes(rtol=1e-9)


def test_explainer_takes_output_and_keeps_the_model_paths(x) -> None:
    model = tiny_segnet()
    explainer = relprop.Explainer(model, "epsilon", output="aux")
    result = explainer(x, target=region(box=(0, 0, 4, 4), channel=0))
    assert torch.equal(result.output, model(x)["aux"].detach())
    table = explainer.rule_table(x)
    assert re.search(r"\benc1\b", table) and re.search(r"\baux\b", table)


def test_tuple_index_attribute_dotted_path_and_callable_agree(x) -> None:
    model = TupleOut().double().eval()
    target = region(box=(0, 0, 3, 3), channel=1, output_layout="channels_last")
    by_index = relprop.explain(model, x, target=target, output=0, composite="epsilon")
    by_digits = relprop.explain(model, x, target=target, output="0", composite="epsilon")
    by_callable = relprop.explain(model, x, target=target, output=lambda out: out[0], composite="epsilon")
    assert torch.equal(by_index.relevance, by_digits.relevance)
    assert torch.equal(by_index.relevance, by_callable.relevance)
    features = relprop.explain(model, x, target=1, output=1, composite="epsilon")
    assert torch.equal(features.output, model(x)[1].detach())

    wrapped = DataclassOut().double().eval()
    by_attribute = relprop.explain(wrapped, x, target=region(box=(0, 0, 2, 2)), output="scores", composite="epsilon")
    assert by_attribute.ledger.closes(rtol=1e-9)
    nested = {"a": (torch.zeros(1), torch.ones(2))}
    assert torch.equal(select_output(nested, "a.1"), torch.ones(2))


@pytest.mark.parametrize(
    "method",
    ["gradient", "smoothgrad", "integrated-gradients", "guided-backprop", "occlusion", "deeplift", "deep-taylor"],
)
def test_every_method_takes_output(x, method) -> None:
    model = tiny_segnet()
    target = region(box=(1, 1, 5, 6), channel=2)
    params = {"seed": 0} if method == "smoothgrad" else {}
    selected = relprop.explain(model, x, target=target, method=method, output="out", **params)
    reference = relprop.explain(OnlyOut(model).eval(), x, target=target, method=method, **params)
    assert_close_relative(selected.relevance, reference.relevance, 1e-12)
    assert torch.equal(selected.score, reference.score)


def _snapshot(model: nn.Module) -> tuple[dict, dict]:
    modules = {
        name: (sorted(m.__dict__), dict(m._forward_hooks), dict(m._forward_pre_hooks), m.training)
        for name, m in model.named_modules()
    }
    return modules, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_model_is_unchanged(x) -> None:
    model = tiny_segnet()
    modules, state = _snapshot(model)
    relprop.explain(model, x, target=region(box=(0, 0, 2, 2)), output="out")
    relprop.explain(model, x, target=region(box=(0, 0, 2, 2)), output="out", method="deeplift")
    after_modules, after_state = _snapshot(model)
    assert after_modules == modules
    assert all(torch.equal(value, after_state[key]) for key, value in state.items())


def _message(model: nn.Module, x: torch.Tensor, **params) -> str:
    with pytest.raises(relprop.ConfigurationError) as info:
        relprop.explain(model, x[:1], **params)
    return str(info.value)


def test_errors_describe_the_output_and_how_to_select(x) -> None:
    model = tiny_segnet()
    assert _message(model, x) == (
        "the model returned a dict with keys 'out' (1, 4, 8, 8), 'aux' (1, 4, 8, 8); choose the tensor to explain "
        "with output='out' (a key, an index, an attribute or a callable)."
    )
    assert _message(model, x, output="logits") == (
        "output 'logits': the model output has no key 'logits'; its keys are 'out', 'aux'."
    )
    pair = TupleOut().double().eval()
    assert _message(pair, x) == (
        "the model returned a tuple of 2 ([0] (1, 8, 8, 2), [1] (1, 2)); choose the tensor to explain with output=0 "
        "(a key, an index, an attribute or a callable)."
    )
    assert _message(pair, x, output=2) == (
        "output 2: index 2 is out of range for a tuple of 2 ([0] (1, 8, 8, 2), [1] (1, 2)); valid indices are 0..1."
    )
    wrapped = DataclassOut().double().eval()
    assert _message(wrapped, x, output="extra") == (
        "output 'extra' selects a NoneType from the model output, not a tensor; select a tensor of scores."
    )
    assert _message(wrapped, x, output="missing") == (
        "output 'missing': cannot take 'missing' from a dataclass DenseResult with fields scores (1, 4, 8, 8), "
        "extra (NoneType)."
    )
    assert _message(model, x, output=1.5) == (
        "output must be a key or attribute name (str), an index (int) or a callable, got 1.5."
    )
    assert _message(model, x, output="out..0") == (
        "output 'out..0' is not a key, attribute or dotted path such as 'out' or 'aux.0'."
    )
    assert _message(model, x, method="gradient", output=[0]).startswith("output must be a key or attribute name")

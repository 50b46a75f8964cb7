"""One table of parameter ranges, checked wherever rules, composites and methods receive parameters.

Beyond the examples of issue 17 the tests sweep every parameter of every named composite, every
method and every registered rule that the table knows: each non-finite, out-of-range or string
value is refused with the same one sentence, naming the owner, the parameter, the range and the
value — before any model runs.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import pytest
import torch

import relprop
from relprop import composites, methods, params, rules
from relprop.params import RANGES, Choice, Flag, Number, Values

from models import small_cnn


def bad_values(spec: params.Spec) -> list[Any]:
    """Values ``spec`` must refuse."""
    if isinstance(spec, Number):
        values: list[Any] = [math.nan, math.inf, -math.inf, "1", [1.0]]
        if spec.minimum is not None:
            values.append(spec.minimum - 1)
            if spec.above_minimum:
                values.append(spec.minimum)
        if spec.maximum is not None:
            values.append(spec.maximum + 1)
        if spec.integer:
            values.append(2.5)
        return values
    if isinstance(spec, Values):
        return [math.nan, -math.inf, torch.tensor([0.0, math.nan]), [1.0, math.inf], [[1.0], [2.0, 3.0]], True]
    if isinstance(spec, Flag):
        return ["yes", 1, None]
    assert isinstance(spec, Choice)
    return ["other", None]


def shown(value: Any) -> str:
    """How the message shows a refused value."""
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, torch.Tensor):
        return "a tensor with nan at (1,)"
    if value == [1.0, math.inf]:
        return "a sequence with inf at (1,)"
    if isinstance(value, float):
        return repr(value)
    return repr(value)


def sweep(names: list[str]) -> list[tuple[str, Any]]:
    return [(name, value) for name in names if name in RANGES for value in bad_values(RANGES[name])]


COMPOSITE_CASES = [
    (composite, name, value) for composite, _, names in composites.describe() for name, value in sweep(list(names))
]


@pytest.mark.parametrize(("composite", "name", "value"), COMPOSITE_CASES)
def test_every_composite_parameter_is_checked(composite: str, name: str, value: Any) -> None:
    spec = RANGES[name]
    ranges = composites._REGISTRY[composite].ranges
    spec = ranges.get(name, spec)
    if spec.problem(value) is None:
        pytest.skip(f"{value!r} is in this composite's own range for {name}")
    expected = f"composite '{composite}': {name} must be {spec.describe()}, got {shown(value)}"
    with pytest.raises(relprop.ConfigurationError) as info:
        composites.get(composite, **{name: value})
    assert str(info.value).startswith(expected)


METHOD_CASES = [
    (method, name, value) for method in methods.names()[1:] for name, value in sweep(list(methods.parameters(method)))
]


@pytest.mark.parametrize(("method", "name", "value"), METHOD_CASES)
def test_every_method_parameter_is_checked_before_the_model_runs(method: str, name: str, value: Any) -> None:
    calls = []
    model = small_cnn().eval()
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    expected = f"method '{method}': {name} must be {RANGES[name].describe()}, got {shown(value)}"
    with pytest.raises(relprop.ConfigurationError) as info:
        relprop.explain(model, torch.rand(1, 3, 8, 8), method=method, **{name: value})
    assert str(info.value).startswith(expected)
    assert calls == []


#: Arguments without defaults of registered rules.
REQUIRED: dict[str, dict[str, Any]] = {"modified-weight": {"weight_fn": lambda w: w}}
RULE_CASES = [
    (label, name, value)
    for label in rules.names()
    for name, value in sweep([p for p in inspect.signature(rules.get(label).__init__).parameters if p != "self"])
]


@pytest.mark.parametrize(("label", "name", "value"), RULE_CASES)
def test_every_rule_parameter_is_checked(label: str, name: str, value: Any) -> None:
    cls = rules.get(label)
    spec = {**RANGES, **rules.base._ranges_of(cls)}[name]
    if spec.problem(value) is None:
        pytest.skip(f"{value!r} is in {cls.__name__}'s own range for {name}")
    with pytest.raises(relprop.ConfigurationError) as info:
        cls(**REQUIRED.get(label, {}), **{name: value})
    assert str(info.value).startswith(f"{cls.__name__}: {name} must be {spec.describe()}, got {shown(value)}")


ISSUE_EXAMPLES: list[tuple[dict[str, Any], str]] = [
    ({"gamma": math.inf}, "composite 'epsilon-gamma-box': gamma must be a finite number >= 0, got inf."),
    (
        {"low": math.nan},
        "composite 'epsilon-gamma-box': low must be a finite number or a tensor (or list) of finite values, got nan.",
    ),
    (
        {"epsilon": "0.1"},
        "composite 'epsilon-gamma-box': epsilon must be a finite number >= 0, got '0.1' (a string); pass the "
        "number 0.1, not a string.",
    ),
    (
        {"low": 3.0, "high": -3.0},
        "composite 'epsilon-gamma-box': low must not exceed high, got low=3 > high=-3; give the lower bound as low "
        "and the upper one as high.",
    ),
    ({"composite": "gamma", "stabilizer": 0.0}, "composite 'gamma': stabilizer must be a finite number > 0, got 0.0."),
    (
        {"composite": "alpha-beta", "alpha": math.nan},
        "composite 'alpha-beta': alpha must be a finite number >= 0, got nan.",
    ),
    (
        {"composite": "alpha-beta", "beta": math.inf, "alpha": math.inf},
        "composite 'alpha-beta': alpha must be a finite number >= 0, got inf.",
    ),
    (
        {"composite": "alpha-beta", "alpha": 3.0},
        "composite 'alpha-beta': the alpha-beta rule needs alpha = beta + 1 to conserve relevance, got alpha=3.0, "
        "beta=1.0; set alpha=2.0.",
    ),
    (
        {"method": "integrated-gradients", "baseline": math.nan},
        "method 'integrated-gradients': baseline must be a finite number or a tensor (or list) of finite values, "
        "got nan.",
    ),
    ({"method": "smoothgrad", "sigma": math.inf}, "method 'smoothgrad': sigma must be a finite number >= 0, got inf."),
    (
        {"method": "occlusion", "value": math.nan},
        "method 'occlusion': value must be a finite number or a tensor (or list) of finite values, got nan.",
    ),
    ({"ledger": "no"}, "Explainer: ledger must be True or False, got 'no' (a string)."),
]


@pytest.mark.parametrize(("options", "message"), ISSUE_EXAMPLES)
def test_the_issue_examples_get_their_sentences(options: dict[str, Any], message: str) -> None:
    with pytest.raises(relprop.ConfigurationError) as info:
        relprop.explain(small_cnn().eval(), torch.rand(1, 3, 8, 8), **options)
    assert str(info.value) == message


def test_tensor_bounds_are_checked_per_value() -> None:
    low = torch.tensor([0.0, 0.5, -1.0])
    high = torch.tensor([1.0, 0.2, 1.0])
    message = r"^ZBoxRule: low must not exceed high, got low=0.5 > high=0.2 at \(1,\); give the lower bound"
    with pytest.raises(relprop.ConfigurationError, match=message):
        rules.ZBoxRule(low, high)
    message = (
        r"^ZBoxRule: high must be a finite number or a tensor \(or list\) of finite values, got a tensor with inf at "
        r"\(2,\).$"
    )
    with pytest.raises(relprop.ConfigurationError, match=message):
        rules.ZBoxRule(low, torch.tensor([1.0, 1.0, math.inf]))
    rules.ZBoxRule([0.0, 0.1, 0.2], [1.0, 1.0, 1.0])  # lists of numbers are bounds too
    rules.ZBoxRule(torch.zeros(3, 1, 1), torch.ones(3))  # shapes that broadcast are compared; these fit


def test_zero_stabilizers_are_accepted_where_they_are_safe_and_give_finite_relevance() -> None:
    model = small_cnn().eval()
    x = torch.rand(2, 3, 8, 8)
    for name in ("lrp-0", "epsilon"):
        result = relprop.explain(model, x, composite=name, stabilizer=0.0)
        assert bool(torch.isfinite(result.relevance).all())
    rules.NormRule(stabilizer=0.0)
    rules.PassRule(stabilizer=0.0)
    relprop.Composite([], stabilizer=0.0)
    for strict in (rules.GammaRule, rules.AlphaBetaRule, rules.ZBoxRule, rules.ProportionalMaxPoolRule):
        with pytest.raises(
            relprop.ConfigurationError, match=rf"^{strict.__name__}: stabilizer must be a finite number > 0"
        ):
            strict(stabilizer=0.0)


def test_defaults_and_valid_values_pass() -> None:
    for composite in composites.names():
        composites.get(composite)
    for label in rules.names():
        rules.get(label)(**REQUIRED.get(label, {}))
    params.check("test", {"epsilon": 0, "gamma": 1, "n": 3, "seed": None, "low": torch.zeros(2), "bias": True})

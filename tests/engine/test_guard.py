"""What every explanation checks first and last, for LRP and every method alike (issue 17 items 2-4).

Before any forward pass: the model's mode, device and tensors, and the inputs (type, dtype, NaN).
After: no NaN or Inf is handed out as a result. In between: the model's torch errors on inputs it
cannot take become one sentence, and a model that changes its input in place never changes the
caller's tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop
from relprop.engine import guard
from relprop.explanation import Explanation
from relprop.ledger import Ledger
from test_invariance import assert_unchanged, snapshot

from models import randomize_batchnorm, small_cnn

CHEAP: dict[str, dict[str, Any]] = {
    "lrp": {},
    "gradient": {},
    "gradient-x-input": {},
    "smoothgrad": {"n": 2, "seed": 0},
    "integrated-gradients": {"steps": 2},
    "guided-backprop": {},
    "deconvnet": {},
    "occlusion": {"patch": 4},
    "deeplift": {},
    "deep-taylor": {},
}
METHODS = sorted(CHEAP)


def explain(method: str, model: nn.Module, x: Any, target: Any = 1, **options: Any) -> Explanation:
    return relprop.explain(model, x, target, method=method, **CHEAP[method], **options)


def cnn() -> nn.Sequential:
    return randomize_batchnorm(small_cnn(batchnorm=True)).eval()


def inputs(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8)


# -- the model's mode: refused before any forward pass ------------------------------------------------
BATCHNORM_IN_TRAINING = (
    r"^batch norm at '1' \(BatchNorm2d\) normalises with batch statistics \(training mode or no running "
    r"statistics\); call model.eval\(\) before explaining.$"
)


@pytest.mark.parametrize("method", METHODS)
def test_a_call_refused_for_training_mode_leaves_batch_norm_statistics_alone(method: str) -> None:
    model = cnn().train()
    before = snapshot(model)
    with pytest.raises(relprop.ModelStateError, match=BATCHNORM_IN_TRAINING):
        explain(method, model, inputs())
    assert_unchanged(model, before)  # num_batches_tracked and the running statistics included
    assert int(model[1].num_batches_tracked) == 0


def test_a_warm_explainer_refuses_a_model_switched_to_training_without_running_it() -> None:
    model = cnn()
    explainer = relprop.Explainer(model, "epsilon-gamma-box", low=0.0, high=1.0)
    explainer(inputs())
    model.train()
    before = snapshot(model)
    with pytest.raises(relprop.ModelStateError, match=BATCHNORM_IN_TRAINING):
        explainer(inputs())
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (nn.Dropout(0.5), r"^dropout at 'extra' \(Dropout\) is active \(training mode\); call model.eval\(\)"),
        (
            nn.InstanceNorm2d(3, track_running_stats=True),
            r"^instance norm at 'extra' \(InstanceNorm2d\) updates its running statistics \(training mode\)",
        ),
        (
            nn.LSTM(4, 4, num_layers=2, dropout=0.3),
            r"^dropout at 'extra' \(LSTM\) is active \(training mode, dropout=0.3\)",
        ),
    ],
)
def test_other_modules_that_change_or_randomise_in_training_are_refused(module: nn.Module, message: str) -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    model.add_module("extra", module)  # never reached: the check comes before the forward pass
    model.train()
    with pytest.raises(relprop.ModelStateError, match=message):
        relprop.explain(model, torch.randn(2, 4))
    with pytest.raises(relprop.ModelStateError, match=message):
        relprop.explain(model, torch.randn(2, 4), method="gradient")


class FunctionalDropout(nn.Module):
    """Dropout written as a function call: no dropout module tells the model's mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(x, 0.5, training=self.training))


def test_functional_dropout_switched_on_after_the_plan_is_refused_when_replayed() -> None:
    model = FunctionalDropout().eval()
    explainer = relprop.Explainer(model, "epsilon")
    explainer(torch.randn(2, 4))
    model.train()
    with pytest.raises(relprop.ModelStateError, match=r"^dropout at '\(model\)' \(FunctionalDropout\) is active"):
        explainer(torch.randn(2, 4))


# -- the inputs --------------------------------------------------------------------------------------
NAN_INPUT = (
    r"^the inputs hold nan at \(1, 0, 2, 3\) \(and 1 more\); replace NaN and Inf \(e.g. with torch.nan_to_num\) or "
    r"pass nonfinite='report' to explain them anyway.$"
)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_inputs_are_refused_with_the_first_position(method: str) -> None:
    model = cnn()
    x = inputs()
    x[1, 0, 2, 3] = math.nan
    x[1, 2, 7, 7] = -math.inf
    before = snapshot(model)
    with pytest.raises(relprop.NonFiniteError, match=NAN_INPUT):
        explain(method, model, x)
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_inputs_are_explained_and_reported_on_request(method: str) -> None:
    model = cnn()
    x = inputs(3)
    x[1, 0, 2, 3] = math.inf
    result = explain(method, model, x, nonfinite="report")
    assert sorted(result.info["nonfinite"]) == [1]
    assert result.info["nonfinite"][1].startswith("the model's output is ")
    finite = [0, 2]
    assert bool(torch.isfinite(result.relevance[finite]).all()) and bool(torch.isfinite(result.output[finite]).all())
    if method in ("lrp", "gradient", "gradient-x-input", "guided-backprop", "deconvnet", "deep-taylor"):
        alone = explain(method, model, x[finite])  # samples do not mix
        torch.testing.assert_close(result.relevance[finite], alone.relevance, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_a_nan_weight_is_an_error_that_names_the_parameter(method: str) -> None:
    model = cnn()
    with torch.no_grad():
        model[8].weight[5, 7] = math.nan
    message = (
        r"^sample 0: no explanation, because the model's output is nan at \(0,\) \(and 9 more\); check the model's "
        r"weights and how the input is preprocessed \(parameter '8.weight' is nan at \(5, 7\)\) \(and 1 more sample\).$"
    )
    with pytest.raises(relprop.NonFiniteError, match=message):
        explain(method, model, inputs())


class _BlowUp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: torch.Tensor) -> torch.Tensor:
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * math.inf


class BlowUpRule(relprop.rules.Rule):
    """A rule gone wrong: its backward step makes the relevance infinite."""

    applies_to = ("relu",)
    label = "blow-up"

    def compute(self, call: Any) -> torch.Tensor:
        return _BlowUp.apply(call.native())  # type: ignore[no-any-return]


def test_infinite_relevance_from_a_finite_model_is_never_a_success() -> None:
    model = cnn()
    explainer = relprop.Explainer(model, "epsilon", rules=[(relprop.match.path("9"), BlowUpRule())])
    message = (
        r"^sample 0: no explanation, because the relevance is .* although the model's output is finite; choose other "
        r"parameters for the method \(e.g. a larger ε\)"
    )
    with pytest.raises(relprop.NonFiniteError, match=message):
        explainer(inputs(), target=1)
    reported = explainer(inputs(), target=1, nonfinite="report")
    assert sorted(reported.info["nonfinite"]) == [0, 1] and not bool(torch.isfinite(reported.relevance).all())


def test_non_finite_inner_layer_relevance_is_refused() -> None:
    relevance, output = torch.ones(2, 4), torch.ones(2, 3)
    layer = torch.ones(2, 5)
    layer[1, 3] = math.nan
    result = Explanation(relevance, output, torch.zeros(2, dtype=torch.long), Ledger(torch.ones(2), torch.ones(2)))
    result.layers["features.3"] = layer
    with pytest.raises(relprop.NonFiniteError, match=r"^sample 1: no explanation, because the relevance at layer "
                       r"'features.3' is nan at \(3,\) although the model's output is finite"):  # fmt: skip
        guard.finish(result, "raise", nn.Linear(4, 3))
    assert guard.finish(result, "report", nn.Linear(4, 3)).info["nonfinite"].keys() == {1}


def test_nonfinite_takes_raise_or_report_only() -> None:
    with pytest.raises(relprop.ConfigurationError, match=r"^Explainer: nonfinite must be one of 'raise', 'report', "):
        relprop.Explainer(cnn(), nonfinite="ignore")
    with pytest.raises(relprop.ConfigurationError, match=r"^nonfinite must be one of 'raise', 'report', got 'warn'.$"):
        relprop.explain(cnn(), inputs(), method="gradient", nonfinite="warn")


# -- dtypes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_inputs_of_another_float_dtype_are_converted_with_a_note(method: str, dtype: torch.dtype) -> None:
    model = cnn()
    x = inputs().to(dtype)
    note = (
        rf"^inputs of dtype {dtype} were converted to torch.float32, the dtype of the model's parameters, and the "
        r"relevance is computed in torch.float32; convert the inputs yourself to silence this note.$"
    )
    with pytest.warns(relprop.RelpropWarning, match=note):
        converted = explain(method, model, x)
    expected = explain(method, model, x.float())
    assert converted.relevance.dtype == torch.float32
    assert torch.equal(converted.relevance, expected.relevance)


def test_float32_inputs_follow_a_float64_model_and_overflow_is_refused() -> None:
    model = cnn().double()
    x = inputs()
    with pytest.warns(relprop.RelpropWarning, match="converted to torch.float64"):
        result = relprop.explain(model, x)
    assert result.relevance.dtype == torch.float64
    assert torch.equal(result.relevance, relprop.explain(model, x.double()).relevance)
    big = inputs().double()
    big[0, 1, 2, 3] = 1e39  # finite in float64, inf in float32
    with pytest.warns(relprop.RelpropWarning), pytest.raises(relprop.NonFiniteError, match=(
        r"^the inputs hold inf at \(0, 1, 2, 3\) once converted to torch.float32; replace NaN and Inf"
    )):  # fmt: skip
        relprop.explain(cnn(), big)


# -- shapes ------------------------------------------------------------------------------------------
def dense_first() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()


def conv_then_dense() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


@pytest.mark.parametrize(
    ("make", "shape", "message"),
    [
        (
            cnn,
            (2, 1, 8, 8),
            r"^inputs of shape \(2, 1, 8, 8\) do not fit the model: its first layer '0' \(Conv2d\) takes "
            r"\(N, 3, H, W\) \(torch says: Given groups=1, weight of size \[8, 3, 3, 3\], expected input",
        ),
        (
            cnn,
            (3, 8, 8),
            r"^inputs of shape \(3, 8, 8\) do not fit the model: its first layer '0' \(Conv2d\) takes \(N, 3, H, W\) "
            r"\(torch says: ",
        ),
        (
            dense_first,
            (2, 5),
            r"^inputs of shape \(2, 5\) do not fit the model: its first layer '0' \(Linear\) takes 6 features in the "
            r"last dimension \(torch says: mat1 and mat2 shapes cannot be multiplied \(1x5 and 6x4\)\).$",
        ),
        (
            conv_then_dense,
            (2, 1, 9, 9),
            r"^the model failed on inputs of shape \(2, 1, 9, 9\) \(mat1 and mat2 shapes cannot be multiplied "
            r"\(1x196 and 144x3\)\); check that the inputs have the shape and dtype the model was made for.$",
        ),
    ],
)
@pytest.mark.parametrize("method", ["lrp", "gradient", "occlusion", "deeplift"])
def test_inputs_the_model_cannot_take_get_one_sentence(
    method: str, make: Callable[[], nn.Module], shape: tuple[int, ...], message: str
) -> None:
    model = make()
    before = snapshot(model)
    with pytest.raises(relprop.InputError, match=message.replace("1x5 and", "[12]x5 and").replace("1x196", "[12]x196")):
        explain(method, model, torch.rand(shape), target=0)
    assert_unchanged(model, before)


def test_a_shape_that_worked_before_is_named() -> None:
    explainer = relprop.Explainer(conv_then_dense(), "epsilon")
    explainer(torch.rand(2, 1, 8, 8))
    with pytest.raises(relprop.InputError, match=r"\(1x196 and 144x3\)\); inputs of shape \(N, 1, 8, 8\) worked "
                       r"before; check that the inputs have the shape and dtype the model was made for.$"):  # fmt: skip
        explainer(torch.rand(2, 1, 9, 9))


# -- targets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (2**63, relprop.TargetError, r"^target 9223372036854775808 is out of range for a model with 10 outputs"),
        (-(2**70), relprop.TargetError, r"^target -1180591620717411303424 is out of range for a model with 10 "),
        ([0, 2**64], relprop.TargetError, r"^target 18446744073709551616 is out of range .* valid classes are 0..9.$"),
        ([[0], [1]], relprop.TargetError, r"^target must be one class index or a flat list of one index per sample, "),
        (torch.tensor([[0], [1]]), relprop.TargetError, r"^target indices must be one index or a flat list of one "),
        ("3", relprop.TargetError, r"^target must be None, a class index, a list of class indices or a tensor, got "),
    ],
)
@pytest.mark.parametrize("method", ["lrp", "gradient", "integrated-gradients"])
def test_unusable_targets_get_one_sentence(method: str, target: Any, error: type, message: str) -> None:
    model = cnn()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        explain(method, model, inputs(), target=target)
    assert_unchanged(model, before)


def test_non_finite_initial_relevance_is_refused() -> None:
    target = torch.zeros(2, 10)
    target[1, 4] = math.nan
    message = (
        r"^the initial-relevance target holds nan at \(1, 4\); pass finite values \(it is the relevance the "
        r"explanation starts from\).$"
    )
    for method in ("lrp", "gradient"):
        with pytest.raises(relprop.TargetError, match=message):
            explain(method, cnn(), inputs(), target=target)


# -- autograd, devices, the model's own tensors ---------------------------------------------------
INFERENCE_MODE = (
    r"^torch.inference_mode\(\) is active, which turns autograd off for good; call relprop outside it "
    r"\(torch.no_grad\(\) around the call is fine: relprop turns gradients on where it needs them\).$"
)


@pytest.mark.parametrize("method", METHODS)
def test_inference_mode_is_refused_and_no_grad_is_fine(method: str) -> None:
    model, x = cnn(), inputs()
    with torch.inference_mode(), pytest.raises(relprop.ConfigurationError, match=INFERENCE_MODE):
        explain(method, model, x)
    with torch.no_grad():
        quiet = explain(method, model, x)
    assert torch.equal(quiet.relevance, explain(method, model, x).relevance)


def test_inference_tensors_as_inputs_work_and_in_the_model_are_named() -> None:
    model = cnn()
    with torch.inference_mode():
        x = inputs()
        frozen = nn.Linear(4, 3)
    assert torch.equal(relprop.explain(model, x).relevance, relprop.explain(model, x.clone()).relevance)
    message = r"^tensor 'weight' of the model was made under torch.inference_mode\(\), so autograd cannot use it"
    with pytest.raises(relprop.ModelStateError, match=message):
        relprop.explain(frozen, torch.randn(2, 4))


def test_a_model_on_the_meta_device_is_refused_by_every_method() -> None:
    model = cnn().to("meta")
    for method in METHODS:
        with pytest.raises(relprop.ModelStateError, match=r"^tensor '0.weight' of the model is on the meta device"):
            explain(method, model, inputs())


# -- models that change their input in place -------------------------------------------------------
class DoublesInPlace(nn.Module):
    """Doubles its input in place; ``use_result`` says whether it reads the result or the changed tensor."""

    def __init__(self, use_result: bool) -> None:
        super().__init__()
        self.use_result = use_result
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_result:
            x = x.mul_(2.0)
        else:
            x.mul_(2.0)
        return self.net(x)  # type: ignore[no-any-return]


class DoublesOutOfPlace(DoublesInPlace):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0)  # type: ignore[no-any-return]


TRACED = ("lrp", "guided-backprop", "deconvnet", "deeplift", "deep-taylor")


@pytest.mark.parametrize("use_result", [True, False])
@pytest.mark.parametrize("method", METHODS)
def test_a_model_that_changes_its_input_never_changes_the_callers_tensor(method: str, use_result: bool) -> None:
    model = DoublesInPlace(use_result).eval()
    twin = DoublesOutOfPlace(use_result).eval()
    twin.load_state_dict(model.state_dict())
    x = inputs()
    kept = x.clone()
    if method in TRACED and not use_result:
        # The engine runs in-place operations out of place, so a model that reads the changed tensor is refused.
        message = (
            r"^the model changes its input in place and then reads it \(torch.nn.functional.conv2d in module "
            r"'net.0'\); relprop runs in-place operations out of place \(it never changes your inputs\), so use the "
        )
        with pytest.raises(relprop.UnsupportedOperationError, match=message):
            explain(method, model, x)
    else:
        torch.testing.assert_close(explain(method, model, x).relevance, explain(method, twin, x).relevance)
    assert torch.equal(x, kept)


# -- refused calls leave the model as it was -------------------------------------------------------
def test_rules_must_be_a_list_of_pairs() -> None:
    model = cnn()
    pair = ("0", relprop.rules.FlatRule())
    cases: list[tuple[Any, str]] = [
        ({"0": relprop.rules.FlatRule()}, r"^rules must be a list of \(matcher, rule\) pairs, got a dict; pass "),
        (pair, r"^rules must be a list of \(matcher, rule\) pairs, got one pair .* not in a list; wrap it: rules=\["),
        (relprop.rules.FlatRule(), r"^rules must be a list of \(matcher, rule\) pairs, got FlatRule\(\); write "),
        ("0", r"^rules must be a list of \(matcher, rule\) pairs, got '0'; write rules="),
        ([pair, "0"], r"^rules must be a list of \(matcher, rule\) pairs, but holds '0'; write each entry as"),
    ]
    for rules, message in cases:
        with pytest.raises(relprop.ConfigurationError, match=message):
            relprop.explain(model, inputs(), rules=rules)
    assert relprop.explain(model, inputs(), rules=(pair,)).ledger.closes(rtol=1e-4)  # a tuple of pairs is fine

"""Reference-aware LRP (relprop.reference): equalities, conservation of f(x) − f(x̄), edge cases, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import relprop
from relprop.errors import ConfigurationError
from relprop.evaluate import EvaluationData, EvaluationSettings, evaluate_methods
from relprop.metrics import conservation_error

IMAGE_COMPOSITES = ["lrp-0", "epsilon", "gamma", "alpha2-beta1", "epsilon-gamma-box", "epsilon-plus-flat", "montavon"]


def cnn(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, bias=bias),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 2 * 2, 5, bias=bias),
        )
        .double()
        .eval()
    )


def images(n: int = 4, seed: int = 1) -> Tensor:
    torch.manual_seed(seed)
    return torch.rand(n, 1, 10, 10, dtype=torch.float64)


def scores(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


def test_zero_reference_bias_free_relu_net_lrp0_is_gradient_times_input() -> None:
    model, x = cnn(bias=False), images()
    lrp = relprop.explain(model, x, composite="lrp-0", reference="zeros")
    gxi = relprop.explain(model, x, method="gradient-x-input")
    torch.testing.assert_close(lrp.relevance, gxi.relevance, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [False, True])
def test_epsilon_rule_on_differences_is_deeplift_rescale(bias: bool) -> None:
    """Ancona et al. 2018: ε-LRP (ε → 0) equals DeepLIFT-Rescale for ReLU nets with a zero reference and no
    biases; on differences the equality holds for any reference and with biases."""
    model, x = cnn(bias=bias), images()
    reference = torch.zeros_like(x) if not bias else images(4, seed=7) * 0.5
    lrp = relprop.explain(model, x, composite="epsilon", epsilon=0.0, reference=reference)
    dl = relprop.explain(model, x, method="deeplift", reference=reference, rule="rescale")
    torch.testing.assert_close(lrp.relevance, dl.relevance, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(lrp.score, dl.score)


@pytest.mark.parametrize("composite", IMAGE_COMPOSITES)
@pytest.mark.parametrize("reference", ["zeros", "blur", "tensor"])
def test_conservation_of_the_difference_and_a_closing_ledger(composite: str, reference: str) -> None:
    model, x = cnn(), images()
    ref: str | Tensor = images(1, seed=9)[0] * 0.3 if reference == "tensor" else reference
    extra = {"low": 0.0, "high": 1.0} if composite == "epsilon-gamma-box" else {}
    result = relprop.explain(model, x, composite=composite, reference=ref, **extra)
    x_ref = result.info["reference"]
    expected_score = scores(model, x, result.target) - scores(model, x_ref, result.target)
    torch.testing.assert_close(result.score, expected_score)
    assert result.ledger.closes(rtol=1e-8)
    total = result.relevance.sum((1, 2, 3))
    torch.testing.assert_close(total, result.score - result.ledger.absorbed, rtol=1e-8, atol=1e-10)
    if composite == "lrp-0":  # no stabiliser: all of f(x) − f(x̄), the biases cancel
        torch.testing.assert_close(total, expected_score, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("composite", IMAGE_COMPOSITES)
def test_reference_equal_to_the_input_gives_zero_relevance(composite: str) -> None:
    model, x = cnn(), images()
    result = relprop.explain(model, x, composite=composite, reference=x.clone())
    assert torch.isfinite(result.relevance).all()
    assert torch.equal(result.relevance, torch.zeros_like(x))
    assert torch.equal(result.score, torch.zeros(len(x), dtype=x.dtype))


def test_mean_reference_averages_the_data_sample() -> None:
    model, x, data = cnn(), images(), images(20, seed=3)
    by_name = relprop.explain(model, x, composite="epsilon-gamma-box", reference="mean", data=data)
    by_tensor = relprop.explain(model, x, composite="epsilon-gamma-box", reference=data.mean(0))
    torch.testing.assert_close(by_name.relevance, by_tensor.relevance)


def test_model_is_left_unchanged() -> None:
    model, x = cnn(), images()
    before = copy.deepcopy(model.state_dict())
    hooks = (len(model._forward_hooks), len(model[0]._forward_hooks))
    relprop.explain(model, x, composite="epsilon-gamma-box", reference="blur")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (len(model._forward_hooks), len(model[0]._forward_hooks)) == hooks


def test_plain_lrp_when_reference_is_none() -> None:
    model, x = cnn(), images()
    plain = relprop.explain(model, x, composite="epsilon-gamma-box")
    none = relprop.explain(model, x, composite="epsilon-gamma-box", reference=None)
    torch.testing.assert_close(plain.relevance, none.relevance)


@pytest.mark.parametrize(
    ("reference", "kwargs", "message"),
    [
        (
            torch.zeros(3, 3),
            {},
            "reference has shape (3, 3), which does not fit inputs of shape (4, 1, 10, 10); pass a tensor shaped "
            "like the inputs or like one sample.",
        ),
        (
            "mean",
            {},
            "reference='mean' needs a data sample to average; pass data=<tensor of inputs> (e.g. training inputs), "
            "or a reference tensor.",
        ),
        (
            "mean",
            {"data": torch.zeros(5, 3)},
            "data for reference='mean' has shape (5, 3), but inputs have shape (4, 1, 10, 10); pass a batch of "
            "inputs shaped like the explained ones.",
        ),
        (
            "median",
            {},
            "reference must be a tensor, a number or one of zeros, mean, blur, got 'median'; pass e.g. "
            "reference='zeros' or reference=data.mean(0).",
        ),
    ],
)
def test_bad_references_are_one_line_errors(reference: object, kwargs: dict[str, object], message: str) -> None:
    model, x = cnn(), images()
    with pytest.raises(ConfigurationError) as info:
        relprop.explain(model, x, composite="epsilon-gamma-box", reference=reference, **kwargs)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_evaluate_takes_a_reference_with_the_composite() -> None:
    """``lrp:NAME,reference=dataset-mean`` in relprop evaluate explains relative to the data's reference."""
    model, x = cnn(), images(6)
    labels = torch.zeros(6, dtype=torch.long)
    mean = images(30, seed=5).mean(0)
    data = EvaluationData(x, labels, reference=mean)
    settings = EvaluationSettings(replacements=("dataset-mean",), batch_size=6)
    spec = "lrp:epsilon-gamma-box,reference=dataset-mean"
    result = evaluate_methods(model, data, [spec, "lrp:epsilon-gamma-box"], ["conservation"], settings)
    direct = relprop.explain(model, x, composite="epsilon-gamma-box", reference=mean)
    plain = relprop.explain(model, x, composite="epsilon-gamma-box")
    measured = result.values[spec]["conservation error"].double()
    torch.testing.assert_close(measured, conservation_error(direct.relevance, direct.score).double())
    assert not torch.allclose(measured, conservation_error(plain.relevance, plain.score).double())


@pytest.mark.parametrize(
    ("composite", "params"), [("epsilon-gamma-box", {"low": 0.0, "high": 1.0}), ("epsilon-plus-flat", {})]
)
def test_an_explainer_with_a_reference_reuses_its_paired_plan_and_books_each_call_alone(
    composite: str, params: dict[str, float]
) -> None:
    """One Explainer(reference=...) over several batches equals a fresh reference-aware run per batch: the
    paired plan is recorded once, and no ledger row or z^B/flat input relevance leaks into the next call."""
    model = cnn()
    explainer = relprop.Explainer(model, composite, reference="blur", **params)
    for seed, n in ((1, 4), (2, 3), (3, 4)):
        x = images(n, seed)
        reused = explainer(x)
        fresh = relprop.explain(model, x, composite=composite, reference="blur", **params)
        torch.testing.assert_close(reused.relevance, fresh.relevance, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(reused.ledger.score, fresh.ledger.score, rtol=1e-12, atol=1e-14)
        assert len(reused.ledger.entries) == len(fresh.ledger.entries) == 3
        assert reused.ledger.closes()
    run = explainer._reference_run
    assert run is not None and len(run.paired.explainer._plans) == 1


class _FoldsTheBatch(nn.Module):
    """Moves the batch to dimension 1 before its linear layer, so the pair [x; x̄] no longer lies along dimension 0."""

    def __init__(self, relu_first: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 2).double()
        self.relu_first = relu_first  # DeepLIFT pairs at its nonlinearities, reference-aware LRP at its layers

    def forward(self, x: Tensor) -> Tensor:
        folded = x.transpose(0, 1)
        return self.fc(torch.relu(folded) if self.relu_first else folded).sum(0)


@pytest.mark.parametrize(
    ("kwargs", "method"),
    [({"composite": "epsilon", "reference": "zeros"}, "reference-aware LRP"), ({"method": "deeplift"}, "DeepLIFT")],
)
def test_a_model_that_folds_the_batch_is_refused_by_the_paired_methods(kwargs: dict[str, str], method: str) -> None:
    model = _FoldsTheBatch(relu_first=method == "DeepLIFT").eval()
    x = torch.rand(1, 3, 8, dtype=torch.float64)  # the linear layer sees (3, 2, 8): 3 rows, not the pair of 2
    with pytest.raises(relprop.errors.UnsupportedOperationError) as info:
        relprop.explain(model, x, target=0, **kwargs)
    assert f"{method} pairs each input with its reference along the batch dimension, but " in str(info.value)
    assert "received a tensor of shape (3, 2, 8) whose first dimension is not that batch" in str(info.value)
    assert str(info.value).endswith(f"cannot be explained with {method}.")

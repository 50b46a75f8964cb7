"""The one check at every boundary: NaN or Inf anywhere in an explanation is named, with where it is."""

from __future__ import annotations

import math

import pytest
import torch

import relprop
from relprop.explanation import Explanation
from relprop.finite import check_finite, first_non_finite, non_finite_problem
from relprop.ledger import Ledger


def explanation(relevance: torch.Tensor, output: torch.Tensor, score: torch.Tensor) -> Explanation:
    ledger = Ledger(score=score, input_relevance=relevance.flatten(1).sum(1))
    return Explanation(relevance, output, torch.zeros(len(score), dtype=torch.long), ledger)


def test_first_non_finite_gives_position_value_and_count() -> None:
    values = torch.zeros(2, 3, 4)
    assert first_non_finite(values) is None
    values[1, 2, 0] = math.inf
    values[1, 2, 3] = math.nan
    position, value, count = first_non_finite(values)  # type: ignore[misc]
    assert position == (1, 2, 0) and value == math.inf and count == 2


def test_the_part_at_fault_is_named_output_first() -> None:
    relevance, output, score = torch.ones(2, 1, 4, 4), torch.ones(2, 10), torch.ones(2)
    assert non_finite_problem(explanation(relevance, output, score), 0) is None
    relevance[1, 0, 2, 3] = -math.inf
    broken = explanation(relevance, output, score)
    assert non_finite_problem(broken, 0) is None  # sample 0 is fine
    assert non_finite_problem(broken, 1) == (
        "the relevance is -inf at (0, 2, 3) although the model's output is finite; choose other parameters for the "
        "method (e.g. a larger ε)"
    )
    output[1, 7] = math.nan
    assert non_finite_problem(explanation(relevance, output, score), 1) == (
        "the model's output is nan at (7,); check the model's weights and how the input is preprocessed"
    )
    score[0] = math.nan
    with pytest.raises(relprop.NonFiniteError, match=r"^scan.png: no explanation, because the explained score is "
                       r"nan although the model's output is finite"):  # fmt: skip
        check_finite(explanation(torch.ones(2, 3), torch.ones(2, 2), score), 0, "scan.png")


def test_a_real_explanation_of_a_model_with_a_nan_weight_is_refused() -> None:
    from relprop.models import digits_test_set, load_digits_model

    model = load_digits_model()
    with torch.no_grad():
        model.classifier[4].weight[2, 5] = math.nan
    image = digits_test_set().images[:1]
    with pytest.raises(relprop.NonFiniteError, match=r"^sample 0: no explanation, because the model's output is nan at "
                       r"\(2,\); .* \(parameter 'classifier.4.weight' is nan at \(2, 5\)\).$"):  # fmt: skip
        relprop.explain(model, image, target=0, composite="epsilon")  # the library refuses by itself
    result = relprop.explain(model, image, target=0, composite="epsilon", nonfinite="report")  # as the CLI asks
    where = " (parameter 'classifier.4.weight' is nan at (2, 5))"
    assert result.info["nonfinite"] == {0: f"{non_finite_problem(result, 0)}{where}"}
    with pytest.raises(relprop.NonFiniteError, match=r"the model's output is nan at \(2,\)"):
        check_finite(result, 0, "digit")

"""The one check every boundary applies before handing out a result: NaN or Inf is never a success.

The command line (``relprop explain``, ``compare``, ``explain-text``) and the web app call
:func:`check_finite` on each explanation they are about to write or answer; a non-finite value
becomes a :class:`~relprop.errors.NonFiniteError` whose message names the input, the part at
fault (the model's output, the explained score or the relevance), where its first bad value
sits and what to do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import NonFiniteError
from .explanation import Explanation

__all__ = ["check_finite", "first_non_finite", "non_finite_problem"]


def first_non_finite(values: Tensor) -> tuple[tuple[int, ...], float, int] | None:
    """``(position, value, count)`` of the first NaN or ±Inf in ``values`` (row-major), or ``None``."""
    bad = ~torch.isfinite(values.detach())
    count = int(bad.sum())
    if count == 0:
        return None
    flat = int(bad.flatten().nonzero()[0, 0])
    position = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(values.shape)))
    return position, float(values.detach().flatten()[flat]), count


def _where(name: str, values: Tensor) -> str | None:
    found = first_non_finite(values)
    if found is None:
        return None
    position, value, count = found
    at = f" at {position}" if position else ""
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{name} is {value}{at}{more}"


def non_finite_problem(explanation: Explanation, sample: int) -> str | None:
    """What is not finite in sample ``sample`` of ``explanation`` (output, score, relevance), or ``None``."""
    output = _where("the model's output", explanation.output[sample])
    if output is not None:
        return f"{output}; check the model's weights and how the input is preprocessed"
    score = _where("the explained score", explanation.score[sample : sample + 1].reshape(()))
    relevance = _where("the relevance", explanation.relevance[sample])
    found = score or relevance
    if found is None:
        return None
    return f"{found} although the model's output is finite; choose other parameters for the method (e.g. a larger ε)"


def check_finite(explanation: Explanation, sample: int, label: str) -> None:
    """Raise :class:`~relprop.errors.NonFiniteError` if sample ``sample`` holds NaN or Inf anywhere.

    Parameters
    ----------
    explanation
        A batch's explanation.
    sample
        The sample to check.
    label
        How the message names the input (a file name, ``upload``, a sample id).
    """
    problem = non_finite_problem(explanation, sample)
    if problem is not None:
        raise NonFiniteError(f"{label}: no explanation, because {problem}.")

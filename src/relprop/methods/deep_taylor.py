r"""Deep Taylor Decomposition (Montavon et al. 2017) — the DTD reading of LRP.

DTD explains each neuron's relevance by a first-order Taylor expansion at a root point chosen
for the domain of its inputs. For ReLU layers (inputs ``a ≥ 0``) the root point on the
segment towards the origin gives the z⁺ rule,

.. math::

    R_j = \sum_k \frac{a_j w_{jk}^+}{\sum_j a_j w_{jk}^+} R_k ,

and for the pixel layer (inputs in a box ``[l, h]``) the root point inside the box gives the
z^B rule (for unbounded inputs, the w² rule). So Deep Taylor is LRP with a fixed composite:
z^B (or w²) on the first layer, z⁺ on every other layer, the usual structural rules between.
This method builds that composite and runs the LRP engine; the result carries the full LRP
conservation ledger.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .. import match
from ..composites import Composite
from ..engine import Explainer
from ..errors import ConfigurationError
from ..explanation import Explanation
from ..rules import WSquareRule, ZBoxRule, ZPlusRule
from . import register

__all__ = ["INPUT_RULES", "deep_taylor", "deep_taylor_composite"]

INPUT_RULES = ("z-box", "w-square")


def deep_taylor_composite(
    low: float | Tensor | None = None,
    high: float | Tensor | None = None,
    input_rule: str = "z-box",
    stabilizer: float = 1e-6,
) -> Composite:
    """z^B (``input_rule="z-box"``, bounds ``low``/``high``) or w² on the first layer, z⁺ on the others."""
    if input_rule not in INPUT_RULES:
        raise ConfigurationError(f"deep-taylor input_rule must be one of {', '.join(INPUT_RULES)}, got {input_rule!r}.")
    if input_rule == "z-box":
        first = ZBoxRule(low, high, stabilizer)
    else:
        if low is not None or high is not None:
            raise ConfigurationError("deep-taylor low and high apply to input_rule='z-box' only; drop them.")
        first = WSquareRule(stabilizer=stabilizer)
    return Composite(
        [(match.first(), first), (match.kind("layer"), ZPlusRule(stabilizer))],
        name="deep-taylor",
        stabilizer=stabilizer,
    )


@register("deep-taylor", "Deep Taylor decomposition: z+ on every layer, z^B (bounds low, high) at the input")
def deep_taylor(
    model: nn.Module,
    inputs: Tensor,
    target: Any = None,
    *,
    low: float | Tensor | None = None,
    high: float | Tensor | None = None,
    input_rule: str = "z-box",
    stabilizer: float = 1e-6,
    canonize: bool = True,
) -> Explanation:
    """Deep Taylor decomposition: LRP with z⁺ on every layer and z^B (or w²) at the input.

    Parameters
    ----------
    model, inputs, target
        As for :func:`relprop.explain`.
    low, high
        Bounds of the input for z^B: scalars, one value per channel, or tensors shaped like one
        input; ``None`` uses each sample's own minimum and maximum
        (see :func:`relprop.composites.bounds_from_normalization`).
    input_rule
        ``"z-box"`` (bounded inputs such as pixels) or ``"w-square"`` (unbounded inputs).
    stabilizer
        Stabiliser of the rules' denominators.
    canonize
        Fold batch norms into the layers before them (as LRP does).

    Returns
    -------
    Explanation
        The LRP explanation, with its conservation ledger and ``info["input_gradient"]``.
    """
    composite = deep_taylor_composite(low, high, input_rule, stabilizer)
    result = Explainer(model, composite, canonize=canonize, nonfinite="report")(inputs, target)
    result.info["method"] = "deep-taylor"
    return result

"""LRP rules: one small object per rule, each owning its maths and its backward step.

=====================  ==================================================================
:mod:`.base`           the :class:`Rule` protocol, the rule registry, shared arithmetic
:mod:`.linear`         layers and affine operations: LRP-0, ε, γ, αβ, z⁺, z^B, flat, w²
:mod:`.elementwise`    activations: pass-through
:mod:`.pooling`        max pooling: winner-takes-all, proportional
:mod:`.products`       products of two signals: uniform split, gates
:mod:`.normalization`  LayerNorm, RMSNorm, ``x / d``: the identity rule
:mod:`.attention`      fused attention and softmax (AttnLRP, CP-LRP)
:mod:`.function`       the gradient, constants, and rules that replace an operation
=====================  ==================================================================

Every rule declares the operation kinds it applies to (``applies_to``, kinds or groups of
:mod:`relprop.kinds`) and implements :meth:`Rule.forward` (or :meth:`Rule.compute`): given one
operation call it returns the output with its own backward attached. ``relprop.rules.names()``
lists the registered rules by name (``create(name, **params)`` builds one).
"""

from __future__ import annotations

from .attention import AttentionRule, SoftmaxRule
from .base import Probe, Rule, create, get, names, per_sample_dot, per_sample_sum, register, safe_divide, stabilize
from .elementwise import PassRule
from .function import FunctionRule, GradientRule, StopRule
from .linear import (
    AlphaBetaRule,
    EpsilonRule,
    FlatRule,
    GammaRule,
    Hints,
    LinearRule,
    LRP0Rule,
    ModifiedWeightRule,
    NormRule,
    Propagation,
    WSquareRule,
    ZBoxRule,
    ZPlusRule,
    channel_constant_relevance,
    expand_bound,
)
from .normalization import NormalizationRule
from .pooling import ProportionalMaxPoolRule, WinnerTakesAllRule
from .products import ProductRule

__all__ = [
    "AlphaBetaRule",
    "AttentionRule",
    "EpsilonRule",
    "FlatRule",
    "FunctionRule",
    "GammaRule",
    "GradientRule",
    "Hints",
    "LRP0Rule",
    "LinearRule",
    "ModifiedWeightRule",
    "NormRule",
    "NormalizationRule",
    "PassRule",
    "ProductRule",
    "Propagation",
    "ProportionalMaxPoolRule",
    "Rule",
    "SoftmaxRule",
    "StopRule",
    "WSquareRule",
    "WinnerTakesAllRule",
    "ZBoxRule",
    "ZPlusRule",
    "create",
    "get",
    "names",
    "register",
    "stabilize",
]

# Shared arithmetic, importable from here as before (not part of ``__all__``).
_ARITHMETIC = (Probe, channel_constant_relevance, expand_bound, per_sample_dot, per_sample_sum, safe_divide)

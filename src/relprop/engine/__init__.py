"""The LRP engine: trace → plan → replay, with each operation handed to its rule.

=================  ===============================================================================
:mod:`.explainer`  :class:`Explainer` and :func:`explain` (LRP): plans per input shape, the backward
:mod:`.tracing`    the torch function mode, module hooks, carrying-tensor tracking, record / replay
:mod:`.plan`       :class:`OpRecord`, :class:`Plan` and the plan passes (positions, rules, fusions)
:mod:`.call`       :class:`Call`: what a rule receives for one operation
:mod:`.weights`    the cache of folded and rule-modified weights
:mod:`.taps`       inner-layer relevance and conditions (``layers=``, ``conditions=``)
:mod:`.model`      helpers about the user's model: its device, its scores, module paths
=================  ===============================================================================

Operation kinds live in :mod:`relprop.kinds` and rules in :mod:`relprop.rules`; the engine has
no per-kind code. See ``ARCHITECTURE.md``.
"""

from __future__ import annotations

from .call import Call
from .explainer import Explainer, explain
from .model import display_path, model_device, select_output
from .plan import OpRecord, Plan

__all__ = ["Call", "Explainer", "OpRecord", "Plan", "display_path", "explain", "model_device", "select_output"]

r"""The torch networks that scikit-learn models are rewritten as (float64, exact).

* :class:`NeuralizedKMeans` — k-means: a linear layer of the cluster pairs followed by
  min-pooling, :math:`f_c(x) = \min_{k \ne c} \tfrac12(\lVert x-\mu_k\rVert^2 - \lVert x-\mu_c\rVert^2)`.
* :class:`NeuralizedOneClassSVM`, :class:`NeuralizedKernelDensity` — an outlier score as a
  soft-min over (shifted) squared distances to support vectors or training points.
* :class:`TabularNetwork` — linear models and multi-layer perceptrons as ``nn.Linear`` and
  activation modules, explained by relprop's engine.

The first three are explained with NEON's own rules (:mod:`relprop.neon.rules`) by
:meth:`NeonNetwork.explain_inputs`; they are small fixed networks. A per-feature affine
preprocessing step (a scaler) is folded in: distances carry its diagonal metric and the
centres live in the input space, so that relevance is per original feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import TargetError
from ..explanation import Explanation
from ..ledger import Ledger, LedgerEntry
from .rules import MidpointRule, SoftMinPoolingRule, SquaredDistanceRule, check_beta, soft_min

__all__ = [
    "NeonNetwork",
    "NeuralizedKMeans",
    "NeuralizedKernelDensity",
    "NeuralizedOneClassSVM",
    "SoftMinDistanceNetwork",
    "TabularNetwork",
]

_CHUNK_ELEMENTS = 1 << 22


def _row_chunks(n: int, per_row: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, per_row))
    return [slice(start, start + step) for start in range(0, n, step)]


def _sum_rows(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def _entry(index: int, path: str, function: str, rule: str, out: Tensor, inn: Tensor, samples: int) -> LedgerEntry:
    entry = LedgerEntry(index=index, path=path, function=function, rule=rule, samples=samples)
    entry.add(out, inn)
    return entry


class NeonNetwork(nn.Module):
    """A network that NEON explains with its own rules (see :meth:`explain_inputs`)."""

    #: What the network's output means, for listings and CLI summaries.
    score_name = "score"

    def explain_inputs(self, x: Tensor, target: Any = None, beta: float | None = None) -> Explanation:
        """Explain the network's output on ``x`` (float64, ``(N, D)``) for ``target``."""
        raise NotImplementedError


class NeuralizedKMeans(NeonNetwork):
    r"""k-means as a network: per cluster ``c`` a linear layer of the pairs ``(c, k)`` and min-pooling.

    .. math::

        h_{ck}(x) = w_{ck}^\top (x - m_{ck}), \quad w_{ck} = G(\mu_c - \mu_k),
        \quad m_{ck} = \tfrac12(\mu_c + \mu_k), \qquad
        f_c(x) = \min_{k \ne c} h_{ck}(x),

    so that :math:`h_{ck} = \tfrac12(\lVert x - \mu_k\rVert_G^2 - \lVert x - \mu_c\rVert_G^2)`
    (``G`` the diagonal metric of a folded scaler). :math:`f_c > 0` exactly on the points
    assigned to ``c`` and ``argmax_c f_c`` is the k-means assignment. With ``beta`` the
    min-pooling becomes the soft-min :math:`-\beta^{-1}\log\sum_k e^{-\beta h_{ck}}` (the
    log-odds of a soft assignment).

    Parameters
    ----------
    centers
        Cluster centres in the input space, ``(K, D)``, ``K >= 2``.
    metric
        Diagonal metric ``(D,)`` (the squared scale of a folded scaler; ones without one).
    beta
        Soft-min stiffness of the pooling; ``None`` for the exact minimum.
    """

    score_name = "cluster evidence f_c"
    centers: Tensor
    metric: Tensor
    others: Tensor
    weight: Tensor
    midpoint: Tensor

    def __init__(self, centers: Tensor, metric: Tensor, beta: float | None = None) -> None:
        super().__init__()
        k = centers.shape[0]
        others = torch.tensor([[j for j in range(k) if j != c] for c in range(k)], dtype=torch.long)
        self.register_buffer("centers", centers)
        self.register_buffer("metric", metric)
        self.register_buffer("others", others)
        self.register_buffer("weight", (centers.unsqueeze(1) - centers[others]) * metric)
        self.register_buffer("midpoint", (centers.unsqueeze(1) + centers[others]) / 2)
        self.beta = check_beta(beta)

    @property
    def n_clusters(self) -> int:
        """Number of clusters ``K``."""
        return int(self.centers.shape[0])

    def pairs(self, x: Tensor) -> Tensor:
        """The linear layer: ``h[n, c, j] = h_{c, others[c, j]}(x_n)``, shape ``(N, K, K-1)``."""
        k, d = self.weight.shape[0], self.weight.shape[2]
        out = x.new_empty(x.shape[0], k, k - 1)
        for rows in _row_chunks(x.shape[0], k * (k - 1) * d):
            out[rows] = ((x[rows, None, None, :] - self.midpoint) * self.weight).sum(-1)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The cluster evidence ``f_c(x)`` of every cluster, ``(N, K)``."""
        return soft_min(self.pairs(x), self.beta)

    def explain_inputs(self, x: Tensor, target: Any = None, beta: float | None = None) -> Explanation:
        r"""Soft-min redistribution on the pooling, the midpoint rule on the linear layer.

        ``target``: ``None`` for the assigned cluster, a cluster index or one per sample.
        ``beta``: stiffness of the redistribution (default: the network's own, i.e.
        winner-takes-all for the exact k-means).
        """
        n = x.shape[0]
        output = self.forward(x)
        target = _class_targets(target, output)
        score = output.gather(1, target.view(-1, 1)).squeeze(1)
        weight, midpoint = self.weight[target], self.midpoint[target]
        h = ((x.unsqueeze(1) - midpoint) * weight).sum(-1)
        pool = SoftMinPoolingRule(self.beta if beta is None else check_beta(beta))
        unit_relevance = pool(h, score)
        relevance, _ = MidpointRule()(x, weight, midpoint, unit_relevance)
        pooled = unit_relevance.sum(1)
        entries = [
            _entry(0, "pairs", "linear", MidpointRule.label, pooled, _sum_rows(relevance), n),
            _entry(1, "pool", "min", pool.label, score, pooled, n),
        ]
        ledger = Ledger(score=score, input_relevance=_sum_rows(relevance), entries=entries)
        info = {"method": "neon", "pool_shares": pool.shares(h), "competitors": self.others[target]}
        return Explanation(relevance=relevance, output=output, target=target, ledger=ledger, info=info)


class SoftMinDistanceNetwork(NeonNetwork):
    r"""An outlier score as a soft-min over shifted squared distances.

    .. math::

        d_j(x) = \lVert x - u_j\rVert_G^2 + b_j, \qquad
        o(x) = -\gamma^{-1} \log \sum_j e^{-\gamma\, d_j(x)},

    i.e. :math:`e^{-\gamma o(x)} = \sum_j e^{-\gamma b_j} e^{-\gamma \lVert x-u_j\rVert_G^2}`, a
    Gaussian-kernel expansion whose coefficients sit in the shifts :math:`b_j`. Explained by
    soft-min redistribution (stiffness ``beta``, default :math:`\gamma`) and the squared-distance
    rule.

    Parameters
    ----------
    centers
        Support vectors / training points in the input space, ``(J, D)``.
    metric
        Diagonal metric ``(D,)`` of a folded scaler (ones without one).
    shift
        The shifts :math:`b_j`, ``(J,)``.
    gamma
        The kernel's stiffness :math:`\gamma`.
    """

    score_name = "outlier score"
    centers: Tensor
    metric: Tensor
    shift: Tensor

    def __init__(self, centers: Tensor, metric: Tensor, shift: Tensor, gamma: float) -> None:
        super().__init__()
        self.register_buffer("centers", centers)
        self.register_buffer("metric", metric)
        self.register_buffer("shift", shift)
        self.gamma = float(gamma)

    def distances(self, x: Tensor) -> Tensor:
        """The distance layer ``d_j(x)``, ``(N, J)``."""
        j, d = self.centers.shape
        out = x.new_empty(x.shape[0], j)
        for rows in _row_chunks(x.shape[0], j * d):
            out[rows] = ((x[rows].unsqueeze(1) - self.centers).square() * self.metric).sum(-1)
        return out + self.shift

    def forward(self, x: Tensor) -> Tensor:
        """The outlier score ``o(x)``, ``(N, 1)``."""
        return soft_min(self.distances(x), self.gamma).unsqueeze(1)

    def explain_inputs(self, x: Tensor, target: Any = None, beta: float | None = None) -> Explanation:
        """Soft-min redistribution on the pooling, the squared-distance rule on the distance layer."""
        n = x.shape[0]
        d = self.distances(x)
        score = soft_min(d, self.gamma)
        if target is not None:
            try:
                _class_targets(target, score.unsqueeze(1))
            except TargetError:
                raise TargetError(
                    f"the {self.score_name} is a single output; pass target=None (or 0), not {target!r}."
                ) from None
        pool = SoftMinPoolingRule(self.gamma if beta is None else check_beta(beta))
        unit_relevance = pool(d, score)
        relevance, absorbed = SquaredDistanceRule()(x, self.centers, self.metric, unit_relevance)
        pooled = unit_relevance.sum(1)
        entries = [
            _entry(0, "distance", "squared-distance", SquaredDistanceRule.label, pooled, _sum_rows(relevance), n),
            _entry(1, "pool", "soft-min", pool.label, score, pooled, n),
        ]
        entries[0].bias = absorbed
        ledger = Ledger(score=score, input_relevance=_sum_rows(relevance), entries=entries)
        target_tensor = torch.zeros(n, dtype=torch.long, device=x.device)
        info = {"method": "neon", "pool_shares": pool.shares(d)}
        return Explanation(
            relevance=relevance, output=score.unsqueeze(1), target=target_tensor, ledger=ledger, info=info
        )


class NeuralizedOneClassSVM(SoftMinDistanceNetwork):
    r"""A one-class SVM with RBF kernel as a soft-min distance network.

    scikit-learn's ``score_samples(x) = Σ_j α_j exp(-γ‖x - u_j‖²)`` and
    ``decision_function = score_samples - ρ`` (``ρ = offset_``). The network outputs the outlier
    score relative to the model's own threshold,

    .. math:: o(x) = -\gamma^{-1}\log\frac{\sum_j \alpha_j e^{-\gamma\lVert x-u_j\rVert^2}}{\rho},

    i.e. shifts :math:`b_j = -\gamma^{-1}\log(\alpha_j/\rho)`: :math:`o(x) > 0` exactly where the
    SVM calls ``x`` an outlier (``predict == -1``), and
    ``decision_function(x) = ρ (exp(-γ o(x)) - 1)``.
    """

    def __init__(self, centers: Tensor, metric: Tensor, shift: Tensor, gamma: float, offset: float) -> None:
        super().__init__(centers, metric, shift, gamma)
        self.offset = float(offset)

    def decision_function(self, x: Tensor) -> Tensor:
        """scikit-learn's ``decision_function`` from the network output, ``(N,)``."""
        return self.offset * torch.expm1(-self.gamma * self.forward(x).squeeze(1))

    def score_samples(self, x: Tensor) -> Tensor:
        """scikit-learn's ``score_samples`` from the network output, ``(N,)``."""
        return self.offset * torch.exp(-self.gamma * self.forward(x).squeeze(1))


class NeuralizedKernelDensity(SoftMinDistanceNetwork):
    r"""A Gaussian kernel density estimate as a soft-min distance network.

    With bandwidth ``h``, :math:`\gamma = 1/(2h^2)` and normalised sample weights :math:`\pi_j`,
    the log density is :math:`\log p(x) = -\gamma\, o(x) - \tfrac{D}{2}\log(2\pi h^2)` with

    .. math:: o(x) = -\gamma^{-1}\log\sum_j \pi_j e^{-\gamma\lVert x-x_j\rVert^2} \ \ge 0,

    i.e. shifts :math:`b_j = -\gamma^{-1}\log\pi_j`: the outlier score is a soft-min of squared
    distances to the training points (a soft nearest-neighbour distance).
    """

    def __init__(self, centers: Tensor, metric: Tensor, shift: Tensor, gamma: float, log_norm: float) -> None:
        super().__init__(centers, metric, shift, gamma)
        self.log_norm = float(log_norm)

    def score_samples(self, x: Tensor) -> Tensor:
        """scikit-learn's ``score_samples`` (log density) from the network output, ``(N,)``."""
        return -self.gamma * self.forward(x).squeeze(1) + self.log_norm


class TabularNetwork(nn.Module):
    """A linear model or MLP as ``nn.Linear`` and activation modules (explained by relprop's engine).

    Parameters
    ----------
    layers
        The layers, ``nn.Linear`` and element-wise activations, float64.
    probability
        How outputs become probabilities: ``"sigmoid"`` (binary: one output, the log-odds of
        ``classes[1]``), ``"softmax"``, ``"sigmoid-each"`` (multi-label) or ``None``.
    classes
        The classifier's classes (``None`` for regressors).
    """

    def __init__(self, layers: Sequence[nn.Module], probability: str | None, classes: Sequence[Any] | None) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.probability = probability
        self.classes = None if classes is None else list(classes)

    @property
    def binary(self) -> bool:
        """A two-class classifier with one output (the evidence for ``classes[1]``)."""
        last = self.layers[-1]
        return (
            self.classes is not None
            and len(self.classes) == 2
            and isinstance(last, nn.Linear)
            and last.out_features == 1
        )

    def forward(self, x: Tensor) -> Tensor:
        """Decision values (logits / regression outputs), ``(N, outputs)``."""
        return self.layers(x)  # type: ignore[no-any-return]

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities as scikit-learn's ``predict_proba``."""
        z = self.forward(x)
        if self.probability == "softmax":
            return torch.softmax(z, dim=1)
        if self.probability == "sigmoid-each":
            return torch.sigmoid(z)
        if self.probability == "sigmoid":
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], dim=1)
        raise TypeError("this model has no probabilities (it is not a probabilistic classifier).")


def _class_targets(target: Any, output: Tensor) -> Tensor:
    """Class indices ``(N,)`` for ``target`` (``None``: the argmax of ``output``), checked."""
    n, k = output.shape
    if target is None:
        return output.argmax(1)
    if isinstance(target, bool):
        raise TargetError(f"target must be a class index or one index per sample, got {target!r}.")
    if isinstance(target, int):
        indices = torch.full((n,), target, dtype=torch.long, device=output.device)
    else:
        indices = torch.as_tensor(target, device=output.device)
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise TargetError(f"target indices must be integers, got dtype {indices.dtype}.")
        indices = indices.long().reshape(-1)
        if indices.numel() == 1:
            indices = indices.expand(n)
        elif indices.numel() != n:
            raise TargetError(f"got {indices.numel()} target indices for {n} rows; pass one index, or one per row.")
    bad = (indices < 0) | (indices >= k)
    if bool(bad.any()):
        raise TargetError(f"target {int(indices[bad][0])} is out of range; valid indices are 0..{k - 1}.")
    return indices

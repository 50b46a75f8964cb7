"""The conservation ledger: where the explained score went.

LRP conserves relevance up to what biases and stabilisers absorb:
``score = Σ R_input + Σ_layers absorbed``. The ledger lists, per operation, the relevance
that arrived at its output, what it handed to its inputs, and the difference it absorbed
(split into the bias share and the rest: stabilisers, non-conserving rules), so that the
sum closes and a user sees which layer swallowed what.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["DotMemo", "Ledger", "LedgerEntry"]


def _layout(t: Tensor) -> tuple[object, ...]:
    return (t.data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t.device, t._version)


class DotMemo:
    """The last per-sample ``Σ x ⊙ g`` a layer's backward computed, for the next step to reuse.

    In a chain ``layer → ReLU → layer`` the upper layer books ``Σ a ⊙ g_a`` as the relevance it
    hands down, and the layer below books the very same product as the relevance arriving at
    its output (its ``y`` is ``a``, its incoming gradient is ``g_a``). The memo holds both tensors
    (so their memory cannot be reused) and answers only for the same memory, layout and version
    (an accumulated or modified gradient is another tensor or another version), so a hit is the
    same dot product of the same values, not an identity assumed by the maths.
    """

    __slots__ = ("_held", "_key", "_value")

    def __init__(self) -> None:
        self._held: tuple[Tensor, Tensor] | None = None
        self._key: tuple[object, ...] | None = None
        self._value: Tensor | None = None

    def remember(self, x: Tensor, grad: Tensor, value: Tensor) -> None:
        """Keep ``value = Σ x ⊙ grad`` (per sample)."""
        self._held = (x, grad)
        self._key = (_layout(x), _layout(grad))
        self._value = value

    def recall(self, x: Tensor, grad: Tensor) -> Tensor | None:
        """``Σ x ⊙ grad`` if it was the last product remembered, else ``None``; forgets it either way."""
        key, value = self._key, self._value
        self._held = self._key = self._value = None
        if key is None or key != (_layout(x), _layout(grad)):
            return None
        return value


@dataclass
class LedgerEntry:
    """Relevance bookkeeping of one operation, per sample.

    Attributes
    ----------
    index
        Position of the operation in the forward pass.
    path
        Module path of the operation (``(model)`` for the model's own forward).
    function
        Torch function name.
    rule
        Description of the rule applied.
    relevance_out
        Relevance arriving at the operation's output, per sample.
    relevance_in
        Relevance handed to the operation's inputs, per sample.
    bias
        Part of the absorbed relevance taken by the bias (or other constant term), per sample.
    samples
        Batch size, when known. Operations that fold the batch into their first dimension
        (``x.view(-1, d)`` before a GPT-2 style ``addmm``) report one value per row; rows are
        then summed per sample (the batch is the outer factor of such a folded dimension).
    """

    index: int
    path: str
    function: str
    rule: str
    relevance_out: Tensor | None = None
    relevance_in: Tensor | None = None
    bias: Tensor | None = None
    samples: int | None = None

    def _per_sample(self, value: Tensor) -> Tensor:
        v = value.detach()
        n = self.samples
        if n is None or v.shape[0] == n:
            return v
        if v.numel() % n:
            raise RuntimeError(
                f"operation {self.function} in '{self.path}' has {v.shape[0]} rows for a batch of {n}; its batch "
                "dimension is not the first one, so explain one sample at a time."
            )
        return v.reshape(n, -1).sum(1)

    def add(self, relevance_out: Tensor, relevance_in: Tensor, bias: Tensor | None = None) -> None:
        """Accumulate the bookkeeping of one backward step (called from backward functions)."""
        out = self._per_sample(relevance_out)
        inn = self._per_sample(relevance_in)
        self.relevance_out = out if self.relevance_out is None else self.relevance_out + out
        self.relevance_in = inn if self.relevance_in is None else self.relevance_in + inn
        if bias is not None:
            b = self._per_sample(bias)
            self.bias = b if self.bias is None else self.bias + b

    @property
    def absorbed(self) -> Tensor | None:
        """Relevance absorbed by this operation (``relevance_out - relevance_in``), per sample."""
        if self.relevance_out is None or self.relevance_in is None:
            return None
        return self.relevance_out - self.relevance_in

    @property
    def stabilizer(self) -> Tensor | None:
        """Absorbed relevance not explained by the bias (stabilisers, non-conserving rules)."""
        absorbed = self.absorbed
        if absorbed is None:
            return None
        return absorbed if self.bias is None else absorbed - self.bias


@dataclass
class Ledger:
    """Conservation bookkeeping of one explanation (all values per sample).

    Attributes
    ----------
    score
        The explained score (logit, log-odds or contrast; the sum of the initial relevance).
    input_relevance
        Σ of the relevance at the input.
    entries
        Per operation that absorbs or creates relevance, in forward order.
    top_absorbed
        Relevance lost between the score and the relevance that entered the network
        (the soft-min of the log-odds layer, or initial relevance at outputs that are exactly 0).
    """

    score: Tensor
    input_relevance: Tensor
    entries: list[LedgerEntry] = field(default_factory=list)
    top_absorbed: Tensor | None = None

    @property
    def absorbed(self) -> Tensor:
        """Total relevance absorbed inside the network, per sample."""
        total = torch.zeros_like(self.score)
        for entry in self.entries:
            a = entry.absorbed
            if a is not None:
                total = total + a.to(total)
        return total

    @property
    def bias_absorbed(self) -> Tensor:
        """Total relevance absorbed by biases, per sample."""
        total = torch.zeros_like(self.score)
        for entry in self.entries:
            if entry.bias is not None:
                total = total + entry.bias.to(total)
        return total

    @property
    def residual(self) -> Tensor:
        """``score - Σ R_input - absorbed - top_absorbed``: rounding error if the ledger closes."""
        top = 0.0 if self.top_absorbed is None else self.top_absorbed
        return self.score - self.input_relevance - self.absorbed - top

    def closes(self, rtol: float = 1e-4, atol: float = 0.0) -> bool:
        """Whether the ledger closes for every sample.

        ``|residual| <= atol + rtol·(|score| + |Σ R_input| + Σ_layers |absorbed|)``: the
        tolerance scales with the magnitudes that were summed.
        """
        scale = self.score.abs() + self.input_relevance.abs()
        for entry in self.entries:
            absorbed = entry.absorbed
            if absorbed is not None:
                scale = scale + absorbed.abs().to(scale)
        return bool((self.residual.abs() <= atol + rtol * scale).all())

    def table(self, sample: int = 0, top: int | None = None) -> str:
        """A readable table for one sample: score, input relevance and per-operation absorption.

        Parameters
        ----------
        sample
            Index of the sample in the batch.
        top
            Show only the ``top`` operations that absorbed the most (by magnitude).
        """
        rows = [e for e in self.entries if e.absorbed is not None]
        if top is not None:
            rows = sorted(rows, key=lambda e: -float(e.absorbed[sample].abs()))[:top]  # type: ignore[index]
        lines = [
            f"explained score      {float(self.score[sample]): .6g}",
            f"input relevance      {float(self.input_relevance[sample]): .6g}",
            f"absorbed in network  {float(self.absorbed[sample]): .6g}"
            f"  (biases {float(self.bias_absorbed[sample]): .6g})",
        ]
        if self.top_absorbed is not None:
            lines.append(f"absorbed at the top  {float(self.top_absorbed[sample]): .6g}")
        lines.append(f"residual             {float(self.residual[sample]): .3g}")
        lines.append("")
        lines.append(f"{'#':>4}  {'module path':<28} {'rule':<24} {'in from above':>14} {'absorbed':>12} {'bias':>12}")
        for e in rows:
            assert e.relevance_out is not None and e.absorbed is not None
            bias = "" if e.bias is None else f"{float(e.bias[sample]):12.5g}"
            lines.append(
                f"{e.index:>4}  {e.path[:28]:<28} {e.rule[:24]:<24} "
                f"{float(e.relevance_out[sample]):14.6g} {float(e.absorbed[sample]):12.5g} {bias:>12}"
            )
        return "\n".join(lines)

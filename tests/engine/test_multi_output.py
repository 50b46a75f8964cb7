"""Operations that return several tensors appear in the ledger with their relevance in and out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import relprop


class Several(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8, bias=False)
        self.out = nn.Linear(4, 3, bias=False)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x))
        if self.how == "split":
            a, b = h.split(4, 1)
            return self.out(a + b)
        if self.how == "chunk":
            a, b = torch.chunk(h, 2, 1)
            return self.out(a * 2.0) + self.out(b)
        if self.how == "unbind":
            rows = h.view(-1, 2, 4).unbind(1)
            return self.out(rows[0] + rows[1])
        if self.how == "max":
            values, _ = h.view(-1, 2, 4).max(1)
            return self.out(values)
        if self.how == "topk":
            values, _ = h.topk(4, 1)
            return self.out(values)
        raise AssertionError(self.how)


@pytest.mark.parametrize(
    ("how", "function"),
    [("split", "split"), ("chunk", "chunk"), ("unbind", "unbind"), ("max", "max"), ("topk", "topk")],
)
def test_several_outputs_are_in_the_ledger(how: str, function: str) -> None:
    model = Several(how).double().eval()
    x = torch.randn(3, 6, dtype=torch.float64)
    result = relprop.explain(model, x, composite="lrp-0")
    rows = [e for e in result.ledger.entries if e.function.rsplit(".", 1)[-1] == function]
    assert len(rows) == 1, [e.function for e in result.ledger.entries]
    (row,) = rows
    assert row.relevance_in is not None and row.relevance_out is not None
    torch.testing.assert_close(row.relevance_in, row.relevance_out, rtol=1e-10, atol=1e-12)  # routing conserves
    assert float(row.relevance_out.abs().max()) > 0
    # bias-free LRP-0 through routing: the logit reaches the input whole
    torch.testing.assert_close(result.relevance.sum(1), result.score, rtol=1e-10, atol=1e-12)
    assert result.ledger.closes(rtol=1e-10)

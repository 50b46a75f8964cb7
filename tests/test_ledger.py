"""The conservation ledger closes exactly when the bookkeeping adds up, and fails when it does not."""

from __future__ import annotations

import pytest
import torch

import relprop
from relprop.ledger import DotMemo, Ledger, LedgerEntry

from models import small_cnn


def entry(index: int, out: float, into: float, bias: float | None = None) -> LedgerEntry:
    e = LedgerEntry(index, f"layer{index}", "torch.nn.functional.linear", "epsilon")
    e.add(torch.tensor([out]), torch.tensor([into]), None if bias is None else torch.tensor([bias]))
    return e


def test_hand_made_ledger_closes_only_when_its_sums_add_up() -> None:
    # score 10 = input 6 + absorbed (10 - 8) + (8 - 6)
    closing = Ledger(torch.tensor([10.0]), torch.tensor([6.0]), [entry(0, 8.0, 6.0), entry(1, 10.0, 8.0, 1.5)])
    assert closing.closes(rtol=1e-12)
    assert float(closing.residual[0]) == 0.0
    assert float(closing.absorbed[0]) == 4.0 and float(closing.bias_absorbed[0]) == 1.5
    # one entry hands on 1 more than the next one received: a residual of -1 the tolerance cannot hide
    broken = Ledger(torch.tensor([10.0]), torch.tensor([6.0]), [entry(0, 8.0, 6.0), entry(1, 10.0, 9.0)])
    assert float(broken.residual[0]) == pytest.approx(1.0)
    assert not broken.closes(rtol=1e-4)
    assert not Ledger(torch.tensor([10.0]), torch.tensor([6.0])).closes(rtol=0.1)


def test_tolerance_scales_with_the_summed_magnitudes() -> None:
    ledger = Ledger(torch.tensor([1.0]), torch.tensor([1.0 - 1e-3]))
    assert not ledger.closes(rtol=1e-4)  # 1e-3 > 1e-4 · (1 + 0.999)
    assert ledger.closes(rtol=1e-3)
    assert ledger.closes(rtol=0.0, atol=2e-3)
    # one failing sample fails the whole batch
    batch = Ledger(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.5]))
    assert not batch.closes(rtol=1e-4)


@pytest.fixture
def explained() -> relprop.Explanation:
    model = small_cnn(batchnorm=True).double().eval()
    with torch.no_grad():
        model[0].bias.normal_(0, 0.5)
    return relprop.explain(model, torch.randn(3, 3, 8, 8, dtype=torch.float64), composite="epsilon-gamma-box")


def test_engine_ledger_closes_and_stops_closing_when_an_entry_is_dropped(explained: relprop.Explanation) -> None:
    ledger = explained.ledger
    assert ledger.closes(rtol=1e-9)
    biggest = max(ledger.entries, key=lambda e: float(e.absorbed.abs().min()))
    assert float(biggest.absorbed.abs().min()) > 1e-6 * float(ledger.score.abs().max())
    # A non-conserving step without its entry: the ledger must not close.
    without = Ledger(ledger.score, ledger.input_relevance, [e for e in ledger.entries if e is not biggest])
    assert not without.closes(rtol=1e-9)


def test_engine_ledger_stops_closing_when_an_entry_is_tampered(explained: relprop.Explanation) -> None:
    ledger = explained.ledger
    first = ledger.entries[0]
    assert first.relevance_in is not None
    first.relevance_in = first.relevance_in + 1e-3 * ledger.score.abs()
    assert not ledger.closes(rtol=1e-6)


def test_dot_memo_answers_only_for_the_same_unchanged_tensors() -> None:
    x, g = torch.rand(2, 3, 4), torch.rand(2, 3, 4)
    value = (x * g).sum((1, 2))
    memo = DotMemo()
    memo.remember(x, g, value)
    assert memo.recall(x, g) is value
    assert memo.recall(x, g) is None  # forgotten after one question
    memo.remember(x, g, value)
    assert memo.recall(x, g.clone()) is None  # same values, other memory
    memo.remember(x, g, value)
    g.add_(1.0)  # written in place: another version
    assert memo.recall(x, g) is None
    memo.remember(x, g, value)
    assert memo.recall(x.view(2, 12), g.view(2, 12)) is None  # other layout


def test_ledger_closes_with_reused_dot_products_in_a_relu_chain() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 5),
    ).eval()  # fmt: skip
    x = torch.rand(2, 3, 6, 6)
    result = relprop.Explainer(model, "epsilon-gamma-box", low=0.0, high=1.0)(x)
    entries = [e for e in result.ledger.entries if e.relevance_in is not None and e.relevance_out is not None]
    # Conv 1 → ReLU → conv 2: what conv 2 hands down is exactly what arrives at conv 1's output.
    first, second = entries[0], entries[1]
    assert torch.equal(first.relevance_out, second.relevance_in)
    assert result.ledger.closes()

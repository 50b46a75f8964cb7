"""Targets and top layers: predicted class, indices, initial relevance, log-odds, contrast."""

from __future__ import annotations

import pytest
import torch

import relprop

from helpers import assert_close_relative
from models import small_cnn
from reference import activations_of, reference_lrp_from


@pytest.fixture
def model() -> torch.nn.Module:
    return small_cnn(batchnorm=True).double().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 8, 8, dtype=torch.float64)


def test_default_target_is_the_predicted_class(model, x) -> None:
    result = relprop.explain(model, x, composite="epsilon")
    assert torch.equal(result.target, model(x).argmax(1))
    assert result.target.dtype == torch.long and result.target.shape == (3,)


def test_int_list_and_tensor_targets_agree(model, x) -> None:
    a = relprop.explain(model, x, target=4, composite="epsilon")
    b = relprop.explain(model, x, target=[4, 4, 4], composite="epsilon")
    c = relprop.explain(model, x, target=torch.tensor([4, 4, 4]), composite="epsilon")
    assert torch.equal(a.relevance, b.relevance) and torch.equal(b.relevance, c.relevance)
    assert torch.equal(a.score, model(x)[:, 4])


def test_initial_relevance_tensor_is_linear(model, x) -> None:
    explainer = relprop.Explainer(model, "epsilon-gamma-box")
    out = model(x).detach()
    onehot = torch.zeros_like(out)
    onehot[:, 2] = out[:, 2]
    by_tensor = explainer(x, target=onehot)
    by_index = explainer(x, target=2)
    assert_close_relative(by_tensor.relevance, by_index.relevance, 1e-12)
    doubled = explainer(x, target=2 * onehot)
    assert_close_relative(doubled.relevance, 2 * by_index.relevance, 1e-12)


def test_contrast_is_the_difference_of_two_explanations(model, x) -> None:
    explainer = relprop.Explainer(model, "epsilon-gamma-box")
    contrast = explainer(x, target=1, contrast=7)
    one, seven = explainer(x, target=1), explainer(x, target=7)
    out = model(x).detach()
    assert torch.allclose(contrast.score, out[:, 1] - out[:, 7])
    assert_close_relative(contrast.relevance, one.relevance - seven.relevance, 1e-10)


def test_contrast_against_the_rest(model, x) -> None:
    result = relprop.explain(model, x, target=3, contrast="rest", composite="epsilon")
    out = model(x).detach()
    others = torch.cat([out[:, :3], out[:, 4:]], 1).mean(1)
    assert torch.allclose(result.score, out[:, 3] - others)
    assert result.ledger.closes(rtol=1e-9)


def test_log_odds_score_and_ledger(model, x) -> None:
    result = relprop.explain(model, x, top="log-odds", composite="epsilon-gamma-box")
    p = torch.softmax(model(x).detach(), 1).gather(1, result.target[:, None]).squeeze(1)
    assert torch.allclose(result.score, torch.log(p / (1 - p)), rtol=1e-10)
    assert result.ledger.top_absorbed is not None
    assert result.ledger.closes(rtol=1e-9)
    # LRP-0 on the difference layer: Σ_c' p_c'(z_c − z_c') enters the network
    entering = result.ledger.score - result.ledger.top_absorbed
    assert torch.all(entering >= result.score - 1e-12)  # the soft-min is below the weighted mean
    logit = relprop.explain(model, x, composite="epsilon-gamma-box")
    assert not torch.allclose(result.relevance, logit.relevance)


def softmin_top_relevance(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relevance at the logits for the log-odds top layer, by the four-step recipe in float64.

    The differences d_c' = z_c - z_c' (c' != c) form a linear layer; the soft-min hands each the
    relevance d_c' p_c' with p = exp(-d) / Σ exp(-d) over the other classes. Written out with exp,
    not with softmax, and propagated to the logits with autograd (LRP-0 on the difference layer).
    """
    rows = []
    for i in range(z.shape[0]):
        c = int(target[i])
        others = [k for k in range(z.shape[1]) if k != c]
        zi = z[i].detach().clone().requires_grad_(True)
        d = zi[c] - zi[others]
        weights = torch.exp(-d.detach())
        p = weights / weights.sum()
        relevance_d = d.detach() * p
        s = relevance_d / d.detach()
        (grad,) = torch.autograd.grad((d * s).sum(), zi)
        rows.append(zi.detach() * grad)
    return torch.stack(rows)


def test_log_odds_relevance_matches_an_independent_softmin_reference() -> None:
    net = (
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 5, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(5 * 4 * 4, 9),
            torch.nn.ReLU(),
            torch.nn.Linear(9, 6),
        )
        .double()
        .eval()
    )
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    result = relprop.explain(net, x, top="log-odds", composite="epsilon", epsilon=0.1)
    z = activations_of(net, x)[-1]
    top = softmin_top_relevance(z, result.target)
    p = torch.softmax(z, 1).gather(1, result.target[:, None]).squeeze(1)
    torch.testing.assert_close(result.score, torch.log(p) - torch.log1p(-p), rtol=1e-10, atol=1e-12)
    # the relevance entering the network is what the soft-min hands down
    torch.testing.assert_close(result.score - result.ledger.top_absorbed, top.sum(1), rtol=1e-10, atol=1e-12)
    expected = reference_lrp_from(net, x, top, lambda i, m: ("epsilon", 0.1))
    assert_close_relative(result.relevance, expected, 1e-9)
    assert result.ledger.closes(rtol=1e-9)


def test_log_odds_of_two_classes_is_the_contrast(model, x) -> None:
    """With two classes, η_c = z_c − z_other exactly: log-odds and contrast coincide."""
    two = torch.nn.Sequential(*list(small_cnn().double().eval())[:-1], torch.nn.Linear(16, 2).double()).eval()
    a = relprop.explain(two, x, top="log-odds", composite="epsilon")
    other = 1 - a.target
    b = relprop.explain(two, x, target=a.target, contrast=other, composite="epsilon")
    assert torch.allclose(a.score, b.score, rtol=1e-10)
    assert_close_relative(a.relevance, b.relevance, 1e-10)


def test_top_layer_errors(model, x) -> None:
    with pytest.raises(relprop.TargetError, match="unknown top layer 'softmax'; choose one of: logit, log-odds"):
        relprop.explain(model, x, top="softmax")
    with pytest.raises(relprop.TargetError, match="contrast class equals the target class"):
        relprop.explain(model, x, target=2, contrast=2)
    with pytest.raises(relprop.TargetError, match="drop contrast"):
        relprop.explain(model, x, top="log-odds", contrast=1)

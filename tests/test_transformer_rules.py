"""Rules for transformer operations on small models with known answers (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relprop
from relprop import ops

EXACT = {"epsilon": 0.0, "stabilizer": 0.0}


def grad_x_input(fn: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(xx)[:, target].sum(), xx)
    return g * x


class LayerNormNet(nn.Module):
    def __init__(self, detach_std: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 3)
        self.detach_std = detach_std
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0, 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.detach_std:  # the reference: LayerNorm with σ held constant
            mean = h.mean(-1, keepdim=True)
            std = torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + self.norm.eps).detach()
            h = (h - mean) / std * self.norm.weight + self.norm.bias
        else:
            h = self.norm(h)
        return self.fc2(h)


def test_layer_norm_identity_rule_is_gradient_with_constant_std() -> None:
    model = LayerNormNet().double().eval()
    reference = LayerNormNet(detach_std=True).double().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(4, 6, dtype=torch.float64)
    result = relprop.explain(model, x, target=1, composite="attnlrp", **EXACT)
    torch.testing.assert_close(result.relevance, grad_x_input(reference, x, 1), rtol=1e-10, atol=1e-12)
    assert result.ledger.closes(rtol=1e-10)
    (norm_row,) = [e for e in result.ledger.entries if e.path == "norm"]
    assert norm_row.rule == "normalization"
    # The LayerNorm's bias takes exactly its share: nothing else is absorbed there.
    assert norm_row.bias is not None and norm_row.absorbed is not None
    torch.testing.assert_close(norm_row.absorbed, norm_row.bias, rtol=1e-10, atol=1e-14)


class HandRMSNorm(nn.Module):
    """RMSNorm written the way LLaMA-style models write it (pow, mean, rsqrt)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(size) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + 1e-6))


class RMSNet(nn.Module):
    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.norm = HandRMSNorm(7)
        self.fc2 = nn.Linear(7, 2)
        self.functional = functional

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = F.rms_norm(h, (7,), self.norm.weight, 1e-6) if self.functional else self.norm(h)
        return self.fc2(h)


def test_hand_written_and_functional_rms_norm_get_the_same_identity_rule() -> None:
    hand = RMSNet(functional=False).double().eval()
    functional = RMSNet(functional=True).double().eval()
    functional.load_state_dict(hand.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64)
    a = relprop.explain(hand, x, target=0, composite="attnlrp", **EXACT)
    b = relprop.explain(functional, x, target=0, composite="attnlrp", **EXACT)
    torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-10, atol=1e-12)

    # Reference: the gradient with the normaliser 1/rms held constant (AttnLRP's identity rule).
    def constant_rms(z: torch.Tensor) -> torch.Tensor:
        h = hand.fc1(z)
        h = hand.norm.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6).detach())
        return hand.fc2(h)

    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(constant_rms(xx)[:, 0].sum(), xx)
    torch.testing.assert_close(a.relevance, g * x, rtol=1e-10, atol=1e-12)
    assert a.ledger.closes(rtol=1e-10)


def test_transformer_operations_without_a_rule_name_the_composites_that_have_one() -> None:
    with pytest.raises(relprop.UnsupportedOperationError) as info:
        relprop.explain(RMSNet(functional=False).eval(), torch.randn(2, 5), composite="epsilon")
    message = str(info.value)
    assert "torch.Tensor.pow" in message and "'norm'" in message and "(HandRMSNorm)" in message
    assert "composite='attnlrp'" in message


class Attention(nn.Module):
    """One attention head block, written eagerly (matmul, softmax, matmul) or with the fused kernel."""

    def __init__(
        self, fused: bool, mask: torch.Tensor | None = None, bias: bool = True, additive: bool = False
    ) -> None:
        super().__init__()
        self.additive = additive
        self.qkv = nn.Linear(8, 24, bias=bias)
        self.out = nn.Linear(8, 3, bias=bias)
        self.norm = nn.LayerNorm(8, bias=bias)
        self.fused = fused
        self.mask = mask  # bool, True = may attend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused:
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(4)
            if self.mask is not None and self.additive:
                scores = scores + torch.zeros(self.mask.shape, dtype=x.dtype).masked_fill(~self.mask, float("-inf"))
            elif self.mask is not None:
                scores = scores.masked_fill(~self.mask, float("-inf"))
            h = scores.softmax(-1) @ v
        h = h.transpose(1, 2).reshape(x.shape[0], x.shape[1], 8)
        h = self.norm(F.gelu(h) + x)
        return self.out(h.mean(1))


@pytest.mark.parametrize("composite", ["attnlrp", "cp-lrp"])
@pytest.mark.parametrize("masked", ["none", "fill", "additive"], ids=["no-mask", "masked-fill", "additive-mask"])
def test_fused_attention_rule_equals_the_eager_decomposition(composite: str, masked: str) -> None:
    """Causal masks with -inf, filled in or added, give no NaN and the same relevance as the fused kernel."""
    mask = torch.tril(torch.ones(5, 5, dtype=torch.bool)) if masked != "none" else None
    eager = Attention(fused=False, mask=mask, additive=masked == "additive").double().eval()
    fused = Attention(fused=True, mask=mask).double().eval()
    fused.load_state_dict(eager.state_dict())
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    # An added mask is a sum with a constant, which gets LRP-ε's stabiliser: compare without it.
    params = EXACT if masked == "additive" else {}
    a = relprop.explain(eager, x, target=2, composite=composite, **params)
    b = relprop.explain(fused, x, target=2, composite=composite, **params)
    assert torch.isfinite(a.relevance).all() and torch.isfinite(b.relevance).all()
    torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-9, atol=1e-12)
    assert a.ledger.closes(rtol=1e-9) and b.ledger.closes(rtol=1e-9)
    torch.testing.assert_close(a.ledger.absorbed, b.ledger.absorbed, rtol=1e-8, atol=1e-12)


def test_attnlrp_attention_is_the_gradient_with_uniform_splits() -> None:
    """Reference: q and k gradients scaled by 1/4, v by 1/2 (uniform rule on both products)."""
    model = Attention(fused=True).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    result = relprop.explain(model, x, target=0, composite="attnlrp", **EXACT)

    def scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
        return t * factor + (t * (1 - factor)).detach()

    def reference(z: torch.Tensor) -> torch.Tensor:
        q, k, v = model.qkv(z).view(z.shape[0], 5, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        h = F.scaled_dot_product_attention(scaled(q, 0.25), scaled(k, 0.25), scaled(v, 0.5))
        h = h.transpose(1, 2).reshape(z.shape[0], 5, 8)
        gelu_pass = h * (F.gelu(h) / h).detach()  # identity rule on GELU
        pre = gelu_pass + z
        mean = pre.mean(-1, keepdim=True)
        std = torch.sqrt(pre.var(-1, unbiased=False, keepdim=True) + model.norm.eps).detach()
        h = (pre - mean) / std * model.norm.weight + model.norm.bias
        return model.out(h.mean(1))

    torch.testing.assert_close(result.relevance, grad_x_input(reference, x, 0), rtol=1e-9, atol=1e-12)


def test_cp_lrp_conserves_relevance_exactly_without_biases() -> None:
    model = Attention(fused=True, bias=False).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    result = relprop.explain(model, x, target=1, composite="cp-lrp", **EXACT)
    torch.testing.assert_close(result.ledger.input_relevance, result.score, rtol=1e-10, atol=1e-12)
    attn = relprop.explain(model, x, target=1, composite="attnlrp", **EXACT)
    # AttnLRP's softmax rule is not conservative: the ledger shows where the rest went.
    assert attn.ledger.closes(rtol=1e-10)
    (row,) = [e for e in attn.ledger.entries if e.rule.startswith("attention")]
    assert float(row.absorbed.abs().max()) > 1e-8


class PythonGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class MLP(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.act = act
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def test_element_wise_modules_written_with_several_calls_pass_relevance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "ELEMENTWISE_MODULE_TYPES", {PythonGELU})
    model = MLP(PythonGELU()).double().eval()
    reference = MLP(nn.GELU(approximate="tanh")).double().eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64)
    explainer = relprop.Explainer(model, "attnlrp")
    result = explainer(x, target=1)
    expected = relprop.explain(reference, x, target=1, composite="attnlrp")
    torch.testing.assert_close(result.relevance, expected.relevance, rtol=1e-9, atol=1e-12)
    assert "PythonGELU" in explainer.rule_table(x)
    assert "pow" not in explainer.rule_table(x)


def test_transformers_activation_modules_are_element_wise() -> None:
    activations = pytest.importorskip("transformers.activations")
    assert ops.is_elementwise_module(activations.NewGELUActivation())
    assert not ops.is_elementwise_module(nn.Linear(2, 2))
    model = MLP(activations.NewGELUActivation()).double().eval()
    result = relprop.explain(model, torch.randn(2, 4, dtype=torch.float64), composite="attnlrp")
    assert result.ledger.closes(rtol=1e-10)


class BatchFirstAttention(nn.Module):
    def __init__(self, need_weights: bool) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)
        self.need_weights = need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.attention(x, x, x, need_weights=self.need_weights)
        return self.head((h + x).mean(1))


@pytest.mark.parametrize("composite", ["attnlrp", "cp-lrp"])
def test_multi_head_attention_runs_batch_first_with_per_sample_ledgers(composite: str) -> None:
    fused = BatchFirstAttention(need_weights=False).double().eval()
    eager = BatchFirstAttention(need_weights=True).double().eval()
    eager.load_state_dict(fused.state_dict())
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    batch = relprop.explain(fused, x, target=1, composite=composite)
    torch.testing.assert_close(
        batch.relevance, relprop.explain(eager, x, target=1, composite=composite).relevance, rtol=1e-9, atol=1e-12
    )
    assert batch.ledger.closes(rtol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(batch.output, fused(x))
    for i in range(3):
        single = relprop.explain(fused, x[i : i + 1], target=1, composite=composite)
        torch.testing.assert_close(single.relevance[0], batch.relevance[i], rtol=1e-9, atol=1e-12)
        for a, b in zip(single.ledger.entries, batch.ledger.entries, strict=True):
            torch.testing.assert_close(a.relevance_out[0], b.relevance_out[i], rtol=1e-9, atol=1e-12)


class Conv1D(nn.Module):
    """GPT-2's dense layer: addmm on the batch folded into the rows."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().t().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return out.view(*x.shape[:-1], -1)


def test_addmm_is_a_dense_layer_with_per_sample_ledger_rows() -> None:
    linear = nn.Linear(6, 5).double()
    folded = nn.Sequential(Conv1D(linear), nn.Flatten(), nn.Linear(20, 3)).double().eval()
    plain = nn.Sequential(linear, nn.Flatten(), nn.Linear(20, 3)).double().eval()
    plain[2].load_state_dict(folded[2].state_dict())
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    for composite in ("attnlrp", "gamma", "alpha2-beta1"):
        a = relprop.explain(folded, x, target=0, composite=composite)
        b = relprop.explain(plain, x, target=0, composite=composite)
        torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-9, atol=1e-12)
        assert a.ledger.closes(rtol=1e-9)
        torch.testing.assert_close(a.ledger.bias_absorbed, b.ledger.bias_absorbed, rtol=1e-9, atol=1e-12)


class ClassToken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(torch.tanh(h).sum(1))


def test_constants_merged_into_the_signal_take_their_share_in_the_ledger() -> None:
    model = ClassToken().double().eval()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    result = relprop.explain(model, x, target=0, composite="attnlrp", **EXACT)
    assert result.ledger.closes(rtol=1e-10)
    (row,) = [e for e in result.ledger.entries if e.function == "torch.cat"]
    # What the class token takes is exactly what does not reach the input.
    assert float(row.absorbed.abs().min()) > 0


def test_division_by_a_signal_is_a_normalisation() -> None:
    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)
            self.head = nn.Linear(4, 2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            return self.head(h / h.norm(dim=-1, keepdim=True))

    model = Normalised().double().eval()
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(relprop.UnsupportedOperationError, match="composite='attnlrp'"):
        relprop.explain(model, x, composite="epsilon")
    result = relprop.explain(model, x, target=1, composite="attnlrp", **EXACT)

    def reference(z: torch.Tensor) -> torch.Tensor:
        h = model.fc(z)
        return model.head(h / h.norm(dim=-1, keepdim=True).detach())

    torch.testing.assert_close(result.relevance, grad_x_input(reference, x, 1), rtol=1e-10, atol=1e-12)

"""Composite torch functions that the engine runs as their parts.

``F.multi_head_attention_forward`` (behind ``nn.MultiheadAttention``) and ``torch.addmm``
(behind GPT-2's ``Conv1D``) each compute several operations in one call. The engine runs
these functions (within its own torch function mode) as the plain operations below, so that
every part — the input and output projections, the attention itself — gets the rule the
composite gives it and its own ledger row. Multi-head attention runs batch first here (torch
computes it sequence first), so that every relevance-carrying tensor has the batch in its
first dimension as the ledger expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ModelStateError, UnsupportedOperationError, display_path

__all__ = ["DECOMPOSITIONS"]


def _addmm(
    path: str, bias: Tensor, mat1: Tensor, mat2: Tensor, *, beta: float = 1.0, alpha: float = 1.0, **kwargs: Any
) -> Tensor:
    """``beta · bias + alpha · mat1 @ mat2``: a dense layer ``F.linear(mat1, mat2ᵀ, bias)`` when it is one."""
    if kwargs.get("out") is not None:
        raise UnsupportedOperationError(
            f"module '{display_path(path)}' calls torch.addmm with out=; relprop cannot attach rules to it."
        )
    if beta == 1 and alpha == 1 and mat2.dim() == 2:
        return F.linear(mat1, mat2.t(), bias)
    product = torch.matmul(mat1, mat2)
    if alpha != 1:
        product = product * alpha
    return product + (bias if beta == 1 else bias * beta)


def _tensor_addmm(path: str, bias: Tensor, mat1: Tensor, mat2: Tensor, **kwargs: Any) -> Tensor:
    return _addmm(path, bias, mat1, mat2, **kwargs)


def _merge_masks(
    path: str,
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    batch: int,
    heads: int,
    target: int,
    source: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """One additive float mask ``(N, H or 1, L, S)`` from MHA's masks (``True`` means "do not attend")."""

    def additive(mask: Tensor) -> Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    merged: Tensor | None = None
    if attn_mask is not None:
        mask = additive(attn_mask)
        if mask.dim() == 2:
            mask = mask.view(1, 1, target, source)
        elif mask.dim() == 3:
            mask = mask.view(batch, heads, target, source)
        else:
            raise UnsupportedOperationError(
                f"multi-head attention in '{display_path(path)}' has an attn_mask of shape {tuple(attn_mask.shape)}; "
                "relprop supports (L, S) and (N * heads, L, S) masks."
            )
        merged = mask
    if key_padding_mask is not None:
        padding = additive(key_padding_mask).view(batch, 1, 1, source)
        merged = padding if merged is None else merged + padding
    return merged


def _multi_head_attention(
    path: str,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Tensor | None,
    in_proj_bias: Tensor | None,
    bias_k: Tensor | None,
    bias_v: Tensor | None,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    training: bool = True,
    key_padding_mask: Tensor | None = None,
    need_weights: bool = True,
    attn_mask: Tensor | None = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Tensor | None = None,
    k_proj_weight: Tensor | None = None,
    v_proj_weight: Tensor | None = None,
    static_k: Tensor | None = None,
    static_v: Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``F.multi_head_attention_forward`` as projections, scaled dot-product attention and a projection."""
    where = display_path(path)
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise UnsupportedOperationError(
            f"multi-head attention in '{where}' uses add_bias_kv, add_zero_attn or static keys; relprop supports "
            "nn.MultiheadAttention without them."
        )
    if training and dropout_p > 0:
        raise ModelStateError(f"multi-head attention at '{where}' has active dropout; call model.eval() first.")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    self_attention = query is key and key is value
    # torch lays the sequence first, (L, N, E); work batch first.
    q_in = query.transpose(0, 1)
    k_in = q_in if self_attention else key.transpose(0, 1)
    v_in = q_in if self_attention else value.transpose(0, 1)
    batch, target, embed = q_in.shape
    source = k_in.shape[1]
    if embed != embed_dim_to_check:
        raise UnsupportedOperationError(
            f"multi-head attention in '{where}' expected embedding size {embed_dim_to_check}, got {embed}."
        )
    if use_separate_proj_weight:
        assert q_proj_weight is not None and k_proj_weight is not None and v_proj_weight is not None
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        assert in_proj_weight is not None
        weights = tuple(in_proj_weight.chunk(3))  # type: ignore[assignment]
    biases = (None, None, None) if in_proj_bias is None else tuple(in_proj_bias.chunk(3))
    if self_attention and not use_separate_proj_weight:
        q, k, v = F.linear(q_in, in_proj_weight, in_proj_bias).chunk(3, dim=-1)  # type: ignore[arg-type]
    else:
        q = F.linear(q_in, weights[0], biases[0])
        k = F.linear(k_in, weights[1], biases[1])
        v = F.linear(v_in, weights[2], biases[2])
    head_dim = embed // num_heads
    q = q.reshape(batch, target, num_heads, head_dim).transpose(1, 2)
    k = k.reshape(batch, source, num_heads, head_dim).transpose(1, 2)
    v = v.reshape(batch, source, num_heads, v.shape[-1] // num_heads).transpose(1, 2)
    mask = _merge_masks(where, attn_mask, key_padding_mask, batch, num_heads, target, source, q.dtype)
    weights_out: Tensor | None = None
    if need_weights:
        scores = torch.matmul(q, k.transpose(-2, -1)) * (head_dim**-0.5)
        if mask is not None:
            scores = scores + mask
        probabilities = torch.softmax(scores, dim=-1)
        attended = torch.matmul(probabilities, v)
        weights_out = probabilities.mean(1) if average_attn_weights else probabilities
        if unbatched:
            weights_out = weights_out.squeeze(0)
    else:
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    attended = attended.transpose(1, 2).reshape(batch, target, -1)
    out = F.linear(attended, out_proj_weight, out_proj_bias).transpose(0, 1)
    if unbatched:
        out = out.squeeze(1)
    return out, weights_out


DECOMPOSITIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    torch.addmm: _addmm,
    torch.Tensor.addmm: _tensor_addmm,
    F.multi_head_attention_forward: _multi_head_attention,
}

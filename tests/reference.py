"""An independent, deliberately slow LRP reference for ``nn.Sequential`` networks.

It follows the seeds' four-step recipe layer by layer, carrying *relevance* (not
gradients) from the output down:

1. ``z = ε + ρ(layer)(a)``  2. ``s = R / z``  3. ``c = ∂(z·s)/∂a``  4. ``R = a·c``

Sign-split rules (generalised γ, αβ) apply the recipe once per sign combination of
inputs and weights. Nothing here is shared with relprop's implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def stab(z: Tensor, eps: float) -> Tensor:
    """Sign-aware stabiliser, sign(0) = +1."""
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    return z + eps * sign


def divide(r: Tensor, z: Tensor) -> Tensor:
    out = torch.zeros_like(r)
    nz = z != 0
    out[nz] = r[nz] / z[nz]
    return out


def forward_with(layer: nn.Module, a: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(a, weight, bias)
    assert isinstance(layer, nn.Conv2d)
    return F.conv2d(a, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def step3(fn: Callable[[Tensor], Tensor], a: Tensor, s: Tensor) -> Tensor:
    """c = ∂(Σ fn(a)·s)/∂a with s held constant."""
    a_ = a.detach().clone().requires_grad_(True)
    z = fn(a_)
    (c,) = torch.autograd.grad((z * s.detach()).sum(), a_)
    return c


def linear_rule(layer: nn.Module, a: Tensor, r: Tensor, spec: tuple[Any, ...]) -> Tensor:
    w = layer.weight.detach()
    b = None if layer.bias is None else layer.bias.detach()
    name = spec[0]
    ap, an = a.clamp(min=0), a.clamp(max=0)

    def fwd(weight: Tensor, bias: Tensor | None = None) -> Callable[[Tensor], Tensor]:
        return lambda t: forward_with(layer, t, weight, bias)

    if name == "epsilon":
        eps = spec[1]
        z = forward_with(layer, a, w, b)
        s = divide(r, z) if eps == 0 else r / stab(z, eps)
        return a * step3(fwd(w), a, s)
    if name == "gamma":
        gamma, eps = spec[1], spec[2]
        y = forward_with(layer, a, w, b)
        wa, wb = w + gamma * w.clamp(min=0), w + gamma * w.clamp(max=0)
        ba = None if b is None else b + gamma * b.clamp(min=0)
        bb = None if b is None else b + gamma * b.clamp(max=0)
        zp = forward_with(layer, ap, wa, ba) + forward_with(layer, an, wb, None)
        zn = forward_with(layer, ap, wb, bb) + forward_with(layer, an, wa, None)
        sp = torch.where(y > 0, r / stab(zp, eps), torch.zeros_like(r))
        sn = torch.where(y < 0, r / stab(zn, eps), torch.zeros_like(r))
        return (
            ap * step3(fwd(wa), ap, sp)
            + an * step3(fwd(wb), an, sp)
            + ap * step3(fwd(wb), ap, sn)
            + an * step3(fwd(wa), an, sn)
        )
    if name == "alpha-beta":
        alpha, beta, eps = spec[1], spec[2], spec[3]
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        bp = None if b is None else b.clamp(min=0)
        bn = None if b is None else b.clamp(max=0)
        z_pos = forward_with(layer, ap, wp, bp) + forward_with(layer, an, wn, None)
        z_neg = forward_with(layer, ap, wn, bn) + forward_with(layer, an, wp, None)
        sp = alpha * r / stab(z_pos, eps)
        sn = beta * r / stab(z_neg, eps)
        positive = ap * step3(fwd(wp), ap, sp) + an * step3(fwd(wn), an, sp)
        negative = ap * step3(fwd(wn), ap, sn) + an * step3(fwd(wp), an, sn)
        return positive - negative
    if name == "z-box":
        low, high, eps = spec[1], spec[2], spec[3]
        lo = (
            torch.as_tensor(low, dtype=a.dtype).expand_as(a)
            if torch.as_tensor(low).dim() == 0
            else (torch.as_tensor(low, dtype=a.dtype).view(1, -1, 1, 1).expand_as(a))
        )
        hi = (
            torch.as_tensor(high, dtype=a.dtype).expand_as(a)
            if torch.as_tensor(high).dim() == 0
            else (torch.as_tensor(high, dtype=a.dtype).view(1, -1, 1, 1).expand_as(a))
        )
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        z = forward_with(layer, a, w, None) - forward_with(layer, lo, wp, None) - forward_with(layer, hi, wn, None)
        s = r / stab(z, eps)
        return a * step3(fwd(w), a, s) - lo * step3(fwd(wp), lo, s) - hi * step3(fwd(wn), hi, s)
    if name == "flat":
        eps = spec[1]
        ones_w = torch.ones_like(w)
        z = forward_with(layer, torch.ones_like(a), ones_w, None)
        s = r / stab(z, eps)
        return step3(fwd(ones_w), torch.ones_like(a), s)
    if name == "w-square":
        eps = spec[1]
        w2 = w * w
        z = forward_with(layer, torch.ones_like(a), w2, None)
        s = r / stab(z, eps)
        return step3(fwd(w2), torch.ones_like(a), s)
    if name == "modified":
        rho, eps = spec[1], spec[2]
        wr = rho(w)
        z = stab(forward_with(layer, a, wr, b), eps) if eps else forward_with(layer, a, wr, b)
        s = divide(r, z)
        return a * step3(fwd(wr), a, s)
    raise ValueError(name)


def structural(layer: nn.Module, a: Tensor, r: Tensor, maxpool: str = "wta", eps: float = 1e-6) -> Tensor:
    if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
        return r  # relevance passes element-wise
    if isinstance(layer, nn.Flatten):
        return r.reshape(a.shape)
    if isinstance(layer, nn.MaxPool2d):
        if maxpool == "wta":
            return step3(lambda t: F.max_pool2d(t, layer.kernel_size, layer.stride, layer.padding), a, r)
        k = layer.kernel_size

        def window_sum(t: Tensor) -> Tensor:
            return F.avg_pool2d(t, k, layer.stride, layer.padding) * (k * k)

        z = window_sum(a)
        return a * step3(window_sum, a, r / stab(z, eps))
    if isinstance(layer, nn.AvgPool2d):

        def pool(t: Tensor) -> Tensor:
            return F.avg_pool2d(t, layer.kernel_size, layer.stride, layer.padding)

        z = pool(a)
        return a * step3(pool, a, r / stab(z, eps))
    raise TypeError(type(layer))


def activations_of(net: nn.Sequential, x: Tensor) -> list[Tensor]:
    """The input of every layer, and the network output last."""
    activations = [x]
    with torch.no_grad():
        for layer in net:
            activations.append(layer(activations[-1]))
    return activations


def reference_lrp(
    net: nn.Sequential,
    x: Tensor,
    target: Tensor,
    spec_for: Callable[[int, nn.Module], tuple[Any, ...]],
    maxpool: str = "wta",
) -> Tensor:
    """Relevance of ``x`` for ``target``, starting from the logit (R = z_c at the top)."""
    out = activations_of(net, x)[-1]
    r = torch.zeros_like(out)
    idx = torch.arange(out.shape[0])
    r[idx, target] = out[idx, target]
    return reference_lrp_from(net, x, r, spec_for, maxpool)


def reference_lrp_from(
    net: nn.Sequential,
    x: Tensor,
    r: Tensor,
    spec_for: Callable[[int, nn.Module], tuple[Any, ...]],
    maxpool: str = "wta",
) -> Tensor:
    """Relevance of ``x`` given the relevance ``r`` at the network output."""
    activations = activations_of(net, x)
    for i in reversed(range(len(net))):
        layer, a = net[i], activations[i]
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            r = linear_rule(layer, a, r, spec_for(i, layer))
        else:
            r = structural(layer, a, r, maxpool=maxpool)
    return r


def bias_share(layer: nn.Module, a: Tensor, r: Tensor, spec: tuple[Any, ...]) -> Tensor:
    """Per-sample relevance the bias of ``layer`` takes (LRP-ε and the sign-split rules γ, αβ).

    Written from the rules' definitions: the bias is one more input ``a_0 = 1`` whose weight is
    split by sign like any other (``b + γb⁺`` explaining positive outputs, ``b + γb⁻`` negative
    ones; ``b⁺`` in the positive and ``b⁻`` in the negative αβ part).
    """
    w = layer.weight.detach()
    b = layer.bias.detach()
    ap, an = a.clamp(min=0), a.clamp(max=0)
    shape = (1, -1) + (1,) * (r.dim() - 2)
    if spec[0] == "epsilon":
        z = forward_with(layer, a, w, b)
        share = (divide(r, z) if spec[1] == 0 else r / stab(z, spec[1])) * b.view(shape)
    elif spec[0] == "gamma":
        gamma, eps = spec[1], spec[2]
        y = forward_with(layer, a, w, b)
        wa, wb = w + gamma * w.clamp(min=0), w + gamma * w.clamp(max=0)
        ba, bb = b + gamma * b.clamp(min=0), b + gamma * b.clamp(max=0)
        zp = forward_with(layer, ap, wa, ba) + forward_with(layer, an, wb, None)
        zn = forward_with(layer, ap, wb, bb) + forward_with(layer, an, wa, None)
        sp = torch.where(y > 0, r / stab(zp, eps), torch.zeros_like(r))
        sn = torch.where(y < 0, r / stab(zn, eps), torch.zeros_like(r))
        share = sp * ba.view(shape) + sn * bb.view(shape)
    elif spec[0] == "alpha-beta":
        alpha, beta, eps = spec[1], spec[2], spec[3]
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        bp, bn = b.clamp(min=0), b.clamp(max=0)
        z_pos = forward_with(layer, ap, wp, bp) + forward_with(layer, an, wn, None)
        z_neg = forward_with(layer, ap, wn, bn) + forward_with(layer, an, wp, None)
        share = alpha * r / stab(z_pos, eps) * bp.view(shape) - beta * r / stab(z_neg, eps) * bn.view(shape)
    else:
        raise ValueError(spec[0])
    return share.reshape(share.shape[0], -1).sum(1)


def reference_bias_shares(
    net: nn.Sequential, x: Tensor, target: Tensor, spec_for: Callable[[int, nn.Module], tuple[Any, ...]]
) -> dict[int, Tensor]:
    """The bias share of every conv/dense layer (by index in ``net``) while propagating from the logit."""
    activations = activations_of(net, x)
    out = activations[-1]
    r = torch.zeros_like(out)
    idx = torch.arange(out.shape[0])
    r[idx, target] = out[idx, target]
    shares: dict[int, Tensor] = {}
    for i in reversed(range(len(net))):
        layer, a = net[i], activations[i]
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            shares[i] = bias_share(layer, a, r, spec_for(i, layer))
            r = linear_rule(layer, a, r, spec_for(i, layer))
        else:
            r = structural(layer, a, r)
    return shares

"""Fake quantization in plain PyTorch: the CPU path of `fake_quantize` and the oracle of its kernel.

One formula everywhere (docs/DEVELOPING.md), in float32:
    q = clamp(round(x / scale) + zero_point, qmin, qmax);   x_hat = (q - zero_point) * scale
`round` is round-half-to-even (torch.round), so the codec's dequantized weights equal the
fake-quantized ones bit for bit.

Gradient (straight-through estimator, "clipped" variant, as torch.fake_quantize_per_channel_affine):
d x_hat / d x = 1 where round(x / scale) + zero_point lies inside [qmin, qmax], and 0 where the value
was clamped. Scale and zero point get no gradient (they are statistics of the weights, not learned).

Rate: `bits` is the ideal code length of the quantized symbols under their own empirical pmf over
the whole tensor, sum_i -log2 p(q_i) (what the codec's ANS stage with an empirical table costs,
less the table). Its gradient comes from a piecewise-linear proxy: the pmf (held fixed, which is
exact to first order because the empirical pmf minimises the code length) is interpolated
linearly between integer symbols, p~(u) = (1 - f) p(k) + f p(k + 1) with u = x/scale + zp,
k = floor(u), f = u - k; then d bits / d x = -(p(k+1) - p(k)) / (ln 2 p~(u) scale), which pushes
values towards the more populated neighbouring symbol. p~ equals p at every integer, so the proxy
agrees with the reported bits at the quantized points. Clamped elements get no rate gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2.0)


def channel_layout(
    x: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None
) -> tuple[Tensor, Tensor, int]:
    """Flatten per-channel parameters to float32 vectors (C,) and return the inner stride.

    Element i of the contiguous `x` belongs to channel (i // inner) % C. Per-tensor (axis None):
    C = 1. `scale` and `zero_point` may have any shape with C elements (e.g. quant_params' output).
    """
    scale = torch.as_tensor(scale, device=x.device)
    zero_point = torch.as_tensor(zero_point, device=x.device)
    if axis is None:
        channels, inner = 1, 1
    else:
        if x.dim() == 0:
            raise ValueError("per-channel fake quantization needs a tensor with at least one dimension")
        axis = axis % x.dim()
        channels = x.shape[axis]
        inner = math.prod(x.shape[axis + 1 :])
    if scale.numel() != channels or zero_point.numel() != channels:
        raise ValueError(
            f"scale/zero_point must have {channels} element(s) for axis={axis}, "
            f"got {scale.numel()} and {zero_point.numel()}"
        )
    s = scale.detach().reshape(channels).to(torch.float32).contiguous()
    z = zero_point.detach().reshape(channels).to(torch.float32).contiguous()
    return s, z, max(inner, 1)


def _broadcast(vec: Tensor) -> Tensor:
    """View a (C,) vector so it broadcasts against x viewed as (outer, C, inner)."""
    return vec.view(1, -1, 1)


def _as3d(x: Tensor, channels: int, inner: int) -> Tensor:
    return x.reshape(-1, channels, inner)


def fq_forward_ref(
    x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int
) -> tuple[Tensor, Tensor]:
    """(x_hat in x's dtype, q as float32 symbols), with (C,) float32 scale/zp and the inner stride."""
    x3 = _as3d(x.to(torch.float32), scale.numel(), inner)
    s, z = _broadcast(scale), _broadcast(zp)
    q = torch.clamp(torch.round(x3 / s) + z, qmin, qmax)
    x_hat = (q - z) * s
    return x_hat.reshape(x.shape).to(x.dtype), q.reshape(x.shape)


def fq_backward_ref(
    grad: Tensor, x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int
) -> Tensor:
    """Clipped straight-through gradient: `grad` where round(x/scale)+zp is inside [qmin, qmax]."""
    x3 = _as3d(x.to(torch.float32), scale.numel(), inner)
    s, z = _broadcast(scale), _broadcast(zp)
    r = torch.round(x3 / s) + z
    inside = (r >= qmin) & (r <= qmax)
    g = _as3d(grad.to(torch.float32), scale.numel(), inner)
    return torch.where(inside, g, torch.zeros_like(g)).reshape(x.shape).to(grad.dtype)


def pmf_and_bits(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Empirical pmf (float32) and total bits sum_k c_k log2(n / c_k) (float32 scalar) from counts."""
    c = counts.to(torch.float64)
    n = c.sum().clamp_min(1.0)
    used = c > 0
    bits = (c[used] * torch.log2(n / c[used])).sum()
    return (c / n).to(torch.float32), bits.to(torch.float32)


def fq_rate_forward_ref(
    x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_hat, bits, pmf over qmin..qmax) of the fake-quantized tensor."""
    x_hat, q = fq_forward_ref(x, scale, zp, qmin, qmax, inner)
    counts = torch.bincount((q.reshape(-1) - qmin).to(torch.int64), minlength=qmax - qmin + 1)
    pmf, bits = pmf_and_bits(counts)
    return x_hat, bits, pmf


def fq_rate_backward_ref(
    grad: Tensor,
    grad_bits: Tensor,
    x: Tensor,
    scale: Tensor,
    zp: Tensor,
    pmf: Tensor,
    qmin: int,
    qmax: int,
    inner: int,
) -> Tensor:
    """STE gradient of x_hat plus grad_bits times the linear-pmf rate proxy's gradient (see module doc)."""
    channels = scale.numel()
    x3 = _as3d(x.to(torch.float32), channels, inner)
    s, z = _broadcast(scale), _broadcast(zp)
    v = x3 / s
    r = torch.round(v) + z
    inside = (r >= qmin) & (r <= qmax)
    g = _as3d(grad.to(torch.float32), channels, inner)
    if qmax > qmin:
        u = torch.clamp(v + z, qmin, qmax)
        k = torch.clamp(torch.floor(u), qmin, qmax - 1)
        f = u - k
        idx = (k - qmin).to(torch.int64)
        pk, pk1 = pmf[idx], pmf[idx + 1]
        pt = torch.clamp((1.0 - f) * pk + f * pk1, min=1e-30)
        drate = (pk - pk1) / (LN2 * pt) / s
        g = g + grad_bits.to(torch.float32) * drate
    return torch.where(inside, g, torch.zeros_like(g)).reshape(x.shape).to(grad.dtype)


class _FakeQuantRef(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax, inner):  # type: ignore[override]
        ctx.save_for_backward(x, scale, zp)
        ctx.args = (qmin, qmax, inner)
        return fq_forward_ref(x, scale, zp, qmin, qmax, inner)[0]

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, scale, zp = ctx.saved_tensors
        return fq_backward_ref(grad, x, scale, zp, *ctx.args), None, None, None, None, None


class _FakeQuantRateRef(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax, inner):  # type: ignore[override]
        x_hat, bits, pmf = fq_rate_forward_ref(x, scale, zp, qmin, qmax, inner)
        ctx.save_for_backward(x, scale, zp, pmf)
        ctx.args = (qmin, qmax, inner)
        return x_hat, bits

    @staticmethod
    def backward(ctx, grad, grad_bits):  # type: ignore[override]
        x, scale, zp, pmf = ctx.saved_tensors
        gx = fq_rate_backward_ref(grad, grad_bits, x, scale, zp, pmf, *ctx.args)
        return gx, None, None, None, None, None


def _check_range(qmin: int, qmax: int) -> None:
    if not qmin <= qmax:
        raise ValueError(f"need qmin <= qmax, got {qmin} > {qmax}")
    if qmax - qmin > 2**16:
        raise ValueError(f"at most 16-bit symbols are supported, got range {qmin}..{qmax}")


def fake_quantize_ref(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> Tensor:
    """Reference fake quantization (x_hat with the clipped straight-through gradient)."""
    _check_range(qmin, qmax)
    s, z, inner = channel_layout(x, scale, zero_point, axis)
    return _FakeQuantRef.apply(x, s, z, int(qmin), int(qmax), inner)


def fake_quantize_with_rate_ref(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None
) -> tuple[Tensor, Tensor]:
    """Reference of `fake_quantize_with_rate`: (x_hat, bits) with the STE and the rate-proxy gradient."""
    _check_range(qmin, qmax)
    s, z, inner = channel_layout(x, scale, zero_point, axis)
    return _FakeQuantRateRef.apply(x, s, z, int(qmin), int(qmax), inner)

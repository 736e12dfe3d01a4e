"""Fused fake quantization (per channel) with the symbol histogram, and its STE + rate backward.

Forward reads x once and writes x_hat once; with the rate it also builds the histogram of the
symbols (a per-block `tl.histogram` added atomically, or per-element atomics for > 4096 bins).
The math is `fake_quant_ref`'s, element for element (float32, exact division, ties to even).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..fake_quant_ref import pmf_and_bits
from .common import next_pow2, round_half_even

BLOCK = 1024
MAX_BLOCK_HIST_BINS = 4096
LN2 = math.log(2.0)


@triton.jit
def _load_block(x_ptr, s_ptr, z_ptr, n, channels, inner, BLOCK: tl.constexpr):
    """This program's offsets and mask, its x in float32, and each element's channel scale and zero point."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    ch = (offs // inner) % channels
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + ch, mask=mask, other=1.0)
    z = tl.load(z_ptr + ch, mask=mask, other=0.0)
    return offs, mask, x, s, z


@triton.jit
def fq_fwd_kernel(
    x_ptr,
    s_ptr,
    z_ptr,
    out_ptr,
    counts_ptr,
    n,
    channels,
    inner,
    qmin,
    qmax,
    BLOCK: tl.constexpr,
    RATE: tl.constexpr,
    HIST_BINS: tl.constexpr,
):
    offs, mask, x, s, z = _load_block(x_ptr, s_ptr, z_ptr, n, channels, inner, BLOCK)
    q = round_half_even(tl.math.div_rn(x, s)) + z
    q = tl.minimum(tl.maximum(q, qmin), qmax)
    tl.store(out_ptr + offs, ((q - z) * s).to(out_ptr.dtype.element_ty), mask=mask)
    if RATE:
        sym = (q - qmin).to(tl.int32)
        if HIST_BINS > 0:
            hist = tl.histogram(tl.where(mask, sym, 0), HIST_BINS)
            bins = tl.arange(0, HIST_BINS)
            invalid = BLOCK - tl.sum(mask.to(tl.int32), axis=0)
            hist = hist - tl.where(bins == 0, invalid, 0)
            tl.atomic_add(counts_ptr + bins, hist, mask=hist > 0)
        else:
            tl.atomic_add(counts_ptr + sym, tl.full([BLOCK], 1, tl.int32), mask=mask)


@triton.jit
def fq_bwd_kernel(
    g_ptr,
    x_ptr,
    s_ptr,
    z_ptr,
    pmf_ptr,
    gbits_ptr,
    out_ptr,
    n,
    channels,
    inner,
    qmin,
    qmax,
    BLOCK: tl.constexpr,
    RATE: tl.constexpr,
):
    offs, mask, x, s, z = _load_block(x_ptr, s_ptr, z_ptr, n, channels, inner, BLOCK)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.math.div_rn(x, s)
    r = round_half_even(v) + z
    inside = (r >= qmin) & (r <= qmax)
    if RATE:
        u = tl.minimum(tl.maximum(v + z, qmin), qmax)
        k = tl.minimum(tl.maximum(tl.floor(u), qmin), qmax - 1.0)
        f = u - k
        idx = (k - qmin).to(tl.int32)
        pk = tl.load(pmf_ptr + idx, mask=mask, other=1.0)
        pk1 = tl.load(pmf_ptr + idx + 1, mask=mask, other=1.0)
        pt = tl.maximum((1.0 - f) * pk + f * pk1, 1e-30)
        gb = tl.load(gbits_ptr)
        g = g + gb * ((pk - pk1) / (0.6931471805599453 * pt) / s)
    tl.store(out_ptr + offs, tl.where(inside, g, 0.0).to(out_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (max(triton.cdiv(n, BLOCK), 1),)


def _forward(x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int, rate: bool):
    x = x.contiguous()
    out = torch.empty_like(x)
    nbins = qmax - qmin + 1
    counts = torch.zeros(nbins if rate else 1, dtype=torch.int32, device=x.device)
    hist_bins = next_pow2(nbins) if rate and next_pow2(nbins) <= MAX_BLOCK_HIST_BINS else 0
    if x.numel():
        fq_fwd_kernel[_grid(x.numel())](
            x,
            scale,
            zp,
            out,
            counts,
            x.numel(),
            scale.numel(),
            inner,
            float(qmin),
            float(qmax),
            BLOCK=BLOCK,
            RATE=rate,
            HIST_BINS=hist_bins,
        )
    return out, counts


def fq_forward(x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int) -> Tensor:
    """x_hat (x's dtype) of the per-channel fake quantization."""
    return _forward(x, scale, zp, qmin, qmax, inner, rate=False)[0]


def fq_rate_forward(
    x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(x_hat, bits, pmf): fake quantization and the empirical code length of its symbols."""
    out, counts = _forward(x, scale, zp, qmin, qmax, inner, rate=True)
    pmf, bits = pmf_and_bits(counts)
    return out, bits, pmf


def _backward(grad, grad_bits, x, scale, zp, pmf, qmin, qmax, inner, rate):
    out = torch.empty_like(grad)
    if x.numel():
        fq_bwd_kernel[_grid(x.numel())](
            grad,
            x,
            scale,
            zp,
            pmf,
            grad_bits,
            out,
            x.numel(),
            scale.numel(),
            inner,
            float(qmin),
            float(qmax),
            BLOCK=BLOCK,
            RATE=rate,
        )
    return out


def fq_backward(
    grad: Tensor, x: Tensor, scale: Tensor, zp: Tensor, qmin: int, qmax: int, inner: int
) -> Tensor:
    """Clipped straight-through gradient."""
    dummy = scale.new_zeros(1)
    return _backward(grad, dummy, x, scale, zp, dummy, qmin, qmax, inner, rate=False)


def fq_rate_backward(
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
    """Straight-through gradient plus grad_bits times the rate proxy's gradient."""
    gb = grad_bits.to(torch.float32).reshape(1).contiguous()
    return _backward(grad, gb, x, scale, zp, pmf, qmin, qmax, inner, rate=qmax > qmin)

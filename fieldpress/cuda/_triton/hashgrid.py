"""Multiresolution hash-grid encoding (tiny-cuda-nn layout), forward and backward, in Triton.

One program per (block of points, level). The level table (resolution, offset, size, mode) and
the float32 scales come from `HashGridSpec`; the index rules are `hashgrid_ref`'s: position
fma(scale, x, 0.5) (float64 product, one rounding), uint32 coherent-prime hash or dense index,
always `% size`. Features are accumulated in float32 and stored as float32 or float16. The
backward adds into a float32 table with atomics and, when asked, returns d/dx as well.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import next_pow2
from .tuning import LaunchConfig, choose

MODE_DENSE, MODE_HASH, MODE_ZERO = 0, 1, 2
INTERP = {"Nearest": 0, "Linear": 1, "Smoothstep": 2}

# Points per program and warps; the first is the default (untuned runs, the interpreter). One
# point per thread keeps registers low (40-58 on sm_90, no spills) and occupancy high for the
# gathers and atomics; two points a thread doubled the registers (186 in the backward).
CONFIGS = (
    LaunchConfig.of(BLOCK=128, num_warps=4),
    LaunchConfig.of(BLOCK=64, num_warps=2),
    LaunchConfig.of(BLOCK=256, num_warps=8),
    LaunchConfig.of(BLOCK=512, num_warps=16),
)


@triton.jit
def _axis(x_ptr, rn, nmask, scale, k: tl.constexpr, D: tl.constexpr, INTERPOLATION: tl.constexpr):
    """(weight-ready fraction, raw fraction, uint32 floor) of dimension k; dummies beyond D."""
    if k < D:
        xk = tl.load(x_ptr + rn * D + k, mask=nmask, other=0.0).to(tl.float64)
        pos = (xk * scale + 0.5).to(tl.float32)
        fl = tl.floor(pos)
        frac = pos - fl
        base = fl.to(tl.int32).to(tl.uint32, bitcast=True)
    else:
        frac = tl.zeros(rn.shape, tl.float32)
        base = tl.zeros(rn.shape, tl.uint32)
    if INTERPOLATION == 2:
        w = frac * frac * (3.0 - 2.0 * frac)
    else:
        w = frac
    return w, frac, base


@triton.jit
def _corner_entry(b0, b1, b2, c: tl.constexpr, res, size, mode, offset):
    """Table entry (int64, level offset included) of corner c of the cell with floors b0..b2."""
    c0 = b0 + (c & 1)
    c1 = b1 + ((c >> 1) & 1)
    c2 = b2 + ((c >> 2) & 1)
    p1 = tl.full(c1.shape, 2654435761, tl.uint32)
    p2 = tl.full(c2.shape, 805459861, tl.uint32)
    hashed = c0 ^ (c1 * p1) ^ (c2 * p2)
    res_u = res.to(tl.uint32)
    dense = c0 + c1 * res_u + c2 * (res_u * res_u)
    idx = tl.where(mode == 1, hashed, tl.where(mode == 2, 0, dense).to(tl.uint32))
    idx = idx % size.to(tl.uint32)
    return offset + idx.to(tl.int64)


@triton.jit
def _corner_weight(w0, w1, w2, c: tl.constexpr, D: tl.constexpr):
    a = tl.where((c & 1) != 0, w0, 1.0 - w0)
    if D >= 2:
        a = a * tl.where((c & 2) != 0, w1, 1.0 - w1)
    if D >= 3:
        a = a * tl.where((c & 4) != 0, w2, 1.0 - w2)
    return a


@triton.jit
def _level_setup(x_ptr, table_ptr, scale_ptr, rn, nmask, level, D: tl.constexpr, INTERPOLATION: tl.constexpr):
    """One level's (resolution, offset, size, mode, scale) and each axis' (weight, fraction, base cell)."""
    res = tl.load(table_ptr + level * 4)
    offset = tl.load(table_ptr + level * 4 + 1)
    size = tl.load(table_ptr + level * 4 + 2)
    mode = tl.load(table_ptr + level * 4 + 3)
    scale = tl.load(scale_ptr + level)
    w0, f0, b0 = _axis(x_ptr, rn, nmask, scale, 0, D, INTERPOLATION)
    w1, f1, b1 = _axis(x_ptr, rn, nmask, scale, 1, D, INTERPOLATION)
    w2, f2, b2 = _axis(x_ptr, rn, nmask, scale, 2, D, INTERPOLATION)
    return res, offset, size, mode, scale, w0, f0, b0, w1, f1, b1, w2, f2, b2


@triton.jit
def hashgrid_fwd_kernel(
    x_ptr,
    params_ptr,
    table_ptr,
    scale_ptr,
    out_ptr,
    n,
    n_levels,
    D: tl.constexpr,
    F: tl.constexpr,
    INTERPOLATION: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rn = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    level = tl.program_id(1)
    nmask = rn < n
    rf = tl.arange(0, F)
    res, offset, size, mode, _scale, w0, _f0, b0, w1, _f1, b1, w2, _f2, b2 = _level_setup(
        x_ptr, table_ptr, scale_ptr, rn, nmask, level, D, INTERPOLATION
    )
    fmask = nmask[:, None] & (rf[None, :] < F)
    acc = tl.zeros([BLOCK, F], tl.float32)
    if INTERPOLATION == 0:
        entry = _corner_entry(b0, b1, b2, 0, res, size, mode, offset)
        acc = tl.load(params_ptr + entry[:, None] * F + rf[None, :], mask=fmask, other=0.0).to(tl.float32)
    else:
        for c in tl.static_range(2**D):
            entry = _corner_entry(b0, b1, b2, c, res, size, mode, offset)
            vals = tl.load(params_ptr + entry[:, None] * F + rf[None, :], mask=fmask, other=0.0)
            weight = _corner_weight(w0, w1, w2, c, D)
            acc += weight[:, None] * vals.to(tl.float32)
    cols = level * F + rf
    tl.store(
        out_ptr + rn[:, None] * (n_levels * F) + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=fmask
    )


@triton.jit
def _dweight(w0, w1, w2, c: tl.constexpr, k: tl.constexpr, D: tl.constexpr):
    """d(corner weight)/d(w_k) for corner c."""
    a = tl.where(((c >> k) & 1) != 0, 1.0, -1.0) + tl.zeros_like(w0)
    if k != 0:
        a = a * tl.where((c & 1) != 0, w0, 1.0 - w0)
    if D >= 2 and k != 1:
        a = a * tl.where((c & 2) != 0, w1, 1.0 - w1)
    if D >= 3 and k != 2:
        a = a * tl.where((c & 4) != 0, w2, 1.0 - w2)
    return a


@triton.jit
def _dsmooth(frac, INTERPOLATION: tl.constexpr):
    if INTERPOLATION == 2:
        return 6.0 * frac * (1.0 - frac)
    else:
        return tl.full(frac.shape, 1.0, tl.float32)


@triton.jit
def hashgrid_bwd_kernel(
    grad_ptr,
    x_ptr,
    params_ptr,
    table_ptr,
    scale_ptr,
    gparams_ptr,
    gx_ptr,
    n,
    n_levels,
    D: tl.constexpr,
    F: tl.constexpr,
    INTERPOLATION: tl.constexpr,
    BLOCK: tl.constexpr,
    NEED_X: tl.constexpr,
):
    rn = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    level = tl.program_id(1)
    nmask = rn < n
    rf = tl.arange(0, F)
    res, offset, size, mode, scale, w0, f0, b0, w1, f1, b1, w2, f2, b2 = _level_setup(
        x_ptr, table_ptr, scale_ptr, rn, nmask, level, D, INTERPOLATION
    )
    fmask = nmask[:, None] & (rf[None, :] < F)
    cols = level * F + rf
    g = tl.load(grad_ptr + rn[:, None] * (n_levels * F) + cols[None, :], mask=fmask, other=0.0).to(tl.float32)
    if INTERPOLATION == 0:
        entry = _corner_entry(b0, b1, b2, 0, res, size, mode, offset)
        tl.atomic_add(gparams_ptr + entry[:, None] * F + rf[None, :], g, mask=fmask)
    else:
        gw0 = tl.zeros([BLOCK], tl.float32)
        gw1 = tl.zeros([BLOCK], tl.float32)
        gw2 = tl.zeros([BLOCK], tl.float32)
        for c in tl.static_range(2**D):
            entry = _corner_entry(b0, b1, b2, c, res, size, mode, offset)
            weight = _corner_weight(w0, w1, w2, c, D)
            tl.atomic_add(gparams_ptr + entry[:, None] * F + rf[None, :], weight[:, None] * g, mask=fmask)
            if NEED_X:
                vals = tl.load(params_ptr + entry[:, None] * F + rf[None, :], mask=fmask, other=0.0)
                gv = tl.sum(vals.to(tl.float32) * g, axis=1)
                gw0 += gv * _dweight(w0, w1, w2, c, 0, D)
                if D >= 2:
                    gw1 += gv * _dweight(w0, w1, w2, c, 1, D)
                if D >= 3:
                    gw2 += gv * _dweight(w0, w1, w2, c, 2, D)
        if NEED_X:
            s32 = scale.to(tl.float32)
            tl.atomic_add(gx_ptr + rn * D, gw0 * _dsmooth(f0, INTERPOLATION) * s32, mask=nmask)
            if D >= 2:
                tl.atomic_add(gx_ptr + rn * D + 1, gw1 * _dsmooth(f1, INTERPOLATION) * s32, mask=nmask)
            if D >= 3:
                tl.atomic_add(gx_ptr + rn * D + 2, gw2 * _dsmooth(f2, INTERPOLATION) * s32, mask=nmask)


@functools.lru_cache(maxsize=64)
def _level_tensors(
    resolutions: tuple[int, ...],
    offsets: tuple[int, ...],
    sizes: tuple[int, ...],
    modes: tuple[int, ...],
    scales: tuple[float, ...],
    device: str,
) -> tuple[Tensor, Tensor]:
    table = torch.tensor(list(zip(resolutions, offsets, sizes, modes)), dtype=torch.int64).reshape(-1, 4)
    return table.to(device), torch.tensor(scales, dtype=torch.float64).to(device)


def level_table(resolutions, offsets, sizes, modes, scales, device: torch.device) -> tuple[Tensor, Tensor]:
    """(L, 4) int64 [resolution, offset, size, mode] and (L,) float64 scales on `device` (cached)."""
    return _level_tensors(
        tuple(resolutions), tuple(offsets), tuple(sizes), tuple(modes), tuple(scales), str(device)
    )


def _check(d: int, f: int) -> None:
    if not 1 <= d <= 3:
        raise ValueError(f"the Triton hash-grid kernel supports 1 to 3 input dimensions, got {d}")
    if f != next_pow2(f):
        raise ValueError(f"n_features_per_level must be a power of two, got {f}")


def _key(x: Tensor, n_levels: int, n_features: int, interpolation: int, dtype: torch.dtype) -> tuple:
    return (x.shape[1], n_levels, n_features, interpolation, str(dtype), next_pow2(x.shape[0]))


def hashgrid_forward(
    x: Tensor,
    params: Tensor,
    table: Tensor,
    scales: Tensor,
    n_features: int,
    interpolation: int,
    out_dtype: torch.dtype,
    config: LaunchConfig | None = None,
) -> Tensor:
    """(N, L*F) features in `out_dtype` (`config`: a fixed launch, else the tuned one)."""
    n, d = x.shape
    n_levels = table.shape[0]
    _check(d, n_features)
    out = torch.empty(n, n_levels * n_features, dtype=out_dtype, device=x.device)
    if not (n and n_levels):
        return out
    x, params = x.contiguous(), params.contiguous()

    def launch(cfg: LaunchConfig) -> None:
        hashgrid_fwd_kernel[(triton.cdiv(n, cfg.block("BLOCK")), n_levels)](
            x,
            params,
            table,
            scales,
            out,
            n,
            n_levels,
            D=d,
            F=n_features,
            INTERPOLATION=interpolation,
            **cfg.kwargs(),
        )

    key = _key(x, n_levels, n_features, interpolation, out_dtype)
    launch(config or choose("hashgrid_fwd", key, CONFIGS, launch, x.device))
    return out


def hashgrid_backward(
    grad: Tensor,
    x: Tensor,
    params: Tensor,
    table: Tensor,
    scales: Tensor,
    n_features: int,
    interpolation: int,
    need_x: bool,
    config: LaunchConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """(grad_x float32 (N, d) (zeros unless need_x), grad_params float32 (P,))."""
    n, d = x.shape
    n_levels = table.shape[0]
    _check(d, n_features)
    gparams = torch.zeros(params.shape, dtype=torch.float32, device=params.device)
    gx = torch.zeros(n, d, dtype=torch.float32, device=x.device)
    if not (n and n_levels):
        return gx, gparams
    grad, x, params = grad.contiguous(), x.contiguous(), params.contiguous()
    need_x = need_x and interpolation != 0

    def launch(cfg: LaunchConfig) -> None:
        hashgrid_bwd_kernel[(triton.cdiv(n, cfg.block("BLOCK")), n_levels)](
            grad,
            x,
            params,
            table,
            scales,
            gparams,
            gx,
            n,
            n_levels,
            D=d,
            F=n_features,
            INTERPOLATION=interpolation,
            NEED_X=need_x,
            **cfg.kwargs(),
        )

    def reset() -> None:  # tuning launches accumulated into the outputs
        gparams.zero_()
        gx.zero_()

    key = (*_key(x, n_levels, n_features, interpolation, grad.dtype), need_x)
    launch(config or choose("hashgrid_bwd", key, CONFIGS, launch, x.device, reset))
    return gx, gparams

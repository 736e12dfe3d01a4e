"""Fused VQ assignment (distance + running arg-min over codebook tiles) and the weighted centroid sums.

Assignment: one program per block of points; it walks the codebook in tiles of BLOCK_K entries,
ranks them by ||c||^2 - 2 x.c (one `tl.dot` per tile, D padded to a power of two) and keeps the
running minimum, so no N x K matrix ever exists. The winner's exact squared distance is then
recomputed from the vectors. Update: atomic adds of w * x and w into (K, D) sums and (K,) counts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..vq_ref import finish_centroids
from .common import next_pow2
from .tuning import LaunchConfig, choose

MAX_DIM = 128
# (rows per program, codewords per tile, warps, pipeline stages) by precision and padded width
# (up to 64, up to 128); the first is the default. Three-pass TF32 products run on tensor cores;
# plain float32 ("ieee") keeps its products in registers and needs smaller tiles. The compile
# check builds every candidate for sm_90: all fit the shared memory and none spills registers
# (larger tiles, and most 128-wide ones, do).
ASSIGN_CONFIGS: dict[tuple[str, int], tuple[LaunchConfig, ...]] = {
    ("tf32x3", 64): (
        LaunchConfig.of(BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3),
        LaunchConfig.of(BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=2),
        LaunchConfig.of(BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3),
        LaunchConfig.of(BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
        LaunchConfig.of(BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=2),
        LaunchConfig.of(BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=1),
    ),
    ("tf32x3", 128): (LaunchConfig.of(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=3),),
    ("ieee", 64): (
        LaunchConfig.of(BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=2),
        LaunchConfig.of(BLOCK_N=32, BLOCK_K=64, num_warps=8, num_stages=2),
        LaunchConfig.of(BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=2),
    ),
    ("ieee", 128): (
        LaunchConfig.of(BLOCK_N=32, BLOCK_K=32, num_warps=8, num_stages=2),
        LaunchConfig.of(BLOCK_N=16, BLOCK_K=64, num_warps=8, num_stages=2),
        LaunchConfig.of(BLOCK_N=16, BLOCK_K=32, num_warps=4, num_stages=2),
    ),
}
PRECISIONS = ("tf32x3", "tf32", "ieee")


def assign_configs(precision: str, dp: int) -> tuple[LaunchConfig, ...]:
    """The launch candidates of `vq_assign_kernel` for a precision and padded width `dp`."""
    return ASSIGN_CONFIGS["ieee" if precision == "ieee" else "tf32x3", 64 if dp <= 64 else 128]


@triton.jit
def vq_assign_kernel(
    x_ptr,
    c_ptr,
    cnorm_ptr,
    idx_ptr,
    dist_ptr,
    n,
    k,
    d,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DP: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rn = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, DP)
    xmask = (rn[:, None] < n) & (rd[None, :] < d)
    xb = tl.load(x_ptr + rn[:, None] * d + rd[None, :], mask=xmask, other=0.0).to(tl.float32)
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_i = tl.zeros([BLOCK_N], dtype=tl.int32)
    for k0 in range(0, k, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        kmask = rk < k
        cb = tl.load(
            c_ptr + rk[:, None].to(tl.int64) * d + rd[None, :],
            mask=kmask[:, None] & (rd[None, :] < d),
            other=0.0,
        ).to(tl.float32)
        cn = tl.load(cnorm_ptr + rk, mask=kmask, other=0.0)
        dots = tl.dot(xb, tl.trans(cb), input_precision=PRECISION)
        dist = cn[None, :] - 2.0 * dots
        dist = tl.where(kmask[None, :], dist, float("inf"))
        tile_min = tl.min(dist, axis=1)
        tile_arg = tl.argmin(dist, axis=1)
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        best_i = tl.where(better, tile_arg + k0, best_i)
    cw = tl.load(c_ptr + best_i[:, None].to(tl.int64) * d + rd[None, :], mask=xmask, other=0.0).to(tl.float32)
    diff = xb - cw
    sq = tl.sum(diff * diff, axis=1)
    nmask = rn < n
    tl.store(idx_ptr + rn, best_i.to(tl.int64), mask=nmask)
    tl.store(dist_ptr + rn, sq, mask=nmask)


@triton.jit
def vq_sums_kernel(
    x_ptr,
    idx_ptr,
    w_ptr,
    sums_ptr,
    counts_ptr,
    n,
    d,
    BLOCK_N: tl.constexpr,
    DP: tl.constexpr,
    HAS_W: tl.constexpr,
):
    rn = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, DP)
    nmask = rn < n
    xmask = nmask[:, None] & (rd[None, :] < d)
    idx = tl.load(idx_ptr + rn, mask=nmask, other=0)
    xb = tl.load(x_ptr + rn[:, None] * d + rd[None, :], mask=xmask, other=0.0).to(tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + rn, mask=nmask, other=0.0).to(tl.float32)
    else:
        w = tl.where(nmask, 1.0, 0.0)
    tl.atomic_add(sums_ptr + idx[:, None] * d + rd[None, :], xb * w[:, None], mask=xmask)
    tl.atomic_add(counts_ptr + idx, w, mask=nmask)


def _dims(d: int) -> int:
    if d > MAX_DIM:
        raise ValueError(f"the Triton VQ kernels support D <= {MAX_DIM}, got {d}")
    return max(next_pow2(d), 16)


def _fit(config: LaunchConfig, n: int, k: int) -> LaunchConfig:
    """The configuration with its tiles shrunk to the problem (at least 16, tl.dot's minimum)."""
    bn = max(16, min(config.block("BLOCK_N"), next_pow2(n)))
    bk = max(16, min(config.block("BLOCK_K"), next_pow2(k)))
    return LaunchConfig.of(BLOCK_N=bn, BLOCK_K=bk, num_warps=config.num_warps, num_stages=config.num_stages)


def vq_assign(
    x: Tensor, codebook: Tensor, precision: str | None = None, config: LaunchConfig | None = None
) -> tuple[Tensor, Tensor]:
    """(index int64 (N,), exact squared distance float32 (N,)) of each row's nearest codeword."""
    n, d = x.shape
    k = codebook.shape[0]
    x, codebook = x.contiguous(), codebook.contiguous()
    cnorm = (codebook.to(torch.float32) ** 2).sum(1).contiguous()
    index = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    if precision is None:  # three TF32 products: float32 accuracy on tensor cores
        precision = "tf32x3" if x.is_cuda else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not n:
        return index, dist
    dp = _dims(d)

    def launch(cfg: LaunchConfig) -> None:
        vq_assign_kernel[(triton.cdiv(n, cfg.block("BLOCK_N")),)](
            x, codebook, cnorm, index, dist, n, k, d, DP=dp, PRECISION=precision, **cfg.kwargs()
        )

    candidates = [_fit(c, n, k) for c in assign_configs(precision, dp)]
    key = (dp, precision, next_pow2(k), next_pow2(n))
    launch(_fit(config, n, k) if config else choose("vq_assign", key, candidates, launch, x.device))
    return index, dist


def vq_update(
    x: Tensor, index: Tensor, k: int, weights: Tensor | None, codebook: Tensor | None, block_n: int = 64
) -> tuple[Tensor, Tensor]:
    """(centroids (k, D) float32, counts (k,) float32): weighted means, empty clusters keep `codebook`."""
    n, d = x.shape
    sums = torch.zeros(k, d, dtype=torch.float32, device=x.device)
    counts = torch.zeros(k, dtype=torch.float32, device=x.device)
    if n:
        w = weights if weights is not None else counts  # placeholder pointer when unweighted
        vq_sums_kernel[(triton.cdiv(n, block_n),)](
            x.contiguous(),
            index.contiguous(),
            w.contiguous(),
            sums,
            counts,
            n,
            d,
            BLOCK_N=block_n,
            DP=next_pow2(d),
            HAS_W=weights is not None,
        )
    return finish_centroids(sums, counts, codebook), counts

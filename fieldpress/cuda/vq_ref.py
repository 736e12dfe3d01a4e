"""Vector quantization in plain PyTorch: nearest-codeword assignment and the k-means centroid update.

The CPU path of `vq_assign` / `vq_update` and the oracle of their Triton kernels. The assignment
works in blocks of points and codewords so it never holds more than `budget` distances at once
(the full N x K matrix would be 1M x 8192 x 4 B = 32 GiB). Ties go to the lowest index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_BUDGET = 1 << 22  # distances held at once (16 MiB of float32)


def _check_vq(x: Tensor, codebook: Tensor) -> None:
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"need x (N, D) and codebook (K, D), got {tuple(x.shape)} and {tuple(codebook.shape)}"
        )
    if codebook.shape[0] == 0:
        raise ValueError("codebook is empty")


def vq_assign_ref(x: Tensor, codebook: Tensor, budget: int = DEFAULT_BUDGET) -> tuple[Tensor, Tensor]:
    """Nearest codeword per row: (index int64 (N,), squared distance float32 (N,)).

    Candidates are ranked by ||x||^2 - 2 x.c + ||c||^2 (a matmul per block); the returned distance is
    then recomputed exactly as sum((x - c)^2) for the chosen codeword.
    """
    _check_vq(x, codebook)
    x32 = x.detach().to(torch.float32)
    c32 = codebook.detach().to(torch.float32)
    n, k = x32.shape[0], c32.shape[0]
    block_k = max(1, min(k, budget))
    block_n = max(1, budget // block_k)
    c_norm = (c32 * c32).sum(1)
    index = torch.empty(n, dtype=torch.int64, device=x.device)
    for n0 in range(0, n, block_n):
        xb = x32[n0 : n0 + block_n]
        x_norm = (xb * xb).sum(1, keepdim=True)
        best = torch.full((xb.shape[0],), math.inf, device=x.device)
        best_i = torch.zeros(xb.shape[0], dtype=torch.int64, device=x.device)
        for k0 in range(0, k, block_k):
            cb = c32[k0 : k0 + block_k]
            d = x_norm - 2.0 * (xb @ cb.T) + c_norm[k0 : k0 + block_k]
            dmin, imin = d.min(1)
            better = dmin < best
            best = torch.where(better, dmin, best)
            best_i = torch.where(better, imin + k0, best_i)
        index[n0 : n0 + block_n] = best_i
    return index, vq_sqdist_ref(x, codebook, index)


def vq_sqdist_ref(x: Tensor, codebook: Tensor, index: Tensor) -> Tensor:
    """sum((x - codebook[index])^2) per row, in float32 (differentiable in x and the codebook)."""
    diff = x.to(torch.float32) - codebook.to(torch.float32)[index]
    return (diff * diff).sum(1)


def vq_sqdist_backward_ref(grad: Tensor, x: Tensor, codebook: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of the squared distances w.r.t. x and the codebook (the index is held fixed)."""
    g = 2.0 * grad.to(torch.float32)[:, None] * (x.to(torch.float32) - codebook.to(torch.float32)[index])
    grad_cb = torch.zeros(codebook.shape, dtype=torch.float32, device=codebook.device).index_add_(
        0, index, -g
    )
    return g.to(x.dtype), grad_cb.to(codebook.dtype)


def _check_update(x: Tensor, index: Tensor, k: int, weights: Tensor | None, codebook: Tensor | None) -> None:
    if x.dim() != 2 or index.shape != (x.shape[0],):
        raise ValueError(f"need x (N, D) and index (N,), got {tuple(x.shape)} and {tuple(index.shape)}")
    if weights is not None and weights.shape != (x.shape[0],):
        raise ValueError(f"weights must have shape ({x.shape[0]},), got {tuple(weights.shape)}")
    if codebook is not None and codebook.shape != (k, x.shape[1]):
        raise ValueError(f"codebook must have shape ({k}, {x.shape[1]}), got {tuple(codebook.shape)}")


def vq_update_ref(
    x: Tensor, index: Tensor, k: int, weights: Tensor | None = None, codebook: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Weighted centroid per cluster and its total weight: (centroids (K, D) float32, counts (K,) float32).

    A cluster with zero total weight keeps its row of `codebook` (zeros when no codebook is given).
    """
    _check_update(x, index, k, weights, codebook)
    x32 = x.to(torch.float32)
    w = torch.ones(x.shape[0], device=x.device) if weights is None else weights.to(torch.float32)
    sums = torch.zeros(k, x.shape[1], dtype=torch.float32, device=x.device).index_add_(
        0, index, x32 * w[:, None]
    )
    counts = torch.zeros(k, dtype=torch.float32, device=x.device).index_add_(0, index, w)
    return finish_centroids(sums, counts, codebook), counts


def finish_centroids(sums: Tensor, counts: Tensor, codebook: Tensor | None) -> Tensor:
    """sums / counts, with empty clusters taking the old codebook row (or zeros)."""
    empty = counts == 0
    centroids = sums / torch.where(empty, torch.ones_like(counts), counts)[:, None]
    fallback = torch.zeros_like(centroids) if codebook is None else codebook.to(torch.float32)
    return torch.where(empty[:, None], fallback, centroids)


def vq_update_backward_ref(
    grad_c: Tensor,
    x: Tensor,
    index: Tensor,
    weights: Tensor | None,
    centroids: Tensor,
    counts: Tensor,
    codebook: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gradients of the centroids w.r.t. x, the weights and the old codebook (used by empty clusters)."""
    g = grad_c.to(torch.float32)
    empty = counts == 0
    inv = torch.where(
        empty, torch.zeros_like(counts), 1.0 / torch.where(empty, torch.ones_like(counts), counts)
    )
    gi = g[index] * inv[index][:, None]
    w = torch.ones(x.shape[0], device=x.device) if weights is None else weights.to(torch.float32)
    grad_x = (gi * w[:, None]).to(x.dtype)
    grad_w = None
    if weights is not None:
        grad_w = (gi * (x.to(torch.float32) - centroids[index])).sum(1).to(weights.dtype)
    grad_cb = None
    if codebook is not None:
        grad_cb = torch.where(empty[:, None], g, torch.zeros_like(g)).to(codebook.dtype)
    return grad_x, grad_w, grad_cb

"""Attribute clustering for NeuralGS: importance-weighted k-means through `fieldpress.cuda.vq_assign` /
`vq_update` (the kernels VecTree uses), seeded, so the same input and seed give the same clusters."""

from __future__ import annotations

import numpy as np
import torch

from fieldpress.cuda import vq_assign, vq_update
from fieldpress.errors import InputError


def kmeans(features: np.ndarray, k: int, weights: np.ndarray | None = None, iterations: int = 20,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 (N,), centroids float32 (k, D)) of weighted k-means on (N, D) features.

    Initial centroids are k distinct rows drawn by a seeded generator; empty clusters are re-seeded
    from the rows farthest from their centroids, so every cluster ends with at least one member."""
    x = torch.as_tensor(np.ascontiguousarray(features, np.float32))
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError(f"--clusters must be in 1..{n} (the Gaussians kept), got {k}")
    w = None if weights is None else torch.as_tensor(np.asarray(weights, np.float32))
    gen = torch.Generator().manual_seed(int(seed))
    codebook = x[torch.randperm(n, generator=gen)[:k]].clone()
    index = torch.zeros(n, dtype=torch.int64)
    for _ in range(iterations):
        index, dist = vq_assign(x, codebook)
        codebook, counts = vq_update(x, index, k, w, codebook)
        empty = torch.nonzero(torch.bincount(index, minlength=k) == 0).reshape(-1)
        if empty.numel():
            far = torch.argsort(dist, descending=True, stable=True)[: empty.numel()]
            codebook[empty] = x[far]
    index, _ = vq_assign(x, codebook)
    return index.numpy().astype(np.int64), codebook.numpy()

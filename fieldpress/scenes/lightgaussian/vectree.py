"""VecTree colour quantization (LightGaussian): the most significant Gaussians keep their SH
coefficients at float16, the rest share a significance-weighted k-means codebook.

k-means is plain weighted Lloyd iteration whose assignment and centroid steps go through
`fieldpress.cuda.vq_assign` / `vq_update` (a GPU kernel on CUDA, the PyTorch reference on the CPU).
Dead codes are re-seeded with the vectors that carry the largest weighted error, the deterministic
counterpart of LightGaussian's "replace the least used codes with the most important samples".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fieldpress.errors import FormatError, InputError

_CHUNK_ELEMENTS = 1 << 24  # rows x codes per assignment call, bounds the distance matrix memory


@dataclass(frozen=True)
class VecTreeConfig:
    """How colour features are split and quantized (LightGaussian's defaults)."""

    codebook_size: int = 8192
    keep_fraction: float = 0.4  # most significant fraction kept at float16
    iterations: int = 16
    min_vectors_per_code: int = 16  # codebook capped at n_quantized // this (small scenes)
    keep_bits: int = 0  # 0: kept rows at float16 (LightGaussian); else per-column quantized + ANS
    seed: int = 0

    def validate(self) -> None:
        if self.codebook_size < 1:
            raise InputError(f"codebook size must be >= 1, got {self.codebook_size}")
        if not 0.0 <= self.keep_fraction <= 1.0:
            raise InputError(f"keep fraction must be in [0, 1], got {self.keep_fraction}")
        if self.keep_bits and not 4 <= self.keep_bits <= 16:
            raise InputError(f"keep bits must be 0 (float16) or 4..16, got {self.keep_bits}")
        if self.iterations < 0 or self.min_vectors_per_code < 1:
            raise InputError("k-means iterations must be >= 0 and vectors per code >= 1")


@dataclass(frozen=True)
class VecTreeCode:
    """The stored form: a keep mask, float16 rows for kept Gaussians, indices + codebook for the rest."""

    keep_mask: np.ndarray  # bool (N,)
    kept: np.ndarray  # float16 (M, D)
    index: np.ndarray  # int64 (N - M,)
    codebook: np.ndarray  # float16 (K, D)

    def decode(self) -> np.ndarray:
        """The (N, D) float32 features this code stands for."""
        return vectree_decode(self.keep_mask, self.kept, self.index, self.codebook)


def assign(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code of each row through the VQ op, in row chunks that bound memory."""
    from fieldpress.cuda import vq_assign

    rows = max(1, _CHUNK_ELEMENTS // max(1, codebook.shape[0]))
    if x.shape[0] <= rows:
        return vq_assign(x, codebook)
    parts = [vq_assign(x[i:i + rows], codebook) for i in range(0, x.shape[0], rows)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def weighted_kmeans(x: torch.Tensor, weights: torch.Tensor, k: int, iterations: int,
                    seed: int = 0) -> torch.Tensor:
    """A (k, D) float32 codebook minimising the weighted squared error of `x` (N, D).

    Initial codes are drawn without replacement with probability proportional to weight (seeded).
    """
    from fieldpress.cuda import vq_update

    n = x.shape[0]
    k = min(k, n)
    if k <= 0:
        return x.new_zeros((0, x.shape[1]))
    w = weights.to(x.dtype).clamp_min(0)
    w = w + w.mean().clamp_min(1e-12) * 1e-3  # every vector can be drawn and counted
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    start = torch.multinomial(w.cpu().double(), k, replacement=False, generator=gen).to(x.device)
    codebook = x[start].clone()
    for _ in range(iterations):
        index, sqdist = assign(x, codebook)
        centroids, _ = vq_update(x, index, k, w)
        used = torch.bincount(index, minlength=k) > 0
        codebook = torch.where(used[:, None], centroids.to(x.dtype), codebook)
        dead = torch.nonzero(~used).flatten()
        if dead.numel():
            err = w * sqdist
            worst = torch.argsort(err, descending=True, stable=True)[: dead.numel()]
            codebook[dead[: worst.numel()]] = x[worst]
    return codebook


def vectree_encode(features: np.ndarray | torch.Tensor, significance: np.ndarray | torch.Tensor,
                   config: VecTreeConfig, device: torch.device | str = "cpu") -> VecTreeCode:
    """Split by significance and quantize: top `keep_fraction` to float16, the rest to a codebook."""
    config.validate()
    x = torch.as_tensor(np.asarray(features, dtype=np.float32)).to(device)
    sig = torch.as_tensor(np.asarray(significance, dtype=np.float64)).to(torch.float32).to(device)
    n, d = x.shape
    if sig.shape != (n,):
        raise InputError(f"significance has shape {tuple(sig.shape)}, expected ({n},)")
    n_keep = int(round(config.keep_fraction * n))
    order = torch.argsort(sig.cpu(), descending=True, stable=True)
    keep_mask = torch.zeros(n, dtype=torch.bool)
    keep_mask[order[:n_keep]] = True
    keep_np = keep_mask.numpy()
    kept = x[keep_mask.to(device)].cpu().numpy().astype(np.float16)
    rest = x[~keep_mask.to(device)]
    n_rest = rest.shape[0]
    k = min(config.codebook_size, max(1, n_rest // config.min_vectors_per_code)) if n_rest else 0
    if k == 0:
        return VecTreeCode(keep_np, kept, np.zeros(0, np.int64), np.zeros((0, d), np.float16))
    codebook = weighted_kmeans(rest, sig[~keep_mask.to(device)], k, config.iterations, config.seed)
    codebook16 = codebook.to(torch.float16)
    index, _ = assign(rest, codebook16.to(rest.dtype))  # indices optimal for the stored codebook
    return VecTreeCode(keep_np, kept, index.cpu().numpy().astype(np.int64), codebook16.cpu().numpy())


def vectree_decode(keep_mask: np.ndarray, kept: np.ndarray, index: np.ndarray,
                   codebook: np.ndarray) -> np.ndarray:
    """Rebuild (N, D) float32 features; checks every index and count against the stored arrays."""
    keep_mask = np.asarray(keep_mask).astype(bool).reshape(-1)
    n = keep_mask.size
    n_keep = int(keep_mask.sum())
    d = kept.shape[1] if kept.ndim == 2 else (codebook.shape[1] if codebook.ndim == 2 else 0)
    if kept.shape[0] != n_keep or index.shape != (n - n_keep,):
        raise FormatError("VecTree streams disagree on the number of Gaussians")
    if codebook.ndim != 2 or (codebook.shape[1] != d and n - n_keep > 0):
        raise FormatError("VecTree codebook has the wrong shape")
    if index.size and (index.min() < 0 or index.max() >= codebook.shape[0]):
        raise FormatError("VecTree index outside the codebook")
    out = np.zeros((n, d), np.float32)
    out[keep_mask] = kept.astype(np.float32)
    if index.size:
        out[~keep_mask] = codebook.astype(np.float32)[index]
    return out

"""VecTree colour quantization (LightGaussian): the most significant Gaussians keep their SH
coefficients at float16, the rest share a significance-weighted k-means codebook.

k-means is plain weighted Lloyd iteration whose assignment and centroid steps go through
`fieldpress.cuda.vq_assign` / `vq_update` (a GPU kernel on CUDA, the PyTorch reference on the CPU).
Dead codes are re-seeded with the vectors that carry the largest weighted error, the deterministic
counterpart of LightGaussian's "replace the least used codes with the most important samples".

Large problems (rows x codes above `flat_limit`: 1M SH-3 Gaussians with 8,192 codes) use a two-level
search instead of flat Lloyd: a coarse k-means splits the rows into groups, each group gets its own
share of the codes (fitted on at most `fit_per_code` rows per code), and every row is assigned
exactly among the codes of its `probes` nearest groups. The codebook stays one flat table, so the
file format is the same; only the encoder's search is cheaper (about k / (groups + probes x k/groups)).
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
    flat_limit: int = 1 << 30  # rows x codes above which the two-level search replaces flat k-means
    probes: int = 4  # coarse groups searched per row in the two-level search
    fit_per_code: int = 32  # two-level search: rows per code each group's k-means is fitted on (at most)
    refine: int = 4  # two-level search: Lloyd steps over all rows and codes after the per-group fits

    def validate(self) -> None:
        if self.codebook_size < 1:
            raise InputError(f"codebook size must be >= 1, got {self.codebook_size}")
        if not 0.0 <= self.keep_fraction <= 1.0:
            raise InputError(f"keep fraction must be in [0, 1], got {self.keep_fraction}")
        if self.keep_bits and not 4 <= self.keep_bits <= 16:
            raise InputError(f"keep bits must be 0 (float16) or 4..16, got {self.keep_bits}")
        if self.iterations < 0 or self.min_vectors_per_code < 1:
            raise InputError("k-means iterations must be >= 0 and vectors per code >= 1")
        if self.flat_limit < 1 or self.probes < 1 or self.fit_per_code < 1 or self.refine < 0:
            raise InputError("flat limit, probes and rows per code must be >= 1")


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


def _sample_rows(n: int, cap: int, gen: torch.Generator) -> torch.Tensor:
    """At most `cap` of the row numbers 0..n-1, uniformly without replacement (sorted), seeded."""
    if n <= cap:
        return torch.arange(n)
    return torch.sort(torch.randperm(n, generator=gen)[:cap]).values


def _share_codes(sizes: torch.Tensor, k: int) -> torch.Tensor:
    """Codes per group, proportional to the group sizes, at least one per non-empty group, summing to k
    (every group, even empty, has at most as many codes as rows unless all groups are empty)."""
    sizes = sizes.to(torch.float64)
    share = torch.where(sizes > 0, torch.ones_like(sizes), torch.zeros_like(sizes))
    spare = k - int(share.sum())
    if spare > 0:
        want = sizes / sizes.sum() * spare
        share += torch.floor(want)
        left = k - int(share.sum())
        share[torch.argsort(want - torch.floor(want), descending=True, stable=True)[:left]] += 1
    return torch.minimum(share, sizes.clamp_min(0)).to(torch.int64)


@dataclass(frozen=True)
class TwoLevelCodebook:
    """A flat codebook whose codes are grouped under coarse centroids: group g owns rows
    offsets[g]:offsets[g+1] of `codes`."""

    coarse: torch.Tensor  # (G, D)
    codes: torch.Tensor  # (K, D)
    offsets: list[int]


def two_level_kmeans(x: torch.Tensor, weights: torch.Tensor, k: int,
                     config: VecTreeConfig) -> TwoLevelCodebook:
    """k codes for `x` found group by group: coarse weighted k-means into about sqrt(k) groups, then each
    group's share of the codes by weighted k-means on (a sample of) its rows."""
    gen = torch.Generator(device="cpu").manual_seed(int(config.seed))
    n_groups = max(1, min(k, 1 << max(0, (int(k - 1).bit_length() + 1) // 2 - 1)))  # 8192 -> 64
    fit = _sample_rows(x.shape[0], config.fit_per_code * n_groups * 4, gen).to(x.device)
    coarse = weighted_kmeans(x[fit], weights[fit], n_groups, config.iterations, config.seed)
    group, _ = assign(x, coarse)
    counts = torch.bincount(group.cpu(), minlength=coarse.shape[0])
    share = _share_codes(counts, k)
    parts, offsets = [], [0]
    for g in range(coarse.shape[0]):
        kg = int(share[g])
        if kg:
            rows = torch.nonzero(group == g).flatten()
            rows = rows[_sample_rows(rows.numel(), config.fit_per_code * kg, gen).to(rows.device)]
            parts.append(weighted_kmeans(x[rows], weights[rows], kg, config.iterations, config.seed + g + 1))
        offsets.append(offsets[-1] + (parts[-1].shape[0] if kg else 0))
    return TwoLevelCodebook(coarse, torch.cat(parts), offsets)


def probe_lists(x: torch.Tensor, coarse: torch.Tensor, probes: int) -> list[torch.Tensor]:
    """For each coarse group, the rows that search it: those having it among their `probes` nearest."""
    n, g = x.shape[0], coarse.shape[0]
    probes = min(probes, g)
    near = torch.empty((n, probes), dtype=torch.int64, device=x.device)
    c_norm = (coarse * coarse).sum(1)
    step = max(1, _CHUNK_ELEMENTS // g)
    for i in range(0, n, step):  # ||x||^2 is the same for every group: rank by c^2 - 2 x.c
        d = torch.addmm(c_norm, x[i:i + step], coarse.T, alpha=-2.0)
        near[i:i + step] = torch.topk(d, probes, dim=1, largest=False).indices
    flat = near.flatten()
    order = torch.argsort(flat, stable=True)
    sizes = torch.bincount(flat, minlength=g).tolist()
    return list(torch.split(order // probes, sizes))


def two_level_assign(x: torch.Tensor, lists: list[torch.Tensor], offsets: list[int],
                     codes: torch.Tensor) -> torch.Tensor:
    """Nearest code of each row among the codes of the groups that list it (`probe_lists`), exactly.

    Per group one matmul ranks its rows against its codes offsets[g]:offsets[g+1] by ||c||^2 - 2 x.c
    (||x||^2 is common to all of a row's candidates), so no distance is recomputed per group."""
    n = x.shape[0]
    best = torch.full((n,), float("inf"), device=x.device)
    index = torch.zeros(n, dtype=torch.int64, device=x.device)
    c_norm = (codes * codes).sum(1)
    for j, rows in enumerate(lists):
        lo, hi = offsets[j], offsets[j + 1]
        if hi == lo or rows.numel() == 0:
            continue
        dist, idx = torch.addmm(c_norm[lo:hi], x[rows], codes[lo:hi].T, alpha=-2.0).min(1)
        better = dist < best[rows]  # ties keep the earlier group (the lower code index)
        best[rows[better]] = dist[better]
        index[rows[better]] = idx[better] + lo
    return index


def _quantize_rest(rest: torch.Tensor, weights: torch.Tensor, k: int,
                   config: VecTreeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook float16, index) of the non-kept rows: flat k-means, or the two-level search when large."""
    if rest.shape[0] * k <= config.flat_limit:
        codebook16 = weighted_kmeans(rest, weights, k, config.iterations, config.seed).to(torch.float16)
        index, _ = assign(rest, codebook16.to(rest.dtype))  # indices optimal for the stored codebook
        return codebook16, index
    from fieldpress.cuda import vq_update

    w = weights.to(rest.dtype).clamp_min(0)
    w = w + w.mean().clamp_min(1e-12) * 1e-3
    tree = two_level_kmeans(rest, w, k, config)
    codes = tree.codes
    gen = torch.Generator(device="cpu").manual_seed(int(config.seed) + 1)
    fit = _sample_rows(rest.shape[0], config.fit_per_code * codes.shape[0], gen).to(rest.device)
    lists = probe_lists(rest[fit], tree.coarse, config.probes)
    for _ in range(config.refine):  # global Lloyd steps on a sample: codes also learn from nearby groups
        index = two_level_assign(rest[fit], lists, tree.offsets, codes)
        codes = vq_update(rest[fit], index, codes.shape[0], w[fit], codes)[0].to(rest.dtype)
    codebook16 = codes.to(torch.float16)
    lists = probe_lists(rest, tree.coarse, config.probes)
    return codebook16, two_level_assign(rest, lists, tree.offsets, codebook16.to(rest.dtype))


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
    codebook16, index = _quantize_rest(rest, sig[~keep_mask.to(device)], k, config)
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

"""Relative entropy coding of a Gaussian posterior block under the Gaussian prior: 2^bits candidates
drawn from the prior with a CPU ``torch.Generator`` seeded by the file's seed (so every machine draws
the same ones), the index chosen by importance weight q/p perturbed with Gumbel noise (Gumbel-max over
the shared candidates; the index is written at the block's bit count), and the blocks themselves."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from fieldpress.errors import FormatError

CHUNK_ROWS = 8192  # candidates are generated in chunks of this many rows (bounded decoder memory)
MAX_BLOCK_DIMS = 4096
KL_FLOOR = 0.02  # a dimension's weight when cutting blocks is at least this fraction of the mean


@dataclasses.dataclass(frozen=True)
class Blocks:
    """REC blocks over the flattened (patches x dims) vector: ``order`` (a seeded permutation) cut at
    ``bounds`` into ``n`` runs of roughly equal expected KL."""

    order: np.ndarray  # int64 (N*D,)
    bounds: np.ndarray  # int64 (n + 1,)

    @property
    def n(self) -> int:
        """Number of blocks."""
        return len(self.bounds) - 1

    @property
    def max_dims(self) -> int:
        """Dimensions of the largest block (the candidate table's width)."""
        return int(np.diff(self.bounds).max())

    def dims(self, b: int) -> np.ndarray:
        """The flattened dimensions of block ``b``."""
        return self.order[self.bounds[b]:self.bounds[b + 1]]

    def block_of(self) -> np.ndarray:
        """int64 (N*D,): the block of every flattened dimension."""
        out = np.empty(len(self.order), np.int64)
        out[self.order] = np.repeat(np.arange(self.n), np.diff(self.bounds))
        return out


def make_blocks(kl_bits: np.ndarray, n_patches: int, n_blocks: int, seed: int) -> Blocks:
    """Cut the N x D dimensions (in a permutation drawn from ``seed``) into ``n_blocks`` runs whose
    expected KL (the prior's per-dimension training KL) is about equal (float64, integer cuts)."""
    total = len(kl_bits) * n_patches
    if not 1 <= n_blocks <= total:
        raise FormatError(f"{n_blocks} REC blocks for {total} dimensions")
    w = np.asarray(kl_bits, np.float64)
    w = np.maximum(w, KL_FLOOR * max(float(w.mean()), 1e-12))
    order = np.random.default_rng(seed).permutation(total).astype(np.int64)
    cum = np.cumsum(np.tile(w, n_patches)[order])
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n_blocks) / n_blocks, side="left") + 1
    cuts = np.maximum(cuts, np.arange(1, n_blocks))  # every block at least one dimension
    cuts = np.minimum(cuts, total - n_blocks + np.arange(1, n_blocks))
    cuts = np.maximum.accumulate(cuts)
    for i in range(1, len(cuts)):  # strictly increasing
        cuts[i] = max(cuts[i], cuts[i - 1] + 1)
    blocks = Blocks(order, np.concatenate([[0], cuts, [total]]).astype(np.int64))
    if blocks.max_dims > MAX_BLOCK_DIMS:
        raise FormatError(f"a REC block would hold {blocks.max_dims} dimensions (at most {MAX_BLOCK_DIMS})")
    return blocks


def _chunk_seed(seed: int, chunk: int) -> int:
    return ((seed & 0xFFFFFFFF) << 20 | chunk) & 0x7FFFFFFFFFFFFFFF


def candidate_chunks(seed: int, bits: int, dims: int) -> Iterator[tuple[int, Tensor]]:
    """(first row, (rows, dims) standard normals) chunks of the 2^bits shared candidates, on the CPU."""
    k = 1 << bits
    for c, start in enumerate(range(0, k, CHUNK_ROWS)):
        g = torch.Generator().manual_seed(_chunk_seed(seed, c))
        yield start, torch.randn(min(CHUNK_ROWS, k - start), dims, generator=g)


def gumbel(seed: int, bits: int) -> Tensor:
    """(2^bits,) Gumbel noise shared by every block (the encoder's only randomness besides candidates)."""
    g = torch.Generator().manual_seed(_chunk_seed(seed, (1 << 20) - 1))
    u = torch.rand(1 << bits, generator=g, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    return -torch.log(-torch.log(u))


def block_sample(p_loc: Tensor, p_scale: Tensor, noise: Tensor) -> Tensor:
    """The candidate a block's index names: prior loc + scale x standard normal (float32, elementwise)."""
    return p_loc + p_scale * noise


def choose(q_loc: Tensor, q_scale: Tensor, p_loc: Tensor, p_scale: Tensor, noise: Tensor,
           g: Tensor) -> tuple[float, int]:
    """Best (log weight + Gumbel, row) of one candidate chunk for one block (all float32 but the sum)."""
    z = block_sample(p_loc, p_scale, noise)
    log_q = (-0.5 * ((z - q_loc) / q_scale) ** 2 - torch.log(q_scale)).sum(-1)
    log_p = (-0.5 * noise ** 2 - torch.log(p_scale)).sum(-1)
    score = (log_q - log_p).double() + g
    i = int(torch.argmax(score))
    return float(score[i]), i


def encode_blocks(blocks: list[int], spec: Blocks, q_loc: Tensor, q_scale: Tensor, p_loc: Tensor,
                  p_scale: Tensor, seed: int, bits: int) -> dict[int, int]:
    """REC indices of ``blocks`` (flattened CPU float32 posterior and prior), one pass over the candidates."""
    g = gumbel(seed, bits)
    best = {b: (-float("inf"), 0) for b in blocks}
    idx = {b: torch.from_numpy(spec.dims(b)) for b in blocks}
    for start, chunk in candidate_chunks(seed, bits, spec.max_dims):
        gc = g[start:start + chunk.shape[0]]
        for b in blocks:
            d = idx[b]
            score, row = choose(q_loc[d], q_scale[d], p_loc[d], p_scale[d], chunk[:, :len(d)], gc)
            if score > best[b][0]:
                best[b] = (score, start + row)
    return {b: best[b][1] for b in blocks}


def decode_blocks(indices: np.ndarray, spec: Blocks, p_loc: Tensor, p_scale: Tensor, seed: int,
                  bits: int) -> Tensor:
    """The flattened sample every block's index names (float32), regenerated from seed and prior."""
    out = torch.empty_like(p_loc)
    fill_samples(range(spec.n), indices, spec, p_loc, p_scale, seed, bits, out)
    return out


def fill_samples(blocks: range | list[int], indices: np.ndarray | dict[int, int], spec: Blocks, p_loc: Tensor,
                 p_scale: Tensor, seed: int, bits: int, out: Tensor) -> None:
    """Write the samples of ``blocks`` (index per block) into ``out`` (flattened), chunk by chunk."""
    want: dict[int, list[int]] = {}
    for b in blocks:
        want.setdefault(int(indices[b]) // CHUNK_ROWS, []).append(b)
    for start, chunk in candidate_chunks(seed, bits, spec.max_dims):
        for b in want.get(start // CHUNK_ROWS, []):
            d = torch.from_numpy(spec.dims(b))
            out[d] = block_sample(p_loc[d], p_scale[d], chunk[int(indices[b]) - start, :len(d)])


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """uint8 bytes holding each index in ``bits`` bits, most significant first (the last byte zero-padded)."""
    idx = np.asarray(indices, np.int64)
    shifts = np.arange(bits - 1, -1, -1)
    return np.packbits(((idx[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))


def unpack_indices(data: np.ndarray, n: int, bits: int) -> np.ndarray:
    """The n indices of ``pack_indices`` (FormatError when the byte count is not exactly theirs)."""
    data = np.asarray(data, np.uint8).reshape(-1)
    if data.size != (n * bits + 7) // 8:
        raise FormatError(f"REC index stream holds {data.size} bytes, expected {(n * bits + 7) // 8}")
    flat = np.unpackbits(data)[:n * bits].reshape(n, bits).astype(np.int64)
    return (flat << np.arange(bits - 1, -1, -1)).sum(1)

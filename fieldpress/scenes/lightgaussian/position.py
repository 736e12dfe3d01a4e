"""Position coding for Gaussian centres: quantized coordinates in Morton (octree) order, coded as
deltas split into an entropy-coded bit-length symbol and raw mantissa bits.

Sorting the quantized cells along the Z-order curve visits them the way a depth-first octree walk
does, so neighbouring Gaussians get small code differences. Each difference d >= 0 is written as
its bit length L = bit_length(d) (a small integer, ANS-coded by the container) and the L-1 bits
below its leading one (nearly uniform, stored packed). This is the octree idea of the LightGaussian
paper (its released code stores float32 xyz) in the form of JPEG's "category + extra bits" code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fieldpress.errors import FormatError, InputError

MAX_BITS = 21  # 3 x 21 = 63 bits: a Morton code fits one uint64


@dataclass(frozen=True)
class PositionGrid:
    """The quantization grid: `x = origin + q * step` per axis, q in [0, 2**bits)."""

    bits: int
    origin: tuple[float, float, float]
    step: tuple[float, float, float]

    def to_header(self) -> dict:
        return {"bits": self.bits, "origin": list(self.origin), "step": list(self.step)}

    @classmethod
    def from_header(cls, header: dict) -> PositionGrid:
        try:
            bits = int(header["bits"])
            origin = tuple(float(v) for v in header["origin"])
            step = tuple(float(v) for v in header["step"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"bad position grid in header: {exc}") from None
        if not 1 <= bits <= MAX_BITS or len(origin) != 3 or len(step) != 3:
            raise FormatError("bad position grid in header")
        if not all(np.isfinite(origin)) or not all(np.isfinite(step)) or min(step) <= 0:
            raise FormatError("bad position grid in header")
        return cls(bits, origin, step)  # type: ignore[arg-type]


def make_grid(means: np.ndarray, bits: int) -> PositionGrid:
    """The grid spanning the axis-aligned bounds of `means` with 2**bits cells per axis."""
    if not 1 <= bits <= MAX_BITS:
        raise InputError(f"position bits must be in 1..{MAX_BITS}, got {bits}")
    means = np.asarray(means, dtype=np.float64)
    if means.size == 0:
        return PositionGrid(bits, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    lo = means.min(axis=0)
    hi = means.max(axis=0)
    levels = (1 << bits) - 1
    step = np.maximum((hi - lo) / levels, 1e-12)
    return PositionGrid(bits, tuple(float(v) for v in lo), tuple(float(v) for v in step))  # type: ignore[arg-type]


def quantize_positions(means: np.ndarray, grid: PositionGrid) -> np.ndarray:
    """Integer cell coordinates (N, 3) uint64 of `means` on `grid`."""
    origin = np.asarray(grid.origin, dtype=np.float64)
    step = np.asarray(grid.step, dtype=np.float64)
    q = np.rint((np.asarray(means, dtype=np.float64) - origin) / step)
    return np.clip(q, 0, (1 << grid.bits) - 1).astype(np.uint64)


def dequantize_positions(cells: np.ndarray, grid: PositionGrid) -> np.ndarray:
    """Cell coordinates back to float32 positions (cell centres of the grid)."""
    origin = np.asarray(grid.origin, dtype=np.float64)
    step = np.asarray(grid.step, dtype=np.float64)
    out = origin + cells.astype(np.float64) * step
    if out.size and not np.all(np.abs(out) <= np.finfo(np.float32).max):
        raise FormatError("the position grid reaches outside float32 (damaged header?)")
    return out.astype(np.float32)


def _spread(v: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros_like(v, dtype=np.uint64)
    for b in range(bits):
        out |= ((v >> np.uint64(b)) & np.uint64(1)) << np.uint64(3 * b)
    return out


def _compact(code: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros_like(code, dtype=np.uint64)
    for b in range(bits):
        out |= ((code >> np.uint64(3 * b)) & np.uint64(1)) << np.uint64(b)
    return out


def morton_encode(cells: np.ndarray, bits: int) -> np.ndarray:
    """Interleave the bits of (x, y, z) cells into one uint64 Z-order code per row (x lowest)."""
    cells = np.asarray(cells, dtype=np.uint64)
    return _spread(cells[:, 0], bits) | (_spread(cells[:, 1], bits) << np.uint64(1)) | (
        _spread(cells[:, 2], bits) << np.uint64(2))


def morton_decode(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`morton_encode`: (N,) uint64 codes -> (N, 3) uint64 cells."""
    codes = np.asarray(codes, dtype=np.uint64)
    return np.stack([_compact(codes >> np.uint64(a), bits) for a in range(3)], axis=1)


def _bit_length(v: np.ndarray) -> np.ndarray:
    """bit_length of each uint64 (0 for 0), exact for all 64-bit values."""
    v = v.copy()
    length = np.zeros(v.shape, dtype=np.uint8)
    for shift in (32, 16, 8, 4, 2, 1):
        s = np.uint64(shift)
        big = (v >> s) > 0
        length[big] += shift
        v[big] >>= s
    length[v > 0] += 1
    return length


def encode_deltas(sorted_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted uint64 codes -> (bit-length symbols uint8 (N,), packed mantissa bits uint8)."""
    codes = np.asarray(sorted_codes, dtype=np.uint64)
    if codes.size == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint8)
    deltas = np.diff(codes, prepend=np.uint64(0))
    lengths = _bit_length(deltas)
    extra = np.maximum(lengths.astype(np.int64) - 1, 0)
    offsets = np.concatenate([[0], np.cumsum(extra)])
    bits = np.zeros(int(offsets[-1]), dtype=np.uint8)
    for j in range(int(extra.max(initial=0))):
        rows = np.nonzero(extra > j)[0]
        shift = (extra[rows] - 1 - j).astype(np.uint64)
        bits[offsets[rows] + j] = ((deltas[rows] >> shift) & np.uint64(1)).astype(np.uint8)
    return lengths, np.packbits(bits)


def decode_deltas(lengths: np.ndarray, mantissa: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_deltas`: the sorted uint64 codes."""
    lengths = np.asarray(lengths).astype(np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > 64):
        raise FormatError("position stream: bit length out of range")
    extra = np.maximum(lengths - 1, 0)
    offsets = np.concatenate([[0], np.cumsum(extra)])
    total = int(offsets[-1])
    bits = np.unpackbits(np.asarray(mantissa, dtype=np.uint8))
    if bits.size < total or bits.size - total >= 8:
        raise FormatError("position stream: mantissa length does not match the bit lengths")
    deltas = np.where(lengths > 0, np.uint64(1) << np.maximum(lengths - 1, 0).astype(np.uint64), np.uint64(0))
    deltas = deltas.astype(np.uint64)
    for j in range(int(extra.max(initial=0))):
        rows = np.nonzero(extra > j)[0]
        shift = (extra[rows] - 1 - j).astype(np.uint64)
        deltas[rows] |= bits[offsets[rows] + j].astype(np.uint64) << shift
    with np.errstate(over="ignore"):
        return np.cumsum(deltas, dtype=np.uint64)


@dataclass(frozen=True)
class CodedPositions:
    """What the container stores for positions, plus the Morton order the encoder chose."""

    grid: PositionGrid
    lengths: np.ndarray  # uint8 (N,): ANS-coded bit lengths of the code deltas
    mantissa: np.ndarray  # uint8: packed extra bits
    order: np.ndarray  # int64 (N,): input index of each output Gaussian (Morton order)


def encode_positions(means: np.ndarray, bits: int) -> CodedPositions:
    """Quantize `means` to `bits` per axis, sort along the Morton curve, and delta-code the codes.

    Ties (two Gaussians in one cell) are broken by input index, so the order is deterministic.
    """
    grid = make_grid(means, bits)
    cells = quantize_positions(means, grid)
    codes = morton_encode(cells, bits)
    order = np.lexsort((np.arange(codes.size), codes)).astype(np.int64)
    lengths, mantissa = encode_deltas(codes[order])
    return CodedPositions(grid, lengths, mantissa, order)


def decode_positions(grid: PositionGrid, lengths: np.ndarray, mantissa: np.ndarray) -> np.ndarray:
    """The float32 (N, 3) positions (in Morton order) from the stored streams."""
    codes = decode_deltas(lengths, mantissa)
    limit = np.uint64(1) << np.uint64(3 * grid.bits)
    if codes.size and (codes[-1] >= limit or np.any(codes[1:] < codes[:-1])):
        raise FormatError("position stream: codes outside the grid")
    return dequantize_positions(morton_decode(codes, grid.bits), grid)

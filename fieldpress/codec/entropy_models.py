"""Laplace entropy models: a differentiable rate for training and bit-exact integer tables for coding.

Training sees a continuous Laplace(mean, scale) per symbol (`laplace_bits`). Coding never uses those
floats: a mean and a log-scale arrive as fixed-point integers (units of 2**-FRAC_BITS), are mapped with
integer arithmetic to a rounded centre plus one of a fixed grid of tables (17 fractional means x 69
scales), and each table is an integer pmf over the residuals [-128, 127] summing to 2**20. Encoder and
decoder build the same tables from the same integers on any machine and thread count, and
constriction's range coder codes the residuals grouped by table (one vectorized call per table).

`FactorizedLaplace` (zero mean, learned scale per channel) codes whole tensors with the same tables;
a conditional model gives (mean, log-scale) per symbol from a context network (see
`fieldpress.codec.fixed_point` for a context network whose integer outputs are exact everywhere).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.errors import FormatError

FRAC_BITS = 8  # fixed-point resolution of means and log-scales: units of 1/256
ONE = 1 << FRAC_BITS
RES_MIN, RES_MAX = -128, 127  # residual alphabet (value - rounded mean)
ALPHABET = RES_MAX - RES_MIN + 1
PROB_BITS = 20
TOTAL = 1 << PROB_BITS
MEAN_SHIFT = 4  # fractional means in steps of 1/16: 17 bins over [-1/2, 1/2]
MEAN_BINS = (ONE >> MEAN_SHIFT) + 1
SCALE_MIN, SCALE_MAX = 0.04, 40.0
LS_MIN_INT = round(math.log(SCALE_MIN) * ONE)  # -824
LS_STEP_INT = 26  # 0.1016 in natural log: neighbouring scales differ by 10.7%
SCALE_BINS = 69
N_TABLES = MEAN_BINS * SCALE_BINS
MIN_BITS_PROB = 2.0**-PROB_BITS


# ----------------------------------------------------------------------------- training rate
def laplace_bits(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """-log2 P(x) of integer-binned Laplace(mean, exp(log_scale)), elementwise and differentiable."""
    scale = torch.exp(log_scale.clamp(math.log(SCALE_MIN), math.log(SCALE_MAX)))
    d = -(x - mean).abs()  # fold onto the lower tail: P = F(d + 1/2) - F(d - 1/2)
    upper = d + 0.5
    low_cdf = 0.5 * torch.exp((d - 0.5) / scale)
    up_cdf = torch.where(upper <= 0, 0.5 * torch.exp(upper.clamp(max=0) / scale),
                         1.0 - 0.5 * torch.exp(-upper.clamp(min=0) / scale))
    p = (up_cdf - low_cdf).clamp(min=MIN_BITS_PROB)
    return -torch.log2(p)


# ----------------------------------------------------------------------------- integer tables
def _laplace_cdf(x: np.ndarray, scale: float) -> np.ndarray:
    lower = 0.5 * np.exp(np.minimum(x, 0) / scale)
    return np.where(x < 0, lower, 1.0 - 0.5 * np.exp(-np.maximum(x, 0) / scale))


def table_scale(scale_index: int) -> float:
    """The scale of table column `scale_index` (its log-scale is LS_MIN_INT + i*LS_STEP_INT units)."""
    return math.exp((LS_MIN_INT + scale_index * LS_STEP_INT) / ONE)


@functools.lru_cache(maxsize=1)
def tables() -> np.ndarray:
    """(N_TABLES, ALPHABET) int64 pmfs: row mean_bin*SCALE_BINS + scale_bin, each summing to TOTAL."""
    r = np.arange(RES_MIN, RES_MAX + 1, dtype=np.float64)
    out = np.empty((N_TABLES, ALPHABET), np.int64)
    for mb in range(MEAN_BINS):
        mean = (mb - MEAN_BINS // 2) / (MEAN_BINS - 1)
        for sb in range(SCALE_BINS):
            b = table_scale(sb)
            edges = np.concatenate([[-np.inf], r[1:] - 0.5 - mean, [np.inf]])
            cdf = _laplace_cdf(edges, b)
            cdf[0], cdf[-1] = 0.0, 1.0
            pmf = np.diff(cdf)
            counts = np.floor(pmf * (TOTAL - ALPHABET)).astype(np.int64) + 1
            counts[int(np.argmax(counts))] += TOTAL - int(counts.sum())
            out[mb * SCALE_BINS + sb] = counts
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=1)
def _table_bits() -> np.ndarray:
    return PROB_BITS - np.log2(tables().astype(np.float64))


def param_indices(mean_int: np.ndarray, log_scale_int: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (mean, log-scale) in units 2**-FRAC_BITS -> (rounded centre, table row); integer-only."""
    m = np.asarray(mean_int, np.int64)
    ls = np.asarray(log_scale_int, np.int64)
    centre = (m + ONE // 2) >> FRAC_BITS  # round half up, the same on every machine
    frac = m - (centre << FRAC_BITS)  # in [-128, 127]
    half_step = 1 << (MEAN_SHIFT - 1)
    mean_bin = ((frac + half_step) >> MEAN_SHIFT) + MEAN_BINS // 2
    scale_bin = np.clip((ls - LS_MIN_INT + LS_STEP_INT // 2) // LS_STEP_INT, 0, SCALE_BINS - 1)
    return centre, mean_bin * SCALE_BINS + scale_bin


def to_fixed(x: Tensor | np.ndarray | float) -> np.ndarray:
    """Float parameters to fixed-point integers (for values stored as such, e.g. factorized scales)."""
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, np.float64)
    return np.round(a * ONE).astype(np.int64)


def table_bits(values: np.ndarray, centre: np.ndarray, table: np.ndarray) -> float:
    """Exact information content (bits) of integer `values` under the integer tables."""
    sym = _symbols(values, centre)
    return float(_table_bits()[np.asarray(table, np.int64), sym].sum())


def _symbols(values: np.ndarray, centre: np.ndarray) -> np.ndarray:
    r = np.asarray(values, np.int64) - np.asarray(centre, np.int64)
    if r.size and (r.min() < RES_MIN or r.max() > RES_MAX):
        raise ValueError(f"residuals must lie in [{RES_MIN}, {RES_MAX}]; got [{r.min()}, {r.max()}]")
    return r - RES_MIN


@functools.lru_cache(maxsize=N_TABLES)
def _model(row: int) -> Any:
    import constriction

    return constriction.stream.model.Categorical(tables()[row].astype(np.float64), perfect=False)


def _groups(table: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A canonical order (by table row, then position) and its runs (row, start, end)."""
    t = np.asarray(table, np.int64).reshape(-1)
    order = np.argsort(t, kind="stable")
    ts = t[order]
    cuts = np.flatnonzero(np.diff(ts)) + 1
    starts = np.concatenate([[0], cuts]).astype(np.int64)
    ends = np.concatenate([cuts, [t.size]]).astype(np.int64)
    return order, [(int(ts[s]), int(s), int(e)) for s, e in zip(starts, ends) if e > s]


def encode_symbols(encoder: Any, values: np.ndarray, centre: np.ndarray, table: np.ndarray) -> None:
    """Append integer `values` to a constriction RangeEncoder under their tables (grouped by table)."""
    sym = _symbols(values, centre).reshape(-1).astype(np.int32)
    order, runs = _groups(table)
    for row, s, e in runs:
        encoder.encode(sym[order[s:e]], _model(row))


def decode_symbols(decoder: Any, centre: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Decode what `encode_symbols` wrote for these (centre, table) arrays; returns int64 values."""
    c = np.asarray(centre, np.int64).reshape(-1)
    t = np.asarray(table, np.int64).reshape(-1)
    if t.size and (t.min() < 0 or t.max() >= N_TABLES):
        raise FormatError("entropy table index out of range")
    out = np.empty(t.size, np.int64)
    order, runs = _groups(t)
    try:
        for row, s, e in runs:
            out[order[s:e]] = decoder.decode(_model(row), e - s)
    except (ValueError, RuntimeError, AssertionError) as exc:  # constriction asserts on invalid data
        raise FormatError(f"damaged range-coded data ({exc})") from None
    return (out + RES_MIN + c).reshape(np.shape(table))


def new_encoder() -> Any:
    """A fresh constriction range encoder."""
    import constriction

    return constriction.stream.queue.RangeEncoder()


def finish(encoder: Any) -> np.ndarray:
    """The encoder's compressed words (uint32, stored little-endian by the container)."""
    return np.asarray(encoder.get_compressed(), np.uint32)


def new_decoder(words: np.ndarray) -> Any:
    """A range decoder over words written by `finish`."""
    import constriction

    return constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, np.uint32))


# ----------------------------------------------------------------------------- factorized model
class FactorizedLaplace(nn.Module):
    """Zero-mean Laplace with a learned log-scale per channel (axis 0): weights, biases, flat latents."""

    def __init__(self, channels: int = 1, init_log_scale: float = 0.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((channels,), float(init_log_scale)))

    def _per_symbol(self, x: Tensor) -> Tensor:
        return self.log_scale.view(-1, *([1] * (x.dim() - 1))).expand_as(x)

    def bits(self, x: Tensor) -> Tensor:
        """Differentiable total bits of x (channels on axis 0) under the current scales."""
        return laplace_bits(x, torch.zeros_like(x), self._per_symbol(x)).sum()

    def scale_indices(self) -> np.ndarray:
        """The per-channel table rows the coder uses (these integers are what a file stores)."""
        _, rows = param_indices(np.zeros(self.log_scale.numel(), np.int64), to_fixed(self.log_scale))
        return rows

    @staticmethod
    def rows_for(x_shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        """Broadcast per-channel table rows over a tensor of `x_shape` (channels on axis 0)."""
        return np.broadcast_to(np.asarray(rows).reshape(-1, *([1] * (len(x_shape) - 1))), x_shape)

    def encode(self, encoder: Any, q: np.ndarray) -> np.ndarray:
        """Code integer q (channels on axis 0); returns the table rows to store."""
        rows = self.scale_indices()
        encode_symbols(encoder, q, np.zeros(q.shape, np.int64), self.rows_for(q.shape, rows))
        return rows

    @staticmethod
    def decode(decoder: Any, shape: tuple[int, ...], rows: np.ndarray) -> np.ndarray:
        """Decode what `encode` wrote, given the stored rows."""
        return decode_symbols(decoder, np.zeros(shape, np.int64), FactorizedLaplace.rows_for(shape, rows))

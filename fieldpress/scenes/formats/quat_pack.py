"""Shared helpers of the quantized formats: logit/sigmoid with safe clamps, "smallest three" quaternion
index selection, and Morton ordering of positions (for chunked formats)."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def logit_u8(value: np.ndarray, levels: int = 255) -> np.ndarray:
    """Inverse sigmoid of an 8-bit alpha, clamped half a step off 0 and 1 so it stays finite."""
    eps = 0.5 / levels
    a = np.clip(np.asarray(value, dtype=np.float64) / levels, eps, 1.0 - eps)
    return np.log(a / (1.0 - a))


def normalized_quats(q: np.ndarray) -> np.ndarray:
    """Unit quaternions (rows); zero rows become the identity in the same component order (w first)."""
    q = np.asarray(q, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), 0.0)
    out[(norm[:, 0] == 0), 0] = 1.0
    return out


def largest_index(q: np.ndarray) -> np.ndarray:
    """Index of the component with the largest magnitude (first one on ties), per row."""
    return np.argmax(np.abs(q), axis=1)


def others(largest: np.ndarray) -> np.ndarray:
    """(N,3) indices of the three components other than `largest`, in increasing order."""
    table = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
    return table[largest]


def morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """A stable permutation sorting points along a 3D Morton (Z-order) curve over their bounds."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.where(np.isfinite(p), p, 0.0)
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    q = np.clip(((finite - lo) / span * ((1 << bits) - 1)).round(), 0, (1 << bits) - 1).astype(np.uint64)
    code = np.zeros(len(p), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(3):
            code |= ((q[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + (2 - axis))
    return np.argsort(code, kind="stable")

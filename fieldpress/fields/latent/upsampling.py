"""Bicubic upsampling by an integer factor as two separable polyphase convolutions.

The same function as ``F.interpolate(mode="bicubic", align_corners=False)`` (Keys cubic, a = -0.75,
borders replicated) when the output is exactly `factor` times the input, to float rounding; its
backward pass is two small convolutions, about twice as fast on the CPU as PyTorch's bicubic backward.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

KEYS_A = -0.75  # PyTorch's bicubic coefficient


def _keys(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return ((KEYS_A + 2) * t - (KEYS_A + 3)) * t * t + 1
    if t < 2:
        return ((KEYS_A * t - 5 * KEYS_A) * t + 8 * KEYS_A) * t - 4 * KEYS_A
    return 0.0


@lru_cache(maxsize=32)
def _phase_weights(factor: int) -> tuple[tuple[float, ...], ...]:
    """Per output phase r, the weights on input offsets -2..2: output r of input q samples q + (r + 1/2)
    / factor - 1/2."""
    rows = []
    for r in range(factor):
        pos = (r + 0.5) / factor - 0.5
        base = math.floor(pos)
        row = [0.0] * 5
        for d in (-1, 0, 1, 2):
            row[base + d + 2] = _keys(d - (pos - base))
        rows.append(tuple(row))
    return tuple(rows)


def _along(x: Tensor, factor: int, dim: int) -> Tensor:
    """(B, 1, h, w) upsampled `factor` times along rows (dim 2) or columns (dim 3)."""
    b, _, h, w = x.shape
    weights = torch.tensor(_phase_weights(factor), dtype=x.dtype)
    if dim == 2:
        y = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), weights.view(factor, 1, 5, 1))
        return y.permute(0, 2, 1, 3).reshape(b, 1, h * factor, w)
    y = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), weights.view(factor, 1, 1, 5))
    return y.permute(0, 2, 3, 1).reshape(b, 1, h, w * factor)


def bicubic_by(x: Tensor, factor: int) -> Tensor:
    """(B, 1, h, w) -> (B, 1, h * factor, w * factor), bicubic, align_corners=False."""
    return _along(_along(x, factor, 2), factor, 3)


def resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """(B, 1, h, w) resized to `size`. Training (a tensor that needs gradients) takes the polyphase
    path for exact bicubic integer factors; everything else, decoding included, ``F.interpolate``, so
    that files decode exactly as they did before this path existed."""
    h, w = x.shape[-2:]
    factor = size[0] // h
    if (x.requires_grad and torch.is_grad_enabled() and mode == "bicubic" and factor >= 2
            and size == (h * factor, w * factor)):
        return bicubic_by(x, factor)
    return F.interpolate(x, size=size, mode=mode, align_corners=False)

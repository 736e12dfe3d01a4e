"""Causal context of a group's latent volume: the image codec's spatial context plus the previous frame.

Level l of a group is a (latent frames, h, w) volume. Latent frame t of level l is coded after all
of latent frame t-1 of that level (and after all coarser levels), in the image codec's two
checkerboard passes. Every latent sees the image codec's features (the 3x3 parent window of the
coarser level in the same latent frame; at non-anchors also 12 same-frame anchors) plus the 3x3
window of the previous latent frame at the same level (zeros in a group's first one). Features are
computed for a whole volume at once in training; the decoder evaluates them one latent frame at a
time on a two-frame volume, which yields the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fieldpress.fields.latent import context as image_context

TEMPORAL_FEATURES = 9
ANCHOR_IN = image_context.ANCHOR_IN + TEMPORAL_FEATURES
NONANCHOR_IN = image_context.NONANCHOR_IN + TEMPORAL_FEATURES


def _window(vol: Tensor, offsets: list[tuple[int, int]], pad: int) -> Tensor:
    """(len(offsets), g, h, w): vol[t, i + dr, j + dc] with zeros outside."""
    g, h, w = vol.shape
    padded = F.pad(vol[:, None], (pad, pad, pad, pad))[:, 0]
    return torch.stack([padded[:, pad + dr:pad + dr + h, pad + dc:pad + dc + w] for dr, dc in offsets])


def parent_features(parent: Tensor | None, g: int, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """(9, g, h, w): per frame, the image codec's parent features (same order and flips)."""
    if parent is None:
        return torch.zeros(image_context.PARENT_FEATURES, g, h, w, dtype=dtype)
    _, hp, wp = parent.shape
    padded = F.pad(parent[:, None], (1, 1, 1, 1))[:, 0]
    shift = {(dr, dc): padded[:, 1 + dr:1 + dr + hp, 1 + dc:1 + dc + wp]
             for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    feats = []
    for u in (0, 1, -1):
        for v in (0, 1, -1):
            phases = torch.stack([torch.stack([shift[(u * ti, v * tj)] for tj in (-1, 1)]) for ti in (-1, 1)])
            # (2 row parities, 2 col parities, g, hp, wp) -> (g, 2hp, 2wp)
            feats.append(phases.permute(2, 3, 0, 4, 1).reshape(g, 2 * hp, 2 * wp)[:, :h, :w])
    return torch.stack(feats)


def temporal_features(vol: Tensor) -> Tensor:
    """(9, g, h, w): the 3x3 window of the previous frame of the same level (zeros for frame 0)."""
    prev = torch.cat([torch.zeros_like(vol[:1]), vol[:-1]])
    return _window(prev, [(dr, dc) for dr in (0, -1, 1) for dc in (0, -1, 1)], 1)


def gather(x: Tensor, anchors: bool) -> Tensor:
    """Values of (..., g, h, w) at one pass's positions: (..., g * N), frame by frame in coding order."""
    phases = image_context.ANCHOR_PHASES if anchors else image_context.OTHER_PHASES
    parts = [x[..., a::2, b::2].reshape(*x.shape[:-2], -1) for a, b in phases]
    out = torch.cat(parts, dim=-1)
    return out.reshape(*x.shape[:-3], -1)


def pass_inputs(vol: Tensor, parent: Tensor | None, anchors: bool) -> Tensor:
    """Features (g * N, C) of one pass over every frame of `vol`, frame by frame in coding order."""
    g, h, w = vol.shape
    feats = [parent_features(parent, g, h, w, vol.dtype)]
    if not anchors:
        feats.append(_window(vol, list(image_context.NEIGHBOUR_OFFSETS), 2))
    feats.append(temporal_features(vol))
    return gather(torch.cat(feats), anchors).T


def frame_inputs(vol: Tensor, parent: Tensor | None, t: int, anchors: bool) -> Tensor:
    """Features (N, C) of one pass over frame t only (what the decoder evaluates): the same rows
    `pass_inputs` gives for frame t, computed on the two-frame volume (t-1, t)."""
    prev = vol[t - 1:t] if t > 0 else torch.zeros_like(vol[:1])
    pair = torch.cat([prev, vol[t:t + 1]])
    par = None if parent is None else parent[t:t + 1].expand(2, -1, -1)
    rows = pass_inputs(pair, par, anchors)
    return rows[rows.shape[0] // 2:]

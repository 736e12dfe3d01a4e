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
from torch import Tensor

from fieldpress.fields.latent import context as image_context

TEMPORAL_FEATURES = 9
ANCHOR_IN = image_context.ANCHOR_IN + TEMPORAL_FEATURES
NONANCHOR_IN = image_context.NONANCHOR_IN + TEMPORAL_FEATURES


TEMPORAL_ROWS = tuple((dr + 1) * 3 + dc + 1 for dr in (0, -1, 1) for dc in (0, -1, 1))  # windows() rows


def temporal_features(vol: Tensor) -> Tensor:
    """(g, 9, h, w): the 3x3 window of the previous frame of the same level (zeros for frame 0)."""
    prev = torch.cat([torch.zeros_like(vol[:1]), vol[:-1]])
    return image_context.windows(prev)[:, list(TEMPORAL_ROWS)]


def gather(x: Tensor, anchors: bool) -> Tensor:
    """Values of (..., g, h, w) at one pass's positions: (..., g * N), frame by frame in coding order."""
    out = image_context.gather(x, anchors)
    return out.reshape(*x.shape[:-3], -1)


def pass_inputs(vol: Tensor, parent: Tensor | None, anchors: bool) -> Tensor:
    """Features (g * N, C) of one pass over every frame of `vol`, frame by frame in coding order."""
    g = vol.shape[0]
    spatial = image_context.spatial_inputs(vol, parent, anchors)
    temporal = image_context.gather(temporal_features(vol), anchors)
    rows = torch.cat([spatial, temporal], dim=1)
    return rows.transpose(1, 2).reshape(g * rows.shape[2], rows.shape[1])


def parent_volume(planes: list[Tensor], k: int) -> Tensor | None:
    """Level k's parent (level k + 1's volume) cut to level k's latent frames (a level that holds only a
    key frame's has one); None for the coarsest level."""
    return planes[k + 1][:planes[k].shape[0]] if k + 1 < len(planes) else None


def frame_inputs(vol: Tensor, parent: Tensor | None, t: int, anchors: bool) -> Tensor:
    """Features (N, C) of one pass over frame t only (what the decoder evaluates): the same rows
    `pass_inputs` gives for frame t, computed on the two-frame volume (t-1, t)."""
    prev = vol[t - 1:t] if t > 0 else torch.zeros_like(vol[:1])
    pair = torch.cat([prev, vol[t:t + 1]])
    par = None if parent is None else parent[t:t + 1].expand(2, -1, -1)
    rows = pass_inputs(pair, par, anchors)
    return rows[rows.shape[0] // 2:]

"""Context features of the latent pyramid: coarser-level parents plus a checkerboard of neighbours.

Each level is coded in two whole-plane passes. Anchors ((i + j) even) see only the already decoded
coarser level: the 3x3 parent window, flipped so that its first row/column lies towards the child.
Non-anchors also see the 12 anchors around them (4 direct neighbours and 8 knight moves), all decoded
in the first pass. No position ever reads a value decoded after it, so the decoder runs two vectorized
passes per level and computes exactly the features the encoder computed from the full planes.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

PARENT_FEATURES = 9
NEIGHBOUR_OFFSETS = ((-1, 0), (0, -1), (0, 1), (1, 0),
                     (-1, -2), (-1, 2), (1, -2), (1, 2), (-2, -1), (-2, 1), (2, -1), (2, 1))
NEIGHBOUR_FEATURES = len(NEIGHBOUR_OFFSETS)
ANCHOR_IN = PARENT_FEATURES
NONANCHOR_IN = PARENT_FEATURES + NEIGHBOUR_FEATURES


def level_shapes(height: int, width: int, n_levels: int) -> list[tuple[int, int]]:
    """(h, w) of each level: level l is ceil(size / 2**l)."""
    return [(-(-height // 2**lv), -(-width // 2**lv)) for lv in range(n_levels)]


@functools.lru_cache(maxsize=64)
def _parent_index(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Padded-parent row and column indices (3, h) and (3, w): nearest, towards, away from the child."""
    def axis(n: int) -> Tensor:
        i = torch.arange(n)
        p = i // 2 + 1  # +1 for the zero padding
        toward = torch.where(i % 2 == 0, -1, 1)
        return torch.stack([p, p + toward, p - toward])
    return axis(h), axis(w)


def parent_features(parent: Tensor | None, h: int, w: int) -> Tensor:
    """(9, h*w) parent context for a level of size (h, w) from the coarser plane (or zeros)."""
    if parent is None:
        return torch.zeros(PARENT_FEATURES, h * w)
    rows, cols = _parent_index(h, w)
    padded = F.pad(parent[None, None], (1, 1, 1, 1))[0, 0]
    feats = [padded[rows[u][:, None], cols[v][None, :]] for u in range(3) for v in range(3)]
    return torch.stack(feats).reshape(PARENT_FEATURES, h * w)


def neighbour_features(plane: Tensor) -> Tensor:
    """(12, h*w) same-level context (meaningful at non-anchors, where all 12 positions are anchors)."""
    h, w = plane.shape
    padded = F.pad(plane[None, None], (2, 2, 2, 2))[0, 0]
    feats = [padded[2 + di:2 + di + h, 2 + dj:2 + dj + w] for di, dj in NEIGHBOUR_OFFSETS]
    return torch.stack(feats).reshape(NEIGHBOUR_FEATURES, h * w)


@functools.lru_cache(maxsize=64)
def checkerboard(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Flat indices of anchors ((i + j) even) and non-anchors of an (h, w) plane."""
    i = torch.arange(h)[:, None]
    j = torch.arange(w)[None, :]
    anchor = ((i + j) % 2 == 0).reshape(-1)
    return torch.nonzero(anchor).reshape(-1), torch.nonzero(~anchor).reshape(-1)


def pass_inputs(plane: Tensor, parent: Tensor | None, anchors: bool) -> tuple[Tensor, Tensor]:
    """(positions, features (N, C)) of one pass over `plane` (anchors or non-anchors)."""
    h, w = plane.shape
    a_idx, n_idx = checkerboard(h, w)
    par = parent_features(parent, h, w).to(plane.dtype)
    if anchors:
        return a_idx, par[:, a_idx].T
    nb = neighbour_features(plane)
    return n_idx, torch.cat([par[:, n_idx], nb[:, n_idx]]).T

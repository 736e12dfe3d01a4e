"""Context features of the latent pyramid: coarser-level parents plus a checkerboard of neighbours.

Each level is coded in two whole-plane passes. Anchors ((i + j) even) see only the already decoded
coarser level: the 3x3 parent window, flipped so that its first row/column lies towards the child.
Non-anchors also see the 12 anchors around them (4 direct neighbours and 8 knight moves), all decoded
in the first pass. No position ever reads a value decoded after it, so the decoder runs two vectorized
passes per level and computes exactly the features the encoder computed from the full planes.
"""

from __future__ import annotations

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


def _shifted(plane: Tensor, dr: int, dc: int, pad: int) -> Tensor:
    """plane[i + dr, j + dc] with zeros outside (a slice of a zero-padded copy: cheap to differentiate)."""
    h, w = plane.shape
    padded = F.pad(plane[None, None], (pad, pad, pad, pad))[0, 0]
    return padded[pad + dr:pad + dr + h, pad + dc:pad + dc + w]


def parent_features(parent: Tensor | None, h: int, w: int) -> Tensor:
    """(9, h, w) parent context for a level of size (h, w) from the coarser plane (or zeros).

    Feature (u, v), u, v in (0, +1, -1) meaning (same, towards the child, away from it), is the parent
    at (i // 2 + u * t_i, j // 2 + v * t_j) with t = -1 for even and +1 for odd child coordinates.
    """
    if parent is None:
        return torch.zeros(PARENT_FEATURES, h, w)
    hp, wp = parent.shape
    padded = F.pad(parent[None, None], (1, 1, 1, 1))[0, 0]
    shift = {(dr, dc): padded[1 + dr:1 + dr + hp, 1 + dc:1 + dc + wp]
             for dr in (-1, 0, 1) for dc in (-1, 0, 1)}
    feats = []
    for u in (0, 1, -1):
        for v in (0, 1, -1):
            phases = torch.stack([torch.stack([shift[(u * ti, v * tj)] for tj in (-1, 1)]) for ti in (-1, 1)])
            # (2 row parities, 2 col parities, hp, wp) -> (2hp, 2wp): child (2a + pi, 2b + pj)
            feats.append(phases.permute(2, 0, 3, 1).reshape(2 * hp, 2 * wp)[:h, :w])
    return torch.stack(feats)


def neighbour_features(plane: Tensor) -> Tensor:
    """(12, h, w) same-level context (meaningful at non-anchors, where all 12 positions are anchors)."""
    return torch.stack([_shifted(plane, di, dj, 2) for di, dj in NEIGHBOUR_OFFSETS])


ANCHOR_PHASES = ((0, 0), (1, 1))  # (row, col) parities of anchors; coding order within a pass
OTHER_PHASES = ((0, 1), (1, 0))


def gather(x: Tensor, anchors: bool) -> Tensor:
    """Values of (..., h, w) at one pass's positions, flattened in coding order: (..., N)."""
    phases = ANCHOR_PHASES if anchors else OTHER_PHASES
    parts = [x[..., a::2, b::2].reshape(*x.shape[:-2], -1) for a, b in phases]
    return torch.cat(parts, dim=-1)


def scatter(plane: Tensor, values: Tensor, anchors: bool) -> None:
    """Write one pass's values (coding order) into `plane` in place."""
    pos = 0
    for a, b in (ANCHOR_PHASES if anchors else OTHER_PHASES):
        view = plane[a::2, b::2]
        n = view.numel()
        view.copy_(values[pos:pos + n].reshape(view.shape))
        pos += n


def pass_inputs(plane: Tensor, parent: Tensor | None, anchors: bool) -> Tensor:
    """Features (N, C) of one pass over `plane` (anchors or non-anchors), in coding order."""
    h, w = plane.shape
    par = parent_features(parent, h, w).to(plane.dtype)
    if anchors:
        return gather(par, True).T
    nb = neighbour_features(plane)
    return gather(torch.cat([par, nb]), False).T

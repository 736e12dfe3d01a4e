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


PARENT_ORDER = tuple((u, v) for u in (0, 1, -1) for v in (0, 1, -1))  # (same, towards, away)


def windows(x: Tensor) -> Tensor:
    """(g, 9, h, w) 3x3 windows of (g, h, w), zeros outside; row 3 * (dr + 1) + dc + 1 is x[i+dr, j+dc]."""
    g, h, w = x.shape
    return F.unfold(x[:, None], 3, padding=1).reshape(g, 9, h, w)


def _anchor_phases(vol: Tensor) -> Tensor:
    """(2g, hh, ww): the (0, 0) and (1, 1) phases of (g, h, w), zero-padded to ceil(h / 2) x ceil(w / 2)."""
    g, h, w = vol.shape
    hh, ww = -(-h // 2), -(-w // 2)
    even = F.pad(vol, (0, 2 * ww - w, 0, 2 * hh - h)).reshape(g, hh, 2, ww, 2)
    return torch.cat([even[:, :, 0, :, 0], even[:, :, 1, :, 1]])


def _phase_rows(pi: int, pj: int, neighbours: bool) -> list[int]:
    """Rows of the stacked windows (9 parent rows, then 9 per anchor phase) that give the features of
    the positions of phase (pi, pj): the parent window flipped per parity, then the 12 neighbours."""
    ti, tj = (-1 if pi == 0 else 1), (-1 if pj == 0 else 1)
    rows = [(u * ti + 1) * 3 + v * tj + 1 for u, v in PARENT_ORDER]
    if neighbours:
        for di, dj in NEIGHBOUR_OFFSETS:
            phase = 0 if (pi + di) % 2 == 0 else 1  # every neighbour of a non-anchor is an anchor
            rows.append(9 + 9 * phase + ((pi + di) // 2 + 1) * 3 + (pj + dj) // 2 + 1)
    return rows


def spatial_inputs(vol: Tensor, parent: Tensor | None, anchors: bool) -> Tensor:
    """Features (g, C, N) of one pass over each of the g planes of `vol` (g, h, w), coding order.

    Built from 3x3 windows of the coarser level and of the anchor phases at half resolution, so every
    feature is computed once, only where it is used (the same numbers as shifting the full planes).
    """
    g, h, w = vol.shape
    hh, ww = -(-h // 2), -(-w // 2)
    sources = [windows(parent) if parent is not None else vol.new_zeros(g, PARENT_FEATURES, hh, ww)]
    if not anchors:
        sources.append(windows(_anchor_phases(vol)).reshape(2, g, 9, hh, ww).transpose(0, 1)
                       .reshape(g, 18, hh, ww))
    source = torch.cat(sources, dim=1) if len(sources) > 1 else sources[0]
    parts = []
    for pi, pj in (ANCHOR_PHASES if anchors else OTHER_PHASES):
        rows = torch.tensor(_phase_rows(pi, pj, not anchors))
        part = source.index_select(1, rows)[:, :, :(h - pi + 1) // 2, :(w - pj + 1) // 2]
        parts.append(part.reshape(g, rows.numel(), -1))
    return torch.cat(parts, dim=-1)


def pass_inputs(plane: Tensor, parent: Tensor | None, anchors: bool) -> Tensor:
    """Features (N, C) of one pass over `plane` (anchors or non-anchors), in coding order."""
    return spatial_inputs(plane[None], None if parent is None else parent[None], anchors)[0].T

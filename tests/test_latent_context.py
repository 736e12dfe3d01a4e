"""The latent codec's context features against a per-position reference written from their definition."""

from __future__ import annotations

import pytest
import torch

from fieldpress.fields.latent import context


def _at(x: torch.Tensor, i: int, j: int) -> float:
    h, w = x.shape
    return float(x[i, j]) if 0 <= i < h and 0 <= j < w else 0.0


def _reference(plane: torch.Tensor, parent: torch.Tensor | None, anchors: bool) -> torch.Tensor:
    """Row by row: the flipped 3x3 parent window, then (non-anchors) the 12 anchor neighbours."""
    rows = []
    h, w = plane.shape
    for pi, pj in context.ANCHOR_PHASES if anchors else context.OTHER_PHASES:
        for i in range(pi, h, 2):
            for j in range(pj, w, 2):
                ti, tj = (-1 if i % 2 == 0 else 1), (-1 if j % 2 == 0 else 1)
                row = [0.0 if parent is None else _at(parent, i // 2 + u * ti, j // 2 + v * tj)
                       for u, v in context.PARENT_ORDER]
                if not anchors:
                    row += [_at(plane, i + di, j + dj) for di, dj in context.NEIGHBOUR_OFFSETS]
                rows.append(row)
    width = context.ANCHOR_IN if anchors else context.NONANCHOR_IN
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, width)


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 1), (5, 7), (8, 6), (9, 9)])
@pytest.mark.parametrize("anchors", [True, False])
def test_pass_inputs_match_the_definition(shape: tuple[int, int], anchors: bool) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    plane = torch.randint(-9, 10, shape, generator=gen).double()
    parent = torch.randint(-9, 10, ((shape[0] + 1) // 2, (shape[1] + 1) // 2), generator=gen).double()
    for par in (parent, None):
        got = context.pass_inputs(plane, par, anchors)
        assert torch.equal(got, _reference(plane, par, anchors))
        assert got.shape[0] == context.gather(plane, anchors).numel()


def test_non_anchor_features_ignore_the_non_anchors() -> None:
    """What the decoder relies on: a non-anchor's features never read a non-anchor (undecoded) value."""
    plane = torch.randint(-9, 10, (7, 8)).double()
    other = plane.clone()
    context.scatter(other, torch.full((context.gather(plane, False).numel(),), 99.0).double(), False)
    assert torch.equal(context.pass_inputs(plane, None, False), context.pass_inputs(other, None, False))

"""Rate control: the quality ladder, lambda checks, the target-bpp search and its errors."""

from __future__ import annotations

import math

import pytest

from fieldpress.codec import rate_control as rc
from fieldpress.errors import InputError


def test_quality_ladder_is_monotone():
    lams = [rc.quality_lambda(q) for q in range(1, 9)]
    assert all(a > b for a, b in zip(lams, lams[1:]))


@pytest.mark.parametrize("q", [0, 9, -1, 2.5, True, "3"])
def test_quality_out_of_range(q):
    with pytest.raises(InputError, match="quality"):
        rc.quality_lambda(q)


@pytest.mark.parametrize("lam", [0, -1e-3, math.inf, math.nan, "x"])
def test_bad_lambda(lam):
    with pytest.raises(InputError, match="lambda"):
        rc.check_lambda(lam)


def _measure(lam: float) -> float:
    return 0.05 / math.sqrt(lam)  # a smooth stand-in for fit + encode: bpp falls as lambda grows


def test_target_search_lands_near_the_target():
    lam, probes = rc.search_lambda(0.5, _measure, tolerance=0.03, max_probes=12)
    assert _measure(lam) <= 0.5 * 1.03 and _measure(lam) >= 0.5 * 0.97
    assert len(probes) <= 12


def test_unreachable_target_is_an_input_error():
    with pytest.raises(InputError, match="unreachable"):
        rc.search_lambda(0.001, _measure)
    with pytest.raises(InputError, match="target"):
        rc.search_lambda(-1.0, _measure)

"""Rate control for rate-distortion training: a fixed quality ladder and a target-bpp search.

`lambda` weighs bits per pixel against MSE on [0, 1] pixels (loss = MSE + lambda * bpp). Quality
1..8 maps to a fixed ladder (1 = fewest bits), halving lambda per step. A target bpp is met by
bisection over log(lambda), each probe being a real encode measured from its file bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fieldpress.errors import InputError

QUALITY_LAMBDAS: dict[int, float] = {q: 0.04 / 2 ** (q - 1) for q in range(1, 9)}  # 0.04 ... 3.1e-4
LAMBDA_MIN, LAMBDA_MAX = 1e-5, 1.0
DEFAULT_QUALITY = 4  # the rung a rate-trained model uses when no --lambda or --quality is given


def check_lambda(lambda_: float) -> float:
    """A positive, finite lambda (InputError otherwise)."""
    try:
        value = float(lambda_)
    except (TypeError, ValueError):
        raise InputError(f"lambda must be a positive number, got {lambda_!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"lambda must be a positive number, got {lambda_!r}")
    return value


def quality_lambda(quality: int) -> float:
    """The lambda of quality 1..8 (InputError outside that range)."""
    if isinstance(quality, bool) or not isinstance(quality, int) or quality not in QUALITY_LAMBDAS:
        raise InputError(f"quality must be an integer from 1 to 8, got {quality!r}")
    return QUALITY_LAMBDAS[quality]


@dataclass(frozen=True)
class Probe:
    """One trial of a target search: the lambda tried and the bpp its file measured."""

    lambda_: float
    bpp: float


def search_lambda(target_bpp: float, measure: Callable[[float], float], tolerance: float = 0.03,
                  max_probes: int = 6, lo: float = LAMBDA_MIN,
                  hi: float = LAMBDA_MAX) -> tuple[float, list[Probe]]:
    """Largest-quality lambda whose measured bpp is at most `target_bpp` (within `tolerance` relative).

    `measure(lambda)` encodes and returns the file's bpp (which falls as lambda grows). Raises
    InputError for a non-positive target or when even the largest lambda overshoots it.
    """
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise InputError(f"target bpp must be a positive number, got {target_bpp!r}")
    probes = [Probe(hi, measure(hi))]
    if probes[0].bpp > target_bpp * (1 + tolerance):
        raise InputError(f"target {target_bpp:g} bpp is unreachable: the lowest rate gives "
                         f"{probes[0].bpp:.4f} bpp")
    best = probes[0]
    a, b = math.log(lo), math.log(hi)  # bpp(a) > target >= bpp(b)
    for _ in range(max_probes - 1):
        mid = math.exp(0.5 * (a + b))
        p = Probe(mid, measure(mid))
        probes.append(p)
        if p.bpp <= target_bpp * (1 + tolerance):
            best = p if p.lambda_ < best.lambda_ else best
            if p.bpp >= target_bpp * (1 - tolerance):
                break
            b = math.log(mid)
        else:
            a = math.log(mid)
    return best.lambda_, probes

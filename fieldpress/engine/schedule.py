"""Learning-rate schedules by name: a factor of the stage's lr as a function of the step in the stage.

Warmup (a fraction of the stage) rises linearly from `WARMUP_START` x lr to lr, as NeRV and HNeRV
do (`--lr_type cosine_0.1_1_0.1`); after it, "cosine" decays to `min_lr_ratio` x lr and
"constant" holds. The factor depends only on (step, total), so resuming needs only the step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

WARMUP_START = 0.1


def _cosine(t: float, min_ratio: float) -> float:
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _constant(t: float, min_ratio: float) -> float:
    return 1.0


SCHEDULES: dict[str, Callable[[float, float], float]] = {"cosine": _cosine, "constant": _constant}


def register_schedule(name: str, fn: Callable[[float, float], float]) -> None:
    """Add a schedule: `fn(t, min_ratio)` with t in [0, 1] the progress after warmup."""
    SCHEDULES[name] = fn


def lr_factor(step: int, total: int, warmup: float, schedule: str = "cosine",
              min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at `step` (0-based) of a stage of `total` steps."""
    if total <= 0:
        return 1.0
    warm = int(round(warmup * total))
    if step < warm:
        return WARMUP_START + (1.0 - WARMUP_START) * step / warm
    span = max(total - warm, 1)
    t = min(max((step - warm) / span, 0.0), 1.0)
    return SCHEDULES[schedule](t, min_ratio)

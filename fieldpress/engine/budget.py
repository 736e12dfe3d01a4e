"""Turn a wall-time budget (`--minutes`) into step/epoch counts, once, from one step probe.

Every family plans its budget here: probe the seconds of one optimizer step, subtract what must stay
for after the fit (coding, final renders), and size the stages so their whole schedule (warmup and
cosine included) ends inside the budget: a time cap that cut a cosine schedule short would leave the
learning rate high. The plan goes into the checkpoint's meta (`Fitter(..., budget=plan)`), so a
resumed fit reuses it instead of probing again (a new probe would give other counts, another plan,
and resume would refuse).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from fieldpress.engine.checkpoint import checkpoint_dir, find_checkpoint, load_checkpoint
from fieldpress.errors import InputError


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """A planned budget: the inputs, the probe result and the counts.

    `requested` holds the epochs asked for per stage name (None: "as many as fit"); `epochs` the
    planned counts; `cap_minutes` the hard cap to hand the Fitter (`FitConfig.minutes`): the budget
    left after the reserve and the time already spent when planning.
    """

    minutes: float
    seconds_per_step: float
    steps_per_epoch: int
    reserve_seconds: float
    requested: dict[str, int] | None
    epochs: dict[str, int]
    cap_minutes: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BudgetPlan:
        req = d.get("requested")
        return cls(float(d["minutes"]), float(d["seconds_per_step"]), int(d["steps_per_epoch"]),
                   float(d["reserve_seconds"]), None if req is None else {k: int(v) for k, v in req.items()},
                   {k: int(v) for k, v in d["epochs"].items()}, float(d["cap_minutes"]))


def stored_budget(output: str | os.PathLike[str]) -> BudgetPlan | None:
    """The budget plan recorded in the checkpoint beside `output`, or None (no checkpoint, no plan)."""
    if find_checkpoint(checkpoint_dir(output)) is None:
        return None
    _, meta = load_checkpoint(checkpoint_dir(output))
    stored = meta.get("budget")
    return BudgetPlan.from_dict(stored) if stored else None


def _counts(requested: Mapping[str, int] | None, usable: float, step_s: float, spe: int,
            shrink: bool, min_epochs: int) -> dict[str, int]:
    """Epochs per stage: as many as fit (requested None), or the requested ones scaled down to fit."""
    epoch_s = max(step_s * spe, 1e-9)
    if requested is None:
        return {"fit": max(min_epochs, int(usable / epoch_s))}
    if not shrink:
        return dict(requested)
    factor = min(1.0, usable / max(sum(requested.values()) * epoch_s, 1e-9))
    return {k: max(min_epochs, int(v * factor)) for k, v in requested.items()}


def plan_budget(minutes: float, seconds_per_step: float | Callable[[], float], *,
                epochs: Mapping[str, int] | None = None, steps_per_epoch: int = 1,
                reserve_seconds: float | Callable[[], float] = 0.0, elapsed_seconds: float = 0.0,
                margin: float = 1.0, min_epochs: int = 1, shrink: bool = True,
                resume_from: str | os.PathLike[str] | None = None) -> BudgetPlan:
    """Plan `minutes` of fitting: `margin` x (budget - reserve - elapsed) of steps.

    `seconds_per_step` and `reserve_seconds` may be callables (probes), called only when a plan is
    made. `epochs` requested per stage are scaled down to fit (never up; `shrink=False` keeps them
    and leaves the budget only as the hard cap); None plans one "fit" stage of as many epochs as fit.
    With `resume_from` (the fit's output path) the plan recorded in its checkpoint is returned
    unprobed when it was made for the same minutes and request.
    """
    if not minutes > 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    requested = None if epochs is None else {k: int(v) for k, v in epochs.items()}
    if resume_from is not None:
        stored = stored_budget(resume_from)
        if stored is not None and stored.minutes == minutes and stored.requested == requested:
            return stored
    step_s = float(seconds_per_step() if callable(seconds_per_step) else seconds_per_step)
    reserve = float(reserve_seconds() if callable(reserve_seconds) else reserve_seconds)
    available = max(1.0, minutes * 60.0 - reserve - elapsed_seconds)
    counts = _counts(requested, margin * available, step_s, steps_per_epoch, shrink, min_epochs)
    return BudgetPlan(float(minutes), step_s, int(steps_per_epoch), reserve, requested, counts,
                      available / 60.0)

"""Fit a clip group by group: loss = MSE + lambda * bits per pixel, each group warm-started from the
previous one, under a CPU-time budget shared between the groups.

The schedule of each group is the image codec's (soft-round + noise with an annealed temperature and
a cosine learning rate, then a short straight-through phase); the first group, which starts cold,
gets `FIRST_GROUP_SHARE` times the budget per frame of the others. Under a CPU-time budget the
schedule follows the share of the group's budget spent (so a busy machine shortens nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fieldpress.codec.rate_control import check_lambda
from fieldpress.errors import InputError
from fieldpress.fields.latent.fit import FitConfig, latent_optimizer, train_step
from fieldpress.video.latent.config import VideoLatentConfig
from fieldpress.video.latent.model import LatentGroupModel

FIRST_GROUP_SHARE = 2.0
MIN_STEPS = 4


@dataclass
class GroupFit:
    """A trained group: its model, first frame and training trace."""

    model: LatentGroupModel
    start: int
    steps: int
    seconds: float
    last: dict[str, float]


def group_ranges(frames: int, group: int) -> list[tuple[int, int]]:
    """(start, end) of each group of `group` frames (the last may be shorter)."""
    return [(s, min(s + group, frames)) for s in range(0, frames, group)]


def fit_group(target: Tensor, config: VideoLatentConfig, lambda_: float, *, steps: int | None = None,
              seconds: float | None = None, previous: LatentGroupModel | None = None,
              fit: FitConfig = FitConfig(), frames_per_step: int | None = None,
              ) -> tuple[LatentGroupModel, int, float, dict[str, float]]:
    """Fit one group ((frames, 3, H, W) in [0, 1]) for `steps` or about `seconds` of CPU time, starting
    from `previous` when given; each step synthesizes the frames `LatentGroupModel.training_frames` draws
    (`frames_per_step` at random; None: all). Returns (model, steps, CPU seconds, last step's record)."""
    model = LatentGroupModel(config, target.shape[0], target.shape[2], target.shape[3])
    if previous is not None:
        model.warm_start(previous)
    opt = latent_optimizer(model, fit)
    draw = torch.Generator().manual_seed(fit.seed)
    start = time.process_time()
    step, rec = 0, {}
    while True:  # progress: the share of the steps, or of the CPU time, spent so far
        if steps is not None:
            if step >= steps:
                break
            progress = step / steps
        else:
            progress = (time.process_time() - start) / max(float(seconds or 0.0), 1e-9)
            if progress >= 1.0 and step >= MIN_STEPS:
                break
        model.subset = model.training_frames(draw, frames_per_step, min(progress, 1.0))
        rec = train_step(model, opt, target if model.subset is None else target[model.subset], lambda_,
                         min(progress, 1.0), fit)
        step += 1
    model.subset = None
    return model, step, time.process_time() - start, rec


def fit_clip(frames: Tensor, config: VideoLatentConfig, lambda_: float, *, steps: int | None = None,
             seconds: float | None = None, fit: FitConfig = FitConfig(),
             progress: Callable[[int, int, dict[str, float]], None] | None = None,
             frames_per_step: int | None = None) -> list[GroupFit]:
    """Fit every group of `frames` ((T, 3, H, W) float in [0, 1]) in order. `steps` is per group;
    `seconds` (CPU time of this process) is for the whole clip; `frames_per_step` as in `fit_group`."""
    check_lambda(lambda_)
    if (steps is None) == (seconds is None):
        raise InputError("give exactly one of steps or seconds")
    torch.manual_seed(fit.seed)
    ranges = group_ranges(frames.shape[0], config.group)
    weights = [(e - s) * (FIRST_GROUP_SHARE if i == 0 else 1.0) for i, (s, e) in enumerate(ranges)]
    out: list[GroupFit] = []
    spent, previous = 0.0, None
    for i, (s, e) in enumerate(ranges):
        budget = None
        if seconds is not None:  # what is left, shared by the groups still to fit
            budget = max(0.0, seconds - spent) * weights[i] / sum(weights[i:])
        model, n, sec, rec = fit_group(frames[s:e], config, lambda_, steps=steps, seconds=budget,
                                       previous=previous, fit=fit, frames_per_step=frames_per_step)
        spent += sec
        out.append(GroupFit(model, s, n, sec, rec))
        previous = model
        if progress is not None:
            progress(i + 1, len(ranges), {**rec, "steps": n, "seconds": sec})
    return out

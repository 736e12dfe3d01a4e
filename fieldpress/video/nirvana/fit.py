"""``fit-video --model nirvana``: fit one network per group of frames, in order, each warm-started from
the previous group's integers, with loss = MSE + lambda x bits per pixel of the group's residual.

Schedule per group (the paper's idea, scaled to the CPU): S Adam steps on the whole group (all
patches, every step) for a warm-started group and 2S for the first group and a group that starts a
new scene; soft-round + noise proxies annealed towards straight-through rounding
(`fieldpress.codec.proxies`), cosine learning rate. S is ``--epochs``, or, with ``--minutes``, as many
as fit in that much CPU time (this process's, all threads): `plan_steps` probes one step on the first
group and plans S once through `fieldpress.engine.budget.plan_budget` (the plan is kept in the
checkpoint, so ``--resume`` reuses it); ``--minutes`` wins over ``--epochs``, as for ``--model latent``.
Lambda is ``--lambda``, or ``--quality`` through `fieldpress.codec.rate_control`. The network's size is
fixed by `NirvanaConfig`'s defaults and ``--bits``; ``--size`` and the VideoINR flags (prune, QAT, CAM,
batch size) do not apply to NIRVANA.

Checkpoints: the Fitter runs one model through stages, but here every group is its own small fit whose
result (integers) is the next one's start, so the loop checkpoints itself at group granularity: after
each group, ``<output>.ckpt/`` (the engine's safetensors + JSON checkpoint) holds every finished group's
integers and log-scales and the flags. ``--resume`` refuses other flags and continues with the next
group; each group's fit depends only on its start and on ``--seed`` and its index, so a resumed fit
writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec import proxies
from fieldpress.codec.rate_control import check_lambda, quality_lambda
from fieldpress.engine.budget import BudgetPlan, plan_budget
from fieldpress.errors import InputError, ResumeError
from fieldpress.video.nirvana.grouping import Group, plan_groups, scene_cuts
from fieldpress.video.nirvana.model import GroupNet, NirvanaConfig

DEFAULT_GROUP = 4
DEFAULT_KEY_EVERY = 8
DEFAULT_QUALITY = 4
LR = 1e-2              # Adam step in weight units (divided by each tensor's quantization step)
LR_SCALES = 2e-2       # Adam step of the rate model's log-scales
FINAL_LR = 0.05        # the cosine ends at this fraction
WARM_LR = 0.25         # a warm-started group's learning rate, relative to the first group's
MIN_STEPS = 5          # --minutes never plans fewer steps per group than this
BUDGET_MARGIN = 0.9    # share of the --minutes budget (after the reserve) the planned steps may fill


@dataclass(frozen=True)
class NirvanaFit:
    """What decides a NIRVANA fit (from `FitOptions`; also the resume signature)."""

    group_size: int = DEFAULT_GROUP
    key_every: int = DEFAULT_KEY_EVERY
    adaptive: bool = True
    lmbda: float = 0.005
    steps: int = 300
    lr: float = LR
    warm_lr: float = WARM_LR
    bits: int = 8
    seed: int = 0
    minutes: float | None = None  # CPU-time budget of the whole encode; None: `steps` per group


def settings(options: Any) -> NirvanaFit:
    """`NirvanaFit` from fit-video's `FitOptions` (InputError on bad values)."""
    if options.lmbda is not None and options.quality is not None:
        raise InputError("give --lambda or --quality, not both")
    lmbda = (check_lambda(options.lmbda) if options.lmbda is not None
             else quality_lambda(options.quality if options.quality is not None else DEFAULT_QUALITY))
    if not 2 <= options.bits <= 8:
        raise InputError(f"--bits must be in 2..8 for nirvana (residuals are coded in 8 bits), "
                         f"got {options.bits}")
    if options.epochs < 1:
        raise InputError("--epochs must be at least 1")
    minutes = options.minutes
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise InputError(f"--minutes must be a positive number, got {minutes}")
    return NirvanaFit(group_size=options.group_size if options.group_size is not None else DEFAULT_GROUP,
                      key_every=options.key_every if options.key_every is not None else DEFAULT_KEY_EVERY,
                      adaptive=options.adaptive_groups, lmbda=lmbda, steps=options.epochs,
                      lr=options.lr or LR, bits=options.bits, seed=options.seed,
                      minutes=None if minutes is None else float(minutes))


def groups_for(frames: np.ndarray, fit: NirvanaFit) -> list[Group]:
    """The clip's groups (adaptive: new groups and key groups at scene cuts)."""
    cuts = scene_cuts(frames) if fit.adaptive else []
    return plan_groups(len(frames), fit.group_size, fit.key_every, cuts)


def _lr_factor(progress: float) -> float:
    return FINAL_LR + (1 - FINAL_LR) * 0.5 * (1 + math.cos(math.pi * progress))


def fit_group(cfg: NirvanaConfig, target: torch.Tensor, start: list[torch.Tensor],
              reference: list[torch.Tensor], log_scales: torch.Tensor | None, fit: NirvanaFit, steps: int,
              seed: int) -> tuple[GroupNet, dict[str, float]]:
    """Fit one group (target (n, 3, H, W) in [0, 1], n <= G) from `start`; returns the net and facts."""
    torch.manual_seed(seed)
    net = GroupNet(cfg, start, reference, log_scales)
    opt = torch.optim.Adam([{"params": [v], "lr": fit.lr / s, "base": fit.lr / s}
                            for v, s in zip(net.latents, net.steps)]
                           + [{"params": [net.log_scales], "lr": LR_SCALES, "base": LR_SCALES}])
    n, pixels = target.shape[0], target.shape[0] * target.shape[2] * target.shape[3]
    for step in range(steps):
        progress = step / steps
        for group in opt.param_groups:
            group["lr"] = group["base"] * _lr_factor(progress)
        frames, bits = net(proxies.schedule(progress))
        mse = torch.mean((frames[:n] - target) ** 2)
        loss = mse + fit.lmbda * bits / pixels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        net.project()
    with torch.no_grad():
        frames, bits = net(None)
        mse = float(torch.mean((frames[:n].clamp(0, 1) - target) ** 2))
    return net, {"psnr": round(-10 * math.log10(max(mse, 1e-12)), 3), "bits_estimate": round(float(bits), 1)}


def step_units(groups: list[Group]) -> int:
    """Steps one "epoch" (S = 1) costs over the clip: 2 for the first group and cut groups, 1 for others."""
    return sum(2 if g.reason in ("first", "cut") else 1 for g in groups)


def probe_step_seconds(cfg: NirvanaConfig, target: torch.Tensor, start: list[torch.Tensor],
                       fit: NirvanaFit) -> float:
    """CPU seconds of one optimizer step on `target` (the first group): fits of 1 and 3 steps after a
    warm-up fit, differenced (so setup and the final render do not count as steps)."""
    zeros = [torch.zeros_like(s) for s in start]
    took = []
    for steps in (1, 1, 3):
        t0 = time.process_time()
        fit_group(cfg, target, start, zeros, None, fit, steps, fit.seed)
        took.append(time.process_time() - t0)
    return max(1e-5, (took[2] - took[1]) / 2)


def plan_steps(fit: NirvanaFit, groups: list[Group], probe: Callable[[], float], elapsed: float,
               resume_from: Path | None) -> BudgetPlan:
    """Steps per group S for ``--minutes`` of CPU time (`elapsed` already spent): the probe's step time
    over the clip's step units, after the probe's own cost and a reserve for coding and measuring
    (about one render per group, 5% of the budget, 1 s; 3% once overran a 6-second budget by 0.02 s).
    A resume gets the checkpoint's plan."""
    spent: list[float] = []  # [seconds per step, CPU seconds the probe took]

    def seconds_per_step() -> float:
        t0 = time.process_time()
        spent.append(probe())
        spent.append(time.process_time() - t0)
        return spent[0]

    def reserve() -> float:
        return spent[1] + len(groups) * spent[0] + 0.05 * fit.minutes * 60.0 + 1.0

    return plan_budget(fit.minutes, seconds_per_step, steps_per_epoch=step_units(groups),
                       reserve_seconds=reserve, elapsed_seconds=elapsed, margin=BUDGET_MARGIN,
                       min_epochs=MIN_STEPS, resume_from=resume_from)


def save_progress(output: Path, done: list[list[torch.Tensor]], scales: torch.Tensor, groups: list[Group],
                  facts: list[dict], signature: dict, budget: BudgetPlan | None = None) -> None:
    """Checkpoint after a group: every finished group's integers, the last log-scales, the flags (and the
    ``--minutes`` plan, which a resume reuses)."""
    from fieldpress.engine.checkpoint import checkpoint_dir, save_checkpoint

    tensors = {f"q/{g:06d}/{i}": x.to(torch.int16) for g, ints in enumerate(done) for i, x in enumerate(ints)}
    tensors["log_scales"] = scales.detach()
    meta = {"signature": signature, "done": len(done), "groups": [asdict(g) for g in groups], "facts": facts}
    if budget is not None:
        meta["budget"] = budget.to_dict()
    save_checkpoint(checkpoint_dir(output), tensors, meta)


def load_progress(output: Path, signature: dict, n_tensors: int) -> tuple[list, torch.Tensor, list, list]:
    """(integers per finished group, last log-scales, groups, facts) from ``<output>.ckpt/``."""
    from fieldpress.engine.checkpoint import checkpoint_dir, load_checkpoint

    tensors, meta = load_checkpoint(checkpoint_dir(output))
    if meta.get("signature") != signature:
        raise ResumeError("cannot resume: the flags or the input differ from the checkpoint's")
    try:
        done = [[tensors[f"q/{g:06d}/{i}"].to(torch.int64) for i in range(n_tensors)]
                for g in range(int(meta["done"]))]
        groups = [Group(**g) for g in meta["groups"]]
        return done, tensors["log_scales"], groups, list(meta["facts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ResumeError(f"cannot resume: damaged checkpoint ({exc})") from None

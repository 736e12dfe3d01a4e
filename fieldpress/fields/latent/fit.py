"""Overfit a latent-grid model to one image: loss = MSE + lambda * bits per pixel.

Schedule (after Cool-chic, shortened for CPU budgets): soft-round + noise with annealed temperature
and a cosine learning rate, then a short straight-through phase at a low learning rate. A CPU-time
budget is turned into a step count from the speed of steps 4-8 (``engine.plan_budget``; the first
three run slower and would leave a third of the budget unused), so the schedule knows its length;
steps slow down by up to a quarter as the fit goes on, so the count is corrected from the measured
speed at four points (``REPLAN_AT``), the schedule's progress running on without a jump, and the fit
stops once the budget is spent.
With ``Checkpointing`` the loop state (latents, networks, Adam, RNG, step, plan, trace) goes to
``<output>.ckpt/`` through the engine's checkpoint helpers, and a resumed fit continues bit for bit:
the same seed and steps give the same file with or without interruptions.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fieldpress.codec import proxies
from fieldpress.codec.rate_control import check_lambda
from fieldpress.engine.budget import BudgetPlan, plan_budget
from fieldpress.engine.checkpoint import (
    checkpoint_dir,
    flatten_optimizer,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from fieldpress.engine.rng import capture_rng, restore_rng
from fieldpress.errors import InputError, ResumeError
from fieldpress.fields.latent.config import LatentConfig
from fieldpress.fields.latent.model import LatentImageModel

WARMUP_STEPS = 3  # not timed for the plan: the first steps allocate and run up to 1.5x slower
PROBE_STEPS = 8  # a CPU-time budget is planned after this many steps, from steps 4-8
REPLAN_AT = (0.3, 0.6, 0.85, 0.95)  # schedule progress at which a budgeted fit re-times its remaining steps
CHECKPOINT_FORMAT = "latent-fit/1"


@dataclass(frozen=True)
class FitConfig:
    """Training settings of one fit."""

    lr_latents: float = 1e-1
    lr_networks: float = 2e-2
    lr_ste: float = 1e-2  # lr multiplier during the straight-through phase
    final_lr_fraction: float = 0.02
    proxy: proxies.ProxySchedule = field(default_factory=proxies.ProxySchedule)
    grad_clip: float = 1.0
    seed: int = 0
    adam_beta2: float = 0.999  # Adam's second-moment decay (the latent video codec uses 0.95: see its
    # method.ADAM_BETA2)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Checkpointing:
    """Where a fit checkpoints (``<output>.ckpt/``), whether it resumes from there, how often it saves
    (every ``every_steps`` steps and every ``every_seconds`` of wall time), what must match for a resume
    (``signature``: the image digest, the flags) and extra JSON facts kept with it (``extra``)."""

    output: Path
    resume: bool = False
    every_steps: int | None = None
    every_seconds: float = 60.0
    signature: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return checkpoint_dir(self.output)


@dataclass
class FitResult:
    """A trained model plus its training trace."""

    model: LatentImageModel
    lambda_: float
    steps: int
    seconds: float
    history: list[dict[str, float]]
    budget: BudgetPlan | None = None


@dataclass
class _Loop:
    """The loop's position: steps done, planned total, trace, CPU seconds before a resume, the plan,
    and for a budgeted fit the last correction: the (step, progress) the schedule runs on from and the
    (step, CPU seconds) its speed is measured from, with the corrections made so far."""

    step: int
    total: int
    history: list[dict[str, float]]
    seconds_before: float = 0.0
    budget: BudgetPlan | None = None
    anchor: tuple[int, float] = (0, 0.0)
    mark: tuple[int, float] = (0, 0.0)
    replans: int = 0

    def progress(self) -> float:
        """Schedule progress (0..1) at this step: linear from the anchor to the planned total
        (``step / total`` until a correction moves the anchor)."""
        a_step, a_progress = self.anchor
        return a_progress + (self.step - a_step) / (self.total - a_step) * (1.0 - a_progress)


def replan(loop: _Loop, elapsed: float, seconds: float) -> None:
    """Re-time a budgeted fit at its current step: the speed since the last mark sets how many steps
    the CPU time left (`seconds` - `elapsed`) buys; the progress reached becomes the new anchor, so the
    learning rate and proxy schedules continue from where they are, only faster or slower."""
    m_step, m_seconds = loop.mark
    per_step = (elapsed - m_seconds) / max(1, loop.step - m_step)
    remaining = max(1, int((seconds - elapsed) / max(per_step, 1e-9)))
    loop.anchor = (loop.step, loop.progress())
    loop.total = loop.step + remaining
    loop.mark = (loop.step, elapsed)
    loop.replans += 1


def lr_factor(progress: float, fit: FitConfig) -> float:
    """The learning-rate multiplier at `progress` (0..1): cosine over the soft phase, then `lr_ste`."""
    soft_end = 1.0 - fit.proxy.ste_fraction
    if progress >= soft_end:
        return fit.lr_ste
    u = progress / soft_end
    return fit.final_lr_fraction + (1 - fit.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * u))


def latent_optimizer(model: torch.nn.Module, fit: FitConfig) -> torch.optim.Optimizer:
    """Adam with two groups: the latents (``model.latents``) at `lr_latents`, every other parameter at
    `lr_networks` (the order `train_step` sets their rates in), second moments decaying at `adam_beta2`."""
    nets = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
    return torch.optim.Adam([{"params": list(model.latents.parameters()), "lr": fit.lr_latents},
                             {"params": nets, "lr": fit.lr_networks}], betas=(0.9, fit.adam_beta2))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, target: Tensor, lambda_: float,
               progress: float, fit: FitConfig) -> dict[str, float]:
    """One step of MSE + lambda * bits per pixel on `target` ((B, 3, H, W): an image, or a group of
    frames for the latent video codec), with the proxy and learning rate at `progress`."""
    state = proxies.schedule(progress, fit.proxy)
    factor = lr_factor(progress, fit)
    for group, base in zip(opt.param_groups, (fit.lr_latents, fit.lr_networks)):
        group["lr"] = base * factor
    image, bits = model(state)
    npix = target[:, 0].numel()
    mse = torch.mean((image - target) ** 2)
    loss = mse + lambda_ * bits / npix
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if fit.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), fit.grad_clip)
    opt.step()
    mse_v = float(mse.detach())
    return {"loss": float(loss.detach()), "mse": mse_v, "bpp": float(bits.detach()) / npix,
            "psnr": -10 * math.log10(max(mse_v, 1e-12))}


_step = train_step  # the loop's name for it (bench/latent_step_speed.py times it in older checkouts too)


# ----------------------------------------------------------------------------- checkpoints
def _signature(ck: Checkpointing, config: LatentConfig, lambda_: float, steps: int | None,
               seconds: float | None, fit: FitConfig) -> dict[str, Any]:
    """What a resume must find unchanged: the caller's signature plus this fit's settings."""
    sig = {**ck.signature, "config": config.to_dict(), "fit": fit.to_dict(), "lambda": lambda_,
           "steps": steps, "seconds": seconds}
    return json.loads(json.dumps(sig))  # as it reads back from meta.json (tuples become lists)


def read_checkpoint(ck: Checkpointing) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The checkpoint of a latent fit (ResumeError when missing, damaged or not a latent fit's)."""
    tensors, meta = load_checkpoint(ck.directory)
    if meta.get("kind") != CHECKPOINT_FORMAT:
        raise ResumeError(f"cannot resume: {ck.directory} is not a latent fit's checkpoint")
    return tensors, meta


def _save(ck: Checkpointing, signature: dict[str, Any], model: LatentImageModel,
          opt: torch.optim.Optimizer, loop: _Loop, elapsed: float) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_t, optim_meta = flatten_optimizer(opt)
    rng_t, rng_meta = capture_rng()
    meta = {"kind": CHECKPOINT_FORMAT, "signature": signature, "global_step": loop.step,
            "total": loop.total, "history": loop.history, "seconds": elapsed, "optimizer": optim_meta,
            "anchor": list(loop.anchor), "mark": list(loop.mark), "replans": loop.replans,
            "rng": rng_meta, "budget": loop.budget.to_dict() if loop.budget else None,
            "extra": dict(ck.extra), "torch": torch.__version__}
    save_checkpoint(ck.directory, {**tensors, **optim_t, **rng_t}, meta)


def _restore(ck: Checkpointing, signature: dict[str, Any], model: LatentImageModel,
             opt: torch.optim.Optimizer) -> _Loop:
    tensors, meta = read_checkpoint(ck)
    stored = meta.get("signature")
    if stored != signature:
        keys = sorted(k for k in {*(stored or {}), *signature} if (stored or {}).get(k) != signature.get(k))
        raise ResumeError(f"cannot resume: the flags differ from the checkpoint's ({', '.join(keys)}); "
                          "rerun without --resume to start over")
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ResumeError(f"cannot resume: the checkpoint does not fit this model: {first}") from None
    restore_optimizer(opt, tensors, meta["optimizer"])
    restore_rng(tensors, meta["rng"])
    budget = BudgetPlan.from_dict(meta["budget"]) if meta.get("budget") else None
    anchor, mark = meta.get("anchor", [0, 0.0]), meta.get("mark", [0, 0.0])
    return _Loop(int(meta["global_step"]), int(meta["total"]), list(meta["history"]),
                 float(meta["seconds"]), budget, (int(anchor[0]), float(anchor[1])),
                 (int(mark[0]), float(mark[1])), int(meta.get("replans", 0)))


@contextlib.contextmanager
def _sigint_flag() -> Iterator[list[bool]]:
    """First Ctrl-C sets the flag (the loop checkpoints after the step, then stops); a second raises."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- the fit
def _check(image: Tensor, lambda_: float, steps: int | None, seconds: float | None) -> None:
    check_lambda(lambda_)
    if (steps is None) == (seconds is None):
        raise InputError("give exactly one of steps or seconds")
    if seconds is not None and not seconds > 0:
        raise InputError(f"the time budget must be positive, got {seconds} s")
    if image.dim() != 3 or image.shape[0] != 3:
        raise InputError(f"expected a (3, H, W) image, got {tuple(image.shape)}")


def _plan(seconds: float, per_step: float) -> BudgetPlan:
    """The step count of a CPU-time budget: as many steps of the probed speed as fit (at least
    PROBE_STEPS + 1), planned once and stored in the checkpoint so a resume keeps it."""
    return plan_budget(seconds / 60.0, per_step, min_epochs=PROBE_STEPS + 1)


def fit_latent_image(image: Tensor, config: LatentConfig, lambda_: float, steps: int | None = None,
                     seconds: float | None = None, fit: FitConfig = FitConfig(),
                     progress: Callable[[int, int, dict[str, float]], None] | None = None,
                     checkpoints: Checkpointing | None = None) -> FitResult:
    """Fit a model to `image` ((3, H, W) float in [0, 1]) for `steps` or about `seconds` of CPU time.

    `seconds` counts this process's CPU time (all threads), so a busy machine does not shrink the fit.
    With `checkpoints`, the loop state is saved to `<output>.ckpt/` (and resumed from there on request).
    """
    _check(image, lambda_, steps, seconds)
    torch.manual_seed(fit.seed)
    target = image[None].float()
    model = LatentImageModel(config, image.shape[1], image.shape[2])
    opt = latent_optimizer(model, fit)
    signature = _signature(checkpoints, config, lambda_, steps, seconds, fit) if checkpoints else {}
    if checkpoints is not None and checkpoints.resume:
        loop = _restore(checkpoints, signature, model, opt)
    else:
        loop = _Loop(0, steps if steps is not None else 10**9, [])
    start, last_save = time.process_time(), time.perf_counter()
    warm = start
    elapsed = lambda: loop.seconds_before + time.process_time() - start  # noqa: E731
    with _sigint_flag() as interrupted:
        while loop.step < loop.total:
            known = steps is not None or loop.step >= PROBE_STEPS
            rec = _step(model, opt, target, lambda_, loop.progress() if known else 0.0, fit)
            loop.step += 1
            if steps is None and loop.step == WARMUP_STEPS:
                warm = time.process_time()
            if steps is None and loop.step == PROBE_STEPS:
                per_step = (time.process_time() - warm) / (PROBE_STEPS - WARMUP_STEPS)
                loop.budget = _plan(seconds, per_step)  # type: ignore[arg-type]
                loop.total = loop.budget.epochs["fit"]
                loop.mark = (loop.step, elapsed())
            elif (steps is None and loop.step > PROBE_STEPS and loop.replans < len(REPLAN_AT)
                  and loop.step < loop.total and loop.progress() >= REPLAN_AT[loop.replans]):
                replan(loop, elapsed(), seconds)  # type: ignore[arg-type]
            if steps is None and loop.budget is not None and loop.step < loop.total and elapsed() >= seconds:
                loop.total = loop.step  # spent: stop (the last correction leaves at most a few steps)
            rec.update(step=loop.step, seconds=elapsed())
            loop.history.append(rec)
            if progress is not None:
                progress(loop.step, loop.total, rec)
            if checkpoints is None or (steps is None and loop.step < PROBE_STEPS):
                continue  # a budgeted fit checkpoints once its plan exists
            every = checkpoints.every_steps
            if (interrupted[0] or loop.step == loop.total or (every and loop.step % every == 0)
                    or time.perf_counter() - last_save >= checkpoints.every_seconds):
                _save(checkpoints, signature, model, opt, loop, elapsed())
                last_save = time.perf_counter()
            if interrupted[0]:
                raise KeyboardInterrupt
    return FitResult(model, lambda_, loop.step, elapsed(), loop.history, loop.budget)

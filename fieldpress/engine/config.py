"""The Fitter's vocabulary: the data-source protocol, the loss signature, stage and fit configs, results.

Configs are frozen dataclasses so they can be compared (resume refuses on a changed plan) and
serialised into checkpoints and file headers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class DataSource(Protocol):
    """Items the Fitter batches over: frames, pixel batches, views.

    `batch(indices)` returns tensors on the CPU (or already on the fit device: moving them is then
    free); the Fitter moves them with `non_blocking=True`. Indices come as an int64 CPU tensor, unless
    the source has a `device` attribute naming a CUDA device: then each epoch's indices are moved
    there once, so a source holding its frames on the GPU indexes them without a host sync per step.
    """

    def __len__(self) -> int: ...

    def batch(self, indices: Tensor) -> dict[str, Tensor]: ...


LossFn = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, Any]]]
"""`loss_fn(model, batch) -> (loss, metrics)`. The loss must be the *mean* over the batch's items
(DDP weighs each rank's share by its item count). Metric values may be floats or 0-d tensors;
returning detached tensors avoids a host sync per step (the Fitter only reads them at log time)."""

ParamGroupsFn = Callable[[nn.Module, float], list[dict[str, Any]]]
EvaluateFn = Callable[[nn.Module], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of a fit. `kind` names a registered stage kind: "fit", "prune" or "qat".

    `warmup` is a fraction of the stage's steps (linear from 0.1 x lr, as NeRV/HNeRV do);
    `schedule` names a registered schedule ("cosine" decays to `min_lr_ratio` x lr, "constant").
    `prune_amount` is the global fraction of Linear/Conv weights zeroed by a "prune" stage;
    `bits`, `axis` and `symmetric` set the per-channel fake quantization of a "qat" stage: axis is a
    weight dimension, None (per tensor) or "auto" (per weight, the codec's lowest-error choice, fixed
    when the stage begins); the stage reports the axes it used (`FitResult.stages[i]["axes"]`).
    """

    kind: str
    epochs: int
    lr: float
    warmup: float = 0.0
    schedule: str = "cosine"
    prune_amount: float = 0.0
    bits: int = 8
    min_lr_ratio: float = 0.0
    axis: int | str | None = "auto"
    symmetric: bool = False

    def __post_init__(self) -> None:
        from fieldpress.engine.schedule import SCHEDULES
        from fieldpress.engine.stages import STAGE_KINDS
        from fieldpress.errors import InputError

        if self.kind not in STAGE_KINDS:
            names = ", ".join(sorted(STAGE_KINDS))
            raise InputError(f"unknown stage kind {self.kind!r}: choose from {names}")
        if self.schedule not in SCHEDULES:
            names = ", ".join(sorted(SCHEDULES))
            raise InputError(f"unknown schedule {self.schedule!r}: choose from {names}")
        if self.epochs < 0:
            raise InputError(f"stage epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise InputError(f"stage lr must be positive, got {self.lr}")
        if not 0.0 <= self.warmup <= 1.0:
            raise InputError(f"warmup is a fraction of the stage in [0, 1], got {self.warmup}")
        if not 0.0 <= self.prune_amount < 1.0:
            raise InputError(f"prune_amount must be in [0, 1), got {self.prune_amount}")
        if not 2 <= self.bits <= 16:
            raise InputError(f"bits must be in 2..16, got {self.bits}")
        if not (self.axis is None or self.axis == "auto" or isinstance(self.axis, int)):
            raise InputError(f"axis must be an int, None or 'auto', got {self.axis!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How to fit: batch, seed, device, precision, budgets, optimizer and checkpoint cadence.

    `batch_size` is the *global* batch (split over ranks under torchrun). `minutes` caps the wall
    time: the current stage ends at the budget and later stages are skipped. `steps_per_epoch=None`
    means ceil(len(data) / batch_size). `checkpoint_every_steps` adds a step cadence to the
    seconds cadence (handy for tests). `log_every` and `eval_every` count epochs.
    """

    batch_size: int = 1
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    minutes: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    checkpoint_every_s: float = 60.0
    steps_per_epoch: int | None = None
    log_every: int = 1
    description: str = "fit"
    checkpoint_every_steps: int | None = None
    eval_every: int | None = None

    def __post_init__(self) -> None:
        from fieldpress.errors import InputError

        if self.batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.precision not in ("fp32", "bf16"):
            raise InputError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"--minutes must be positive, got {self.minutes}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise InputError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.log_every < 1:
            raise InputError(f"log_every must be >= 1, got {self.log_every}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InputError(f"grad_clip must be positive, got {self.grad_clip}")
        if not self.checkpoint_every_s >= 0:
            raise InputError(f"checkpoint_every_s must be >= 0, got {self.checkpoint_every_s}")
        for name in ("checkpoint_every_steps", "eval_every"):  # None or 0: off
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"{name} must be >= 0 (0 or None: off), got {value}")

    def plan(self) -> dict[str, Any]:
        """The fields that decide the sequence of updates: resume refuses when they change."""
        return {"batch_size": self.batch_size, "seed": self.seed, "steps_per_epoch": self.steps_per_epoch,
                "betas": list(self.betas), "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
                "precision": self.precision}


@dataclasses.dataclass
class FitResult:
    """What a fit produced. `interrupted` is True when the time budget cut it short (Ctrl-C raises
    KeyboardInterrupt instead). `masks` are the pruning masks (True = kept) by parameter name."""

    model: nn.Module
    stages: list[dict[str, Any]]
    seconds: float
    steps: int
    masks: dict[str, torch.Tensor] | None
    interrupted: bool

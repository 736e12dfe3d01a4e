"""The Fitter's vocabulary: the data-source protocol, the loss signature and StepInfo, stage and fit
configs, results.

Configs are frozen dataclasses so they can be compared (resume refuses on a changed plan) and
serialised into checkpoints and file headers.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from fieldpress.engine.stages import StageOptions


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


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """Where a step stands, handed to the loss and to `StageKind.on_step` so schedules (soft-round
    temperature, noise, lambda warm-up) read it instead of keeping private counters.

    `stage` is the stage index and `kind` its kind's name; `stage_step` is this step's 0-based index
    in the stage of `stage_steps` steps, `progress = stage_step / stage_steps` (0 at the first step,
    below 1 at the last, as the lr schedule counts); `global_step` is the 0-based index over the fit.
    """

    stage: int
    kind: str
    progress: float
    global_step: int
    stage_step: int
    stage_steps: int


LossFn = Callable[..., tuple[Tensor, dict[str, Any]]]
"""`loss_fn(model, batch) -> (loss, metrics)` or `loss_fn(model, batch, info: StepInfo) -> ...`.
The loss must be the *mean* over the batch's items (DDP weighs each rank's share by its item count).
Metric values may be floats or 0-d tensors; returning detached tensors avoids a host sync per step
(the Fitter only reads them at log time). See `loss_takes_info` for how the two forms are told apart."""

ParamGroupsFn = Callable[[nn.Module, float], list[dict[str, Any]]]
EvaluateFn = Callable[[nn.Module], dict[str, float]]


def loss_takes_info(loss_fn: LossFn) -> bool:
    """True when `loss_fn` wants the StepInfo: a third positional parameter that is required or named
    `info`. Decided once per fit (not per step); two-argument losses keep working unchanged."""
    try:
        params = list(inspect.signature(loss_fn).parameters.values())
    except (TypeError, ValueError):  # builtins and C callables: the two-argument form
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3:
        return False
    third = positional[2]
    return third.default is inspect.Parameter.empty or third.name == "info"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of a fit. `kind` names a registered stage kind: "fit", "prune", "qat" or "rd".

    `warmup` is a fraction of the stage's steps (linear from 0.1 x lr, as NeRV/HNeRV do);
    `schedule` names a registered schedule ("cosine" decays to `min_lr_ratio` x lr, "constant").
    `options` is the kind's own frozen dataclass (`PruneOptions`, `QatOptions`, `RdOptions`, ...;
    see `fieldpress.engine.stages`); None means the kind's defaults (an error for kinds, like "rd",
    whose options have required fields). `Stage.prune(...)`, `Stage.qat(...)`, `Stage.rd(...)` are
    shorthands for the built-in kinds.
    """

    kind: str
    epochs: int
    lr: float
    warmup: float = 0.0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    options: StageOptions | None = None

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
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        object.__setattr__(self, "options", STAGE_KINDS[self.kind].check_options(self.options))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the options as a dict): checkpoints compare plans by it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        out["options"] = dataclasses.asdict(self.options) if self.options is not None else {}
        return out

    @classmethod
    def fit(cls, epochs: int, lr: float, **stage: Any) -> Stage:
        """A plain "fit" stage."""
        return cls("fit", epochs, lr, **stage)

    @classmethod
    def prune(cls, epochs: int, lr: float, amount: float, **stage: Any) -> Stage:
        """A "prune" stage zeroing the global fraction `amount` of Linear/Conv weights, then fine-tuning."""
        from fieldpress.engine.stages import PruneOptions

        return cls("prune", epochs, lr, options=PruneOptions(amount), **stage)

    @classmethod
    def qat(cls, epochs: int, lr: float, bits: int = 8, axis: int | str | None = "auto",
            symmetric: bool = False, **stage: Any) -> Stage:
        """A "qat" stage: fake quantization at `bits` for the stage (see QatOptions)."""
        from fieldpress.engine.stages import QatOptions

        return cls("qat", epochs, lr, options=QatOptions(bits, axis, symmetric), **stage)

    @classmethod
    def rd(cls, epochs: int, lr: float, lmbda: float, lambda_warmup: float = 0.0,
           target_rate: float | None = None, **stage: Any) -> Stage:
        """An "rd" stage: loss + lmbda x model.rate_bits(info), lmbda ramped over `lambda_warmup`, then
        steered toward `target_rate` when one is given."""
        from fieldpress.engine.stages import RdOptions

        return cls("rd", epochs, lr, options=RdOptions(lmbda, lambda_warmup, target_rate), **stage)


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

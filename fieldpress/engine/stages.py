"""Stage kinds by name, each with its own options dataclass. A kind prepares the model when its stage
begins (`begin`), may add to the loss (`adjust_loss`) and act after every optimizer step (`on_step`),
and tidies up when the stage ends (`end`); the Fitter runs the optimisation steps in between.

- "fit" (`FitOptions`, empty): plain fitting.
- "prune" (`PruneOptions(amount)`): global magnitude pruning of Linear/Conv weights
  (`fieldpress.codec.quant.magnitude_prune`), then fine-tuning; the masks stay enforced after every
  later step (this and later stages).
- "qat" (`QatOptions(bits, axis, symmetric)`): fake-quantizes the same weights for the stage (see
  `fieldpress.engine.qat`), then removes the parametrization, leaving float weights for the codec.
- "rd" (`RdOptions(lmbda, warmup)`): rate-distortion training, loss + lambda x `model.rate_bits(info)`
  (the model's differentiable estimate of the bits its file will hold), lambda ramped linearly from 0
  over the first `warmup` fraction of the stage; the step metrics carry `rate_bits` and `lambda`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from fieldpress.codec.prunable import apply_masks, prunable_weights, weight_tensor
from fieldpress.errors import InputError

if TYPE_CHECKING:
    from fieldpress.engine.config import Stage, StepInfo


class StageState(Protocol):
    """What a stage kind may touch: the model, the pruning masks (True = kept) and `stage_state`, a
    JSON-serialisable dict saved in checkpoints (so a resumed stage re-creates what begin() chose)."""

    model: nn.Module
    masks: dict[str, torch.Tensor] | None
    stage_state: dict[str, Any]


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class StageOptions:
    """Base of every kind's options: a frozen dataclass of JSON-able fields (it goes into the
    checkpoint's plan, which resume compares). Subclasses validate in `__post_init__`."""


@dataclasses.dataclass(frozen=True)
class FitOptions(StageOptions):
    """A "fit" stage has no options."""


@dataclasses.dataclass(frozen=True)
class PruneOptions(StageOptions):
    """`amount`: the global fraction of Linear/Conv weights zeroed when the stage begins."""

    amount: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.amount < 1.0:
            raise InputError(f"prune amount must be in [0, 1), got {self.amount}")


@dataclasses.dataclass(frozen=True)
class QatOptions(StageOptions):
    """Per-channel fake quantization at `bits`; `axis` is a weight dimension, None (per tensor) or
    "auto" (per weight, the codec's lowest-error choice, fixed when the stage begins); the stage
    reports the axes it used (`FitResult.stages[i]["axes"]`)."""

    bits: int = 8
    axis: int | str | None = "auto"
    symmetric: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise InputError(f"bits must be in 2..16, got {self.bits}")
        if not (self.axis is None or self.axis == "auto" or isinstance(self.axis, int)):
            raise InputError(f"axis must be an int, None or 'auto', got {self.axis!r}")


@dataclasses.dataclass(frozen=True)
class RdOptions(StageOptions):
    """`lmbda` weighs the rate (bits) against the distortion loss; `warmup` is the fraction of the
    stage over which lambda rises linearly from 0 (0: full lambda from the first step). With
    `target_rate` (in `rate_bits`' units), `lmbda` is only the start: after the warm-up, lambda is
    steered every step toward the lambda whose rate is the target (`steer_lambda`)."""

    lmbda: float
    warmup: float = 0.0
    target_rate: float | None = None

    def __post_init__(self) -> None:
        if not self.lmbda >= 0:
            raise InputError(f"rd lambda must be >= 0, got {self.lmbda}")
        if not 0.0 <= self.warmup <= 1.0:
            raise InputError(f"rd lambda warmup is a fraction of the stage in [0, 1], got {self.warmup}")
        if self.target_rate is not None and not (math.isfinite(self.target_rate) and self.target_rate > 0):
            raise InputError(f"rd target rate must be a positive number, got {self.target_rate}")
        if self.target_rate is not None and not self.lmbda > 0:
            raise InputError("an rd stage steered to a target rate needs a positive starting lambda")


# ----------------------------------------------------------------------------- kinds
class StageKind:
    """Base stage kind: nothing to prepare, add or undo. `options_type` is the options dataclass a
    Stage of this kind must carry."""

    name = "fit"
    options_type: type[StageOptions] = FitOptions

    def check_options(self, options: StageOptions | None) -> StageOptions:
        """The stage's options, or the kind's defaults for None; InputError when they are another kind's."""
        want = self.options_type
        if options is None:
            try:
                return want()
            except TypeError:
                raise InputError(f"a {self.name!r} stage needs options={want.__name__}(...)") from None
        if type(options) is not want:
            raise InputError(f"a {self.name!r} stage takes {want.__name__}, got {type(options).__name__}")
        return options

    def begin(self, state: StageState, stage: Stage, resumed: bool) -> None:
        """Prepare the model; `resumed`: the stage had begun, its state comes from the checkpoint."""

    def adjust_loss(self, state: StageState, stage: Stage, info: StepInfo, loss: Tensor,
                    metrics: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Add the kind's terms to the data loss of one step (runs under autocast, before backward)."""
        return loss, metrics

    def on_step(self, state: StageState, stage: Stage, info: StepInfo) -> None:
        """Act after the optimizer step `info` describes (masks are already enforced)."""

    def end(self, state: StageState, stage: Stage) -> dict[str, Any]:
        """Undo what begin() did that must not outlive the stage; return facts for the stage report."""
        return {}


class FitKind(StageKind):
    name = "fit"
    options_type = FitOptions


class PruneKind(StageKind):
    name = "prune"
    options_type = PruneOptions

    def begin(self, state: StageState, stage: Stage, resumed: bool) -> None:
        if resumed:
            return  # the masks come from the checkpoint
        from fieldpress.codec.quant import magnitude_prune

        amount = stage.options.amount
        names = [name for name, _, _ in prunable_weights(state.model)]
        if not names or amount <= 0:
            return
        weights = {name: weight_tensor(m, a).detach() for name, m, a in prunable_weights(state.model)}
        masks = magnitude_prune(weights, amount, scope="global", names=names)
        masks = {k: v.to(torch.bool).cpu() for k, v in masks.items()}
        if state.masks:
            masks = {k: masks[k] & state.masks[k] if k in state.masks else masks[k] for k in masks}
        state.masks = masks
        apply_masks(state.model, masks)

    def end(self, state: StageState, stage: Stage) -> dict[str, Any]:
        if not state.masks:
            return {"sparsity": 0.0}
        kept = sum(int(m.sum()) for m in state.masks.values())
        total = sum(m.numel() for m in state.masks.values())
        return {"sparsity": 1.0 - kept / max(total, 1)}


class QatKind(StageKind):
    name = "qat"
    options_type = QatOptions

    def begin(self, state: StageState, stage: Stage, resumed: bool) -> None:
        from fieldpress.engine.qat import add_fake_quant

        opts = stage.options
        axes = state.stage_state["qat_axes"] if resumed else opts.axis
        state.stage_state["qat_axes"] = add_fake_quant(state.model, opts.bits, axes, opts.symmetric)

    def end(self, state: StageState, stage: Stage) -> dict[str, Any]:
        from fieldpress.engine.qat import remove_fake_quant

        remove_fake_quant(state.model)
        axes = state.stage_state.pop("qat_axes", {})
        return {"bits": stage.options.bits, "axes": axes, "symmetric": stage.options.symmetric}


def rd_lambda(options: RdOptions, progress: float, lmbda: float | None = None) -> float:
    """Lambda at `progress` (0..1) of the stage: linear from 0 over the warm-up fraction, then full
    (`lmbda`, a steered stage's current one, instead of the options' when given)."""
    base = options.lmbda if lmbda is None else lmbda
    if options.warmup <= 0:
        return base
    return base * min(1.0, progress / options.warmup)


STEER_GAIN = 0.05  # log-lambda moves by this x log(rate / target) per step
STEER_CLIP = 0.5  # ... with log(rate / target) clipped to +-this (at most 2.5% per step): no runaway
STEER_SMOOTHING = 0.9  # the rate it compares is an exponential average over about ten steps
LAMBDA_RANGE = (1e-7, 1e3)  # steered lambda stays inside (the bpp of a model at either end is its floor)


def steer_lambda(lam: float, average: float, rate: float, target: float) -> tuple[float, float]:
    """(lambda, average rate) after one step: the rate averaged over recent steps, and lambda scaled by
    exp(STEER_GAIN x log(average / target)), the log clipped to +-STEER_CLIP, so a rate above the target
    weighs the rate more, and below it less. It converges from a small lambda (the rate falling toward
    the target); from one far too large it may swing (the fit's rate lags lambda)."""
    average = STEER_SMOOTHING * average + (1 - STEER_SMOOTHING) * rate
    error = min(max(math.log(max(average, 1e-12) / target), -STEER_CLIP), STEER_CLIP)
    lam = lam * math.exp(STEER_GAIN * error)
    return min(max(lam, LAMBDA_RANGE[0]), LAMBDA_RANGE[1]), average


class RdKind(StageKind):
    """Rate-distortion training. Contract: the model has `rate_bits(info: StepInfo) -> Tensor`, a 0-d
    differentiable estimate of the bits its file will hold (entropy models, soft-rounding: the model's
    business, scheduled from `info.progress`); the loss becomes `loss + lambda x rate_bits`."""

    name = "rd"
    options_type = RdOptions

    def begin(self, state: StageState, stage: Stage, resumed: bool) -> None:
        if not callable(getattr(state.model, "rate_bits", None)):
            raise InputError(f"an 'rd' stage needs a model with rate_bits(info); "
                             f"{type(state.model).__name__} has none")

    def adjust_loss(self, state: StageState, stage: Stage, info: StepInfo, loss: Tensor,
                    metrics: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        rate = state.model.rate_bits(info)
        opts = stage.options
        if opts.target_rate is None:
            lam = rd_lambda(opts, info.progress)
        else:  # steered: the lambda of the last step, kept in the checkpoint's stage state
            steer = state.stage_state.setdefault("rd_steer", {"lambda": opts.lmbda, "rate": None})
            lam, value = rd_lambda(opts, info.progress, steer["lambda"]), float(rate.detach())
            if info.progress >= opts.warmup and state.model.training:
                average = value if steer["rate"] is None else steer["rate"]
                steer["lambda"], steer["rate"] = steer_lambda(steer["lambda"], average, value,
                                                              opts.target_rate)
        return loss + lam * rate, {**metrics, "rate_bits": rate.detach(), "lambda": lam}

    def end(self, state: StageState, stage: Stage) -> dict[str, Any]:
        steer = state.stage_state.get("rd_steer")
        return {} if steer is None else {"lambda": steer["lambda"], "rate_average": steer["rate"]}


STAGE_KINDS: dict[str, StageKind] = {k.name: k for k in (FitKind(), PruneKind(), QatKind(), RdKind())}


def register_stage_kind(kind: StageKind) -> None:
    """Add a stage kind (looked up by `Stage.kind`)."""
    STAGE_KINDS[kind.name] = kind

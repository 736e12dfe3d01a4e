"""Clip -> ``.fpv`` bytes and their measurements: the one pipeline behind ``fit-video``, the benches and
the library.

``compress(clip, options, device)`` runs the steps in order and returns a `VideoResult` (a
`fieldpress.codec.registry.Result`): build the model for the clip (`build_model_for`), fit it through
the Fitter's stages (`fit_model`), quantize the weights and the model's side information and make the
in-memory model decode exactly as the file will (`quantize_model`), encode the container bytes through
the video codec (`encode_bytes`), and decode those very bytes back to measure them (`measure`).
``result.write(path)`` writes them; `write(result, path)` also removes the fit's checkpoint;
`fit_clip` does all of it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec.registry import Result, encode_file, get_codec
from fieldpress.errors import InputError
from fieldpress.runtime import Stopwatch, cpu_threads, torch_threads
from fieldpress.video.codec import open_video
from fieldpress.video.data import ClipSource, make_loss, to_uint8
from fieldpress.video.fit import BUDGET_MARGIN, FitOptions, plan_epochs, quality, size_for_bpp, stages_for
from fieldpress.video.io import VideoClip
from fieldpress.video.models import ModulationSpec, VideoINR, build_model, config_for, recipe
from fieldpress.video.models.base import TensorView


@dataclass
class VideoResult(Result):
    """A video `Result`, plus the fitted model as decoded from the file (weights and side information
    quantized) and whether the fit was interrupted."""

    model: torch.nn.Module | None = None
    interrupted: bool = False


@dataclass
class FitOutcome:
    """What `fit_clip` produced: the file, its measurements and the fitted (quantized) model."""

    output: Path
    bytes: int
    metrics: dict[str, Any]
    model: torch.nn.Module
    interrupted: bool


@dataclass
class Quantized:
    """The quantized weights (`compress_state_dict` streams and meta), side information and the float
    model's frames (for the PSNR before quantization)."""

    weight_streams: dict[str, np.ndarray]
    weight_meta: dict[str, Any]
    side: dict[str, Any]
    float_frames: np.ndarray


# ----------------------------------------------------------------------------- steps
def build_model_for(clip: VideoClip, opts: FitOptions) -> VideoINR:
    """The model `opts` asks for, sized for the clip (``--size`` or ``--target-bpp``), its initial
    weights drawn from ``--seed`` (so the seed fixes the file)."""
    from fieldpress.engine.rng import seed_everything

    size = opts.size
    if opts.target_bpp is not None and not opts.steered:
        size = size_for_bpp(opts.target_bpp, clip.count, clip.width, clip.height, opts.bits)
    if size is None:
        raise InputError("give --size or --target-bpp")
    mod = ModulationSpec("cam", opts.cam_grid) if opts.cam else ModulationSpec()
    extra = {"patch": opts.patch} if opts.patch is not None else {}
    try:
        config = config_for(opts.model, clip.height, clip.width, clip.count, size, strides=opts.strides,
                            modulation=mod, **extra)
    except InputError as exc:
        if opts.target_bpp is None or "too small" not in str(exc):
            raise
        why = str(exc).split(": ", 1)[-1]
        raise InputError(f"--target-bpp {opts.target_bpp:g} is unreachable for {opts.model} on this "
                         f"{clip.width}x{clip.height}x{clip.count} clip ({why})") from None
    seed_everything(opts.seed)
    return build_model(opts.model, config)


Evaluate = Callable[[torch.nn.Module], dict[str, float]]


def fit_model(model: torch.nn.Module, source: ClipSource, opts: FitOptions, device: torch.device, *,
              output: Path | None, resume: bool = False, signature: dict | None = None,
              show_progress: bool = True, evaluate: Evaluate | None = None,
              eval_every: int | None = None) -> tuple[Any, dict[str, int]]:
    """Run the Fitter's stages (fit, prune, QAT) with checkpoints at ``<output>.ckpt/``; returns the
    Fitter's result and the epochs planned per stage (``--minutes`` plans them once; resume reuses it)."""
    from fieldpress.engine.budget import plan_budget
    from fieldpress.engine.config import FitConfig
    from fieldpress.engine.fitter import Fitter
    from fieldpress.engine.probe import seconds_per_step

    r = recipe(opts.model)
    lr = opts.lr or r.lr
    param_groups = None
    if opts.cam:
        from fieldpress.fields.cam import cam_param_groups

        param_groups = cam_param_groups
    if opts.rd:  # model is an RdVideoModel: its steps and rate scales train faster
        from fieldpress.video.rd import rd_param_groups

        param_groups = rd_param_groups
    fit_config = FitConfig(batch_size=min(opts.batch_size or r.batch_size, len(source)), seed=opts.seed,
                           device=str(device), precision=opts.precision, minutes=opts.minutes, betas=r.betas,
                           description=f"fit {opts.model}", eval_every=eval_every)
    sig = {"options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()
                       if not (k == "rd_epochs" and v is None)}, **(signature or {})}
    if opts.rd:
        from fieldpress.video.rd import rd_loss

        loss_fn = rd_loss(r.loss)
    else:
        loss_fn = make_loss(r.loss)
    plan, budget = plan_epochs(opts), None
    if opts.minutes is not None:  # scaled so the schedule ends in time; a --resume reuses the stored plan
        budget = plan_budget(
            opts.minutes,
            lambda: seconds_per_step(model, source, loss_fn, fit_config.batch_size, device, lr=lr,
                                     param_groups=param_groups),
            epochs=plan, steps_per_epoch=math.ceil(len(source) / fit_config.batch_size), margin=BUDGET_MARGIN,
            resume_from=output if resume else None)
        plan = budget.epochs
        _warn_if_too_short(plan, opts)
    fitter = Fitter(model, source, loss_fn, fit_config, stages_for(opts, plan, lr, r.warmup), output=output,
                    signature=sig, param_groups=param_groups, evaluate=evaluate, show_progress=show_progress,
                    budget=budget)
    return fitter.run(resume=resume), plan


MIN_USEFUL_EPOCHS = 15  # fewer fit epochs leave an HNeRV a blur (carphone: 3 gave 19 dB, 45 gave 26.5)


def warn_short_budget(shortfall: str, got: int, minimum: int, minutes: float, unit: str = "minutes") -> None:
    """The one-line warning of a budget that buys `got` (< `minimum`) epochs or steps: `shortfall` says
    what it bought, then the picture to expect and the budget that buys twice `minimum`."""
    from fieldpress.video.io import warn

    needed = minutes * 2 * minimum / max(got, 1)
    warn(f"{shortfall}: expect a blurred picture (about {needed:.3g} {unit} buy {2 * minimum}; or fit fewer "
         "frames or a smaller --resize)")


def _warn_if_too_short(plan: dict[str, int], opts: FitOptions) -> None:
    """Say plainly when a --minutes budget buys too few epochs for a useful picture, and what would."""
    fit_epochs = plan.get("fit", 0)
    if fit_epochs >= MIN_USEFUL_EPOCHS or opts.minutes is None:
        return
    shortfall = (f"the {opts.minutes:g}-minute budget buys only {fit_epochs} fit epoch(s) of {opts.model} on "
                 "this clip")
    warn_short_budget(shortfall, fit_epochs, MIN_USEFUL_EPOCHS, opts.minutes)


@torch.no_grad()
def render_all(model: torch.nn.Module, source: ClipSource, device: torch.device) -> np.ndarray:
    """The model's frames (uint8 (T, H, W, 3)), one at a time."""
    frames = []
    for i in range(len(source)):
        batch = {k: v.to(device) for k, v in source.batch(torch.tensor([i])).items()}
        frames.append(to_uint8(model(batch)[0]).permute(1, 2, 0).cpu().numpy())
    return np.stack(frames)


def quantize_model(model: VideoINR, masks: dict | None, source: ClipSource, opts: FitOptions,
                   device: torch.device) -> Quantized:
    """Quantize the fitted model's side information (``--embed-bits``) and weights (``--bits``, per
    output channel; 1-D tensors per tensor; pruned entries stored sparse), and load both back into
    `model`, which then decodes exactly as the file will."""
    from fieldpress.codec.quant import compress_state_dict, decompress_state_dict
    from fieldpress.video.codec import quantize_side

    float_frames = render_all(model, source, device)
    side_info = model.side_info(source, device, opts.embed_bits)
    side = {name: quantize_side(info) for name, info in side_info.items()}
    model.attach_side_info({name: TensorView(s.q.dequantize(), s.chunk_axis) for name, s in side.items()})
    state = {k: v.detach().float().cpu() for k, v in model.stored_state().items()}
    masks = {k: v.cpu() for k, v in masks.items() if k in state} if masks else None
    axes = {k: (0 if v.dim() >= 2 else None) for k, v in state.items()}
    streams, meta = compress_state_dict(state, bits=opts.bits, masks=masks, axis=None, axes=axes)
    model.load_state_dict(decompress_state_dict(streams, meta), strict=False)
    return Quantized(streams, meta, side, float_frames)


def encode_bytes(model: VideoINR, q: Quantized, clip: VideoClip,
                 fit_facts: dict[str, Any]) -> tuple[Any, bytes]:
    """(codec, container bytes) of the quantized model: the codec named after the model (video/hnerv,
    video/nerv, video/nervpp) builds header and streams; the registry stamps codec and version."""
    codec = get_codec("video", model.name)
    encoded = codec.encode(model, q.weight_streams, q.weight_meta, fps=clip.fps, frame_start=clip.frame_start,
                           source=clip.source, side=q.side, extra={"fit": fit_facts})
    return codec, encode_file(codec, encoded)


def encode_rd_fit(model: Any, source: ClipSource, clip: VideoClip, opts: FitOptions, facts: dict[str, Any],
                  device: torch.device, lambda_: float) -> tuple[Any, bytes, np.ndarray, dict[str, Any]]:
    """(codec, bytes, frames before quantization, rate facts) of an RD-fitted `RdVideoModel` trained at
    `lambda_` (a steered stage's last): its integer weights and side information range-coded under its
    Laplace models (codec version 3). The facts compare the rate model's bits with the coded payload's."""
    from fieldpress.video.models.hnerv import EMBED_CHUNK
    from fieldpress.video.rd import encode_rd

    weights, side = model.quantized_weights(), model.quantized_side(source, device)
    model_bits = model.model_bits(weights, side)
    coded = encode_rd(model, weights, side, EMBED_CHUNK)
    ready = model.quantizing
    model.ready.zero_()  # the float model's frames, for psnr_before_quant
    float_frames = render_all(model, source, device)
    model.ready.fill_(1.0 if ready else 0.0)
    payload = sum(coded.payload_bits.values())
    target = {"target_bpp": opts.target_bpp} if opts.steered else {}
    rd = {"lambda": lambda_, **target, "model_bits": round(model_bits, 1), "payload_bits": payload,
          "payload_split": coded.payload_bits}
    codec = get_codec("video", model.inr.name)
    encoded = codec.encode(model.inr, coded.streams, coded.weights_meta, fps=clip.fps,
                           frame_start=clip.frame_start, source=clip.source, rd_side=coded.side_meta,
                           extra={"fit": {**facts, **({"embed_bits": opts.embed_bits} if side else {}),
                                          "rd": rd}})
    data = encode_file(codec, encoded)
    return codec, data, float_frames, {"rd_lambda": rd["lambda"], **{f"rd_{k}": v for k, v in target.items()},
                                       "rate_model_bits": rd["model_bits"], "payload_bits": payload,
                                       "header_and_table_bytes": len(data) - payload // 8}


def measure(data: bytes, clip: VideoClip, device: torch.device) -> dict[str, Any]:
    """bpp, PSNR (pooled, per-frame mean) and MS-SSIM of the file `data`, decoded back from its bytes."""
    from fieldpress.metrics import bpp

    decoded = open_video(data, device=device).decode()
    return {"bpp": round(bpp(len(data), clip.count, clip.width, clip.height), 6),
            **quality(clip.frames, decoded)}


STEER_TOLERANCE = 0.1  # a steered file further than this (relative) from --target-bpp gets a warning


def _warn_if_target_missed(metrics: dict[str, Any], opts: FitOptions) -> None:
    """Say so when a steered rd stage ended off its target: the rate follows lambda with a lag, so a
    short stage from a far-off start lambda does not get there (carphone 0:32, 12 rd epochs: 0.42 bpp
    for a target of 0.234)."""
    from fieldpress.video.io import warn

    target = float(opts.target_bpp or 0.0)
    if abs(metrics["bpp"] - target) <= STEER_TOLERANCE * target:
        return
    warn(f"--rd --target-bpp {target:g}: the file is {metrics['bpp']:.3g} bpp (lambda ended at "
         f"{metrics['rd_lambda']:.3g}); the rate lags lambda, so give more --rd-epochs or start nearer the "
         "target's lambda with --lambda/--quality")


def _rd_lambda(fitted: Any, opts: FitOptions) -> float:
    """The rd stage's lambda: a steered stage's where it ended, else the flags' (also when the budget
    skipped the stage)."""
    for stage in fitted.stages if opts.steered else []:
        if isinstance(stage, dict) and stage.get("kind") == "rd" and "lambda" in stage:
            return float(stage["lambda"])
    return opts.rd_lambda()


def _epochs_done(stages: list[dict]) -> Any:
    done = [s.get("epochs_done", s.get("epochs")) for s in stages if isinstance(s, dict)]
    if not done:
        return None
    return done[0] if len(done) == 1 else done


# ----------------------------------------------------------------------------- the pipeline
def compress(clip: VideoClip, options: FitOptions, device: torch.device, *, output: Path | None = None,
             resume: bool = False, signature: dict | None = None, show_progress: bool = True,
             evaluate: Evaluate | None = None, eval_every: int | None = None,
             input: str | None = None) -> VideoResult | None:
    """Fit `clip` and return the ``.fpv`` bytes with their measurements (nothing written but the
    checkpoint at ``<output>.ckpt/`` when `output` is given; `resume` continues from it). Under
    torchrun only rank 0 goes on past the fit; the other ranks get None.
    `evaluate` / `eval_every` (epochs) are handed to the Fitter (e.g. to log PSNR as a fit goes)."""
    from fieldpress.engine.distributed import is_main_process
    from fieldpress.video.methods import method_for

    method = method_for(options.model)
    if method is not None:  # NIRVANA, latent grids...: their own fit and codec
        return method.run(clip, options, device, output=output, resume=resume, show_progress=show_progress,
                          input=input)
    threads = cpu_threads() if device.type == "cpu" else 0
    with Stopwatch() as sw, torch_threads(threads):
        model = build_model_for(clip, options)
        stored_params = model.stored_params()
        source = ClipSource(clip.frames)
        fit_target: torch.nn.Module = model
        if options.rd:
            from fieldpress.video.rd import RdVideoModel

            fit_target = RdVideoModel(model, clip.count * clip.width * clip.height, options.bits,
                                      options.embed_bits)
        train = model.training_source(source)  # HiNeRV: patches
        fitted, plan = fit_model(fit_target, train, options, device, output=output, resume=resume,
                                 signature=signature, show_progress=show_progress, evaluate=evaluate,
                                 eval_every=eval_every)
        if not is_main_process():  # under torchrun rank 0 alone quantizes, encodes and measures
            return None
        facts = {"epochs": plan, "stored_params": stored_params, "prune": options.prune,
                 "qat_epochs": options.qat_epochs, "bits": options.bits}
        if options.rd:
            codec, data, before_frames, rd_facts = encode_rd_fit(fitted.model.eval(), source, clip, options,
                                                                 facts, device, _rd_lambda(fitted, options))
            model = open_video(data, device=device).model
        else:
            model = fitted.model.eval()
            q = quantize_model(model, fitted.masks, source, options, device)
            if q.side:
                facts["embed_bits"] = options.embed_bits
            codec, data = encode_bytes(model, q, clip, facts)
            before_frames, rd_facts = q.float_frames, {}
        metrics = {"model": options.model, "params": stored_params, **measure(data, clip, device), **rd_facts}
        if options.steered:
            _warn_if_target_missed(metrics, options)
        before = quality(clip.frames, before_frames)
    metrics.update({
        "psnr_before_quant": before["psnr"], "psnr_frame_mean_before_quant": before["psnr_frame_mean"],
        "frames": clip.count, "size": f"{clip.width}x{clip.height}", "strides": list(model.config.strides),
        "fit_seconds": round(fitted.seconds, 2), "steps": fitted.steps, "epochs_planned": plan,
        "epochs_done": _epochs_done(fitted.stages), "interrupted": fitted.interrupted,
    })
    return VideoResult(codec, data, metrics, input=input, seconds=sw.seconds, device=str(device), model=model,
                       interrupted=fitted.interrupted)


def write(result: Result, output: Path, *, keep_checkpoint: bool = False) -> int:
    """Write the file atomically and, unless `keep_checkpoint`, remove the fit's ``<output>.ckpt/``."""
    nbytes = result.write(output)
    if not keep_checkpoint:
        shutil.rmtree(f"{output}.ckpt", ignore_errors=True)
    return nbytes


def fit_clip(clip: VideoClip, output: Path, opts: FitOptions, device: torch.device, *, resume: bool = False,
             signature: dict | None = None, show_progress: bool = True, keep_checkpoint: bool = False,
             evaluate: Evaluate | None = None, eval_every: int | None = None) -> FitOutcome | None:
    """`compress`, then write `output` and (unless `keep_checkpoint`) remove its checkpoint (None on
    the ranks other than 0 under torchrun)."""
    result = compress(clip, opts, device, output=output, resume=resume, signature=signature,
                      show_progress=show_progress, evaluate=evaluate, eval_every=eval_every)
    if result is None:
        return None
    nbytes = write(result, output, keep_checkpoint=keep_checkpoint)
    return FitOutcome(Path(output), nbytes, result.metrics, result.model, result.interrupted)

"""Fit a video INR to a clip and write it as a ``.fpv``: the work behind ``fit-video`` and the benchmark.

fit (paper recipe) -> optional prune + fine-tune -> optional QAT (all Fitter stages) -> HNeRV
embeddings from the encoder, quantized to ``embed_bits`` -> weights quantized per channel to
``bits`` and entropy-coded -> container -> decoded back from the file to measure it.
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

from fieldpress.errors import InputError
from fieldpress.runtime import cpu_threads
from fieldpress.video.codec import open_video, quantize_embeddings, write_fpv
from fieldpress.video.data import ClipSource, make_loss, to_uint8
from fieldpress.video.io import VideoClip
from fieldpress.video.models import ModulationSpec, build_model, config_for, recipe
from fieldpress.video.models.hnerv import HNeRV

BITS_PER_PARAM_CODED = 0.85
"""Entropy-coded bits per quantized bit, used only to turn ``--target-bpp`` into a size."""
BUDGET_MARGIN = 0.85
"""Share of ``--minutes`` the planned stages may fill (the rest absorbs probe error and overheads)."""


@dataclass(frozen=True)
class FitOptions:
    """Everything that decides the fit (it is also the resume signature)."""

    model: str = "hnerv"
    size: int | None = 150_000
    target_bpp: float | None = None
    epochs: int = 300
    minutes: float | None = None
    bits: int = 8
    embed_bits: int = 6
    prune: float = 0.0
    prune_epochs: int | None = None
    qat_epochs: int = 0
    precision: str = "fp32"
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    cam: bool = False
    cam_grid: int = 30
    strides: tuple[int, ...] | None = None


@dataclass
class FitOutcome:
    """What a fit produced: the file, its measurements and the fitted (quantized) model."""

    output: Path
    bytes: int
    metrics: dict[str, Any]
    model: torch.nn.Module
    interrupted: bool


def size_for_bpp(bpp: float, frames: int, width: int, height: int, bits: int) -> int:
    """Stored parameters that land near `bpp` at `bits` per weight after entropy coding."""
    return max(1, int(bpp * frames * width * height / (bits * BITS_PER_PARAM_CODED)))


def _plan_epochs(opts: FitOptions) -> dict[str, int]:
    """Epochs of each stage as the flags ask (prune fine-tune defaults to a third of the fit)."""
    plan = {"fit": opts.epochs}
    if opts.prune > 0:
        plan["prune"] = opts.prune_epochs if opts.prune_epochs is not None else max(1, opts.epochs // 3)
    if opts.qat_epochs > 0:
        plan["qat"] = opts.qat_epochs
    return plan


def _stages(opts: FitOptions, plan: dict[str, int], lr: float, warmup: float) -> list:
    from fieldpress.engine.config import Stage

    stages = [Stage("fit", plan["fit"], lr, warmup=warmup, schedule="cosine")]
    if "prune" in plan:
        stages.append(Stage.prune(plan["prune"], lr, amount=opts.prune, warmup=0.0, schedule="cosine"))
    if "qat" in plan:
        stages.append(Stage.qat(plan["qat"], lr * 0.1, bits=opts.bits, axis=0, schedule="cosine"))
    return stages


@torch.no_grad()
def _hnerv_embeddings(model: HNeRV, source: ClipSource, device: torch.device) -> torch.Tensor:
    out = []
    for i in range(len(source)):
        frames = source.batch(torch.tensor([i]))["frames"].to(device)
        out.append(model.encode(frames).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def _render_all(model: torch.nn.Module, source: ClipSource, device: torch.device) -> np.ndarray:
    """The float model's frames (uint8), one at a time (before quantization)."""
    frames = []
    for i in range(len(source)):
        batch = {k: v.to(device) for k, v in source.batch(torch.tensor([i])).items()}
        frames.append(to_uint8(model(batch)[0]).permute(1, 2, 0).cpu().numpy())
    return np.stack(frames)


def quality(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """PSNR (pooled and per-frame mean) and MS-SSIM of uint8 (T, H, W, 3) clips."""
    from fieldpress.metrics import ms_ssim, video_psnr

    pooled, mean = video_psnr(ref, test)
    return {
        "psnr": round(float(pooled), 4),
        "psnr_frame_mean": round(float(mean), 4),
        "ms_ssim": round(float(ms_ssim(ref, test)), 6),
    }


def fit_clip(
    clip: VideoClip,
    output: Path,
    opts: FitOptions,
    device: torch.device,
    *,
    resume: bool = False,
    signature: dict | None = None,
    show_progress: bool = True,
    keep_checkpoint: bool = False,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
) -> FitOutcome:
    """Fit, compress, write `output`, decode it back and measure; see the module docstring.
    `evaluate` / `eval_every` (epochs) are handed to the Fitter (e.g. to log PSNR as a fit goes)."""
    threads = torch.get_num_threads()
    try:
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        return _fit_clip(
            clip,
            output,
            opts,
            device,
            resume=resume,
            signature=signature,
            show_progress=show_progress,
            keep_checkpoint=keep_checkpoint,
            evaluate=evaluate,
            eval_every=eval_every,
        )
    finally:
        torch.set_num_threads(threads)


def _fit_clip(
    clip: VideoClip,
    output: Path,
    opts: FitOptions,
    device: torch.device,
    *,
    resume: bool,
    signature: dict | None,
    show_progress: bool,
    keep_checkpoint: bool,
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
) -> FitOutcome:
    from fieldpress.codec.quant import compress_state_dict, decompress_state_dict
    from fieldpress.engine.budget import plan_budget
    from fieldpress.engine.config import FitConfig
    from fieldpress.engine.fitter import Fitter
    from fieldpress.engine.probe import seconds_per_step
    from fieldpress.metrics import bpp as bpp_of

    r = recipe(opts.model)
    frames, height, width = clip.count, clip.height, clip.width
    size = opts.size
    if opts.target_bpp is not None:
        size = size_for_bpp(opts.target_bpp, frames, width, height, opts.bits)
    if size is None:
        raise InputError("give --size or --target-bpp")
    mod = ModulationSpec("cam", opts.cam_grid) if opts.cam else ModulationSpec()
    config = config_for(opts.model, height, width, frames, size, strides=opts.strides, modulation=mod)
    model = build_model(opts.model, config)
    stored_params = model.stored_params()

    source = ClipSource(clip.frames)
    lr = opts.lr or r.lr
    param_groups = None
    if opts.cam:
        from fieldpress.fields.cam import cam_param_groups

        param_groups = cam_param_groups
    fit_config = FitConfig(
        batch_size=min(opts.batch_size or r.batch_size, frames),
        seed=opts.seed,
        device=str(device),
        precision=opts.precision,
        minutes=opts.minutes,
        betas=r.betas,
        description=f"fit {opts.model}",
        eval_every=eval_every,
    )
    sig = {
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(opts).items()},
        **(signature or {}),
    }
    loss_fn = make_loss(r.loss)
    plan, budget = _plan_epochs(opts), None
    if opts.minutes is not None:  # scaled so the schedule ends in time; a --resume reuses the stored plan
        budget = plan_budget(
            opts.minutes,
            lambda: seconds_per_step(
                model, source, loss_fn, fit_config.batch_size, device, lr=lr, param_groups=param_groups
            ),
            epochs=plan,
            steps_per_epoch=math.ceil(frames / fit_config.batch_size),
            margin=BUDGET_MARGIN,
            resume_from=output if resume else None,
        )
        plan = budget.epochs
    fitter = Fitter(
        model,
        source,
        loss_fn,
        fit_config,
        _stages(opts, plan, lr, r.warmup),
        output=output,
        signature=sig,
        param_groups=param_groups,
        evaluate=evaluate,
        show_progress=show_progress,
        budget=budget,
    )
    result = fitter.run(resume=resume)
    model = result.model.eval()

    # HNeRV: the encoder's embeddings, quantized; the decoder then runs from them alone.
    embed_codes = embed_quant = None
    float_frames = _render_all(model, source, device)
    if isinstance(model, HNeRV):
        embeds = _hnerv_embeddings(model, source, device)
        embed_codes, embed_quant, dequant = quantize_embeddings(embeds, opts.embed_bits)
        model.freeze_embeddings(dequant.to(device))

    state = {k: v.detach().float().cpu() for k, v in model.stored_state().items()}
    masks = None
    if result.masks:
        masks = {k: v.cpu() for k, v in result.masks.items() if k in state}
    # Per-channel (output channels, axis 0, as the QAT stage) for weights; per tensor for 1-D ones.
    axes = {k: (0 if v.dim() >= 2 else None) for k, v in state.items()}
    streams, meta = compress_state_dict(state, bits=opts.bits, masks=masks, axis=None, axes=axes)
    model.load_state_dict(decompress_state_dict(streams, meta), strict=False)

    extra = {
        "fit": {
            "epochs": plan,
            "stored_params": stored_params,
            "prune": opts.prune,
            "qat_epochs": opts.qat_epochs,
            "bits": opts.bits,
        }
    }
    if embed_quant is not None:
        extra["fit"]["embed_bits"] = opts.embed_bits
    nbytes = write_fpv(
        output,
        model,
        streams,
        meta,
        fps=clip.fps,
        frame_start=clip.frame_start,
        source=clip.source,
        embed_codes=embed_codes,
        embed_quant=embed_quant,
        extra=extra,
    )
    if not keep_checkpoint:
        shutil.rmtree(f"{output}.ckpt", ignore_errors=True)

    decoded = open_video(output, device=device).decode()
    metrics: dict[str, Any] = {
        "model": opts.model,
        "params": stored_params,
        "bpp": round(bpp_of(nbytes, frames, width, height), 6),
        **quality(clip.frames, decoded),
    }
    before = quality(clip.frames, float_frames)
    metrics["psnr_before_quant"] = before["psnr"]
    metrics["psnr_frame_mean_before_quant"] = before["psnr_frame_mean"]
    metrics.update(
        {
            "frames": frames,
            "size": f"{width}x{height}",
            "strides": list(config.strides),
            "fit_seconds": round(result.seconds, 2),
            "steps": result.steps,
            "epochs_planned": plan,
            "epochs_done": _epochs_done(result.stages),
            "interrupted": result.interrupted,
        }
    )
    return FitOutcome(output, nbytes, metrics, model, result.interrupted)


def _epochs_done(stages: list[dict]) -> Any:
    done = [s.get("epochs_done", s.get("epochs")) for s in stages if isinstance(s, dict)]
    if not done:
        return None
    return done[0] if len(done) == 1 else done


def default_output(input_path: Path) -> Path:
    """``clip.mp4`` -> ``clip.fpv`` beside it."""
    return input_path.with_suffix(".fpv")


def downscale_for(width: int, height: int, max_width: int) -> tuple[int, int] | None:
    """The (W, H) a preview downscales to (even sides, aspect kept), or None when it fits."""
    if width <= max_width:
        return None
    scale = max_width / width
    return max_width - max_width % 2, max(2, int(math.floor(height * scale / 2)) * 2)

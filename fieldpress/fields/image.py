"""Images as neural fields: build a sized model, fit it through the Fitter, code it into a container.

The ``image/field`` codec (``FIELD_CODEC``: ``encode`` -> ``Encoded``, ``decode`` -> ``ImageDecoder``)
stores the quantized, entropy-coded weights and grids (``fieldpress.codec.quant.compress_state_dict``),
the random Fourier matrix as exact float16 when the model has one, and a header with the raster
layout (size, mode, bit depth), the sized architecture and the PSNR measured on exactly what the
decoder reproduces (docs/formats/image.md). ``fit_field`` is the field method of
``fieldpress.fields.pipeline``, which writes, decodes and measures the files.
Coordinates are pixel centres ``((i + 0.5) / W, (j + 0.5) / H)``; values are channels / (2^bits - 1).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fieldpress.codec.registry import Encoded
from fieldpress.errors import FormatError, InputError
from fieldpress.fields.cam import cam_param_groups
from fieldpress.fields.encodings import Encoding, GridEncoding, RandomFourierEncoding
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.mlp import FieldModel, Network
from fieldpress.fields.presets import ModelPlan, plan_model

if TYPE_CHECKING:
    from fieldpress.engine.budget import BudgetPlan
    from fieldpress.fields.pipeline import FitHooks, ImageOptions, SourceImage

__all__ = [
    "FitImageResult",
    "ImageDecoder",
    "PixelSource",
    "build_model",
    "codec_state",
    "FieldFit",
    "encode_image",
    "fit_field",
    "fit_image",
    "load_codec_state",
    "pixel_coords",
    "render",
]

KIND = "image"
FORMAT = 1
RFF_STREAM = "rff/B"
RENDER_CHUNK = 1 << 16
CPU_BATCH = 2048
DEFAULT_STEPS = 2000
MAX_DECODE_PARAMS = 1 << 28  # refuse headers describing models beyond this (1 GiB of float32)


# ----------------------------------------------------------------------------- model
def build_model(plan: ModelPlan | Mapping[str, Any], channels: int, seed: int) -> FieldModel:
    """The field model for a sized plan (the same call at encode and decode time)."""
    enc_cfg = plan.encoding if isinstance(plan, ModelPlan) else plan["encoding"]
    net_cfg = plan.network if isinstance(plan, ModelPlan) else plan["network"]
    torch.manual_seed(seed)
    encoding = Encoding(enc_cfg, 2, seed=seed)
    if isinstance(encoding, RandomFourierEncoding):  # float16-exact, so the file can store it losslessly
        encoding.B.copy_(encoding.B.half().float())
    network = Network(net_cfg, encoding.n_output_dims, channels, coord_dims=2)
    return FieldModel(encoding, network)


def learned_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def codec_state(model: FieldModel) -> dict[str, torch.Tensor]:
    """The learned tensors to quantize, with a grid's flat table split per level (one scale each)."""
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        state[name] = p.detach().to("cpu", torch.float32)
    if isinstance(model.encoding, GridEncoding):
        flat = state.pop("encoding.params")
        f, spec = model.encoding.spec.n_features_per_level, model.encoding.spec
        for lvl, (off, size) in enumerate(zip(spec.offsets, spec.sizes)):
            state[f"encoding.params.L{lvl}"] = flat[off * f : (off + size) * f].reshape(size, f)
    return state


def codec_axes(state: Mapping[str, torch.Tensor]) -> dict[str, int | None]:
    """Quantization axes: a scale per output row for weight matrices, one per gamma/beta plane for
    CAM grids, one per tensor for biases and grid levels (few scales: they cost bytes too)."""
    axes: dict[str, int | None] = {}
    for name, t in state.items():
        if name.endswith(".grid") and t.dim() >= 3:
            axes[name] = t.dim() - 2
        elif name.endswith(".weight") and t.dim() == 2:
            axes[name] = 0
        else:
            axes[name] = None
    return axes


def load_codec_state(model: FieldModel, state: Mapping[str, torch.Tensor]) -> None:
    """Inverse of :func:`codec_state`: put decoded tensors back into ``model``."""
    state = dict(state)
    if isinstance(model.encoding, GridEncoding):
        n = model.encoding.spec.n_levels
        state["encoding.params"] = torch.cat(
            [state.pop(f"encoding.params.L{lvl}").reshape(-1) for lvl in range(n)]
        )
    params = dict(model.named_parameters())
    missing = set(params) - set(state)
    if missing:
        raise FormatError(f"image file lacks tensors {sorted(missing)[:3]}")
    with torch.no_grad():
        for name, p in params.items():
            t = state[name]
            if tuple(t.shape) != tuple(p.shape):
                raise FormatError(f"tensor {name} has shape {tuple(t.shape)}, expected {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))


# ----------------------------------------------------------------------------- data
def pixel_coords(width: int, height: int) -> torch.Tensor:
    """(H*W, 2) pixel centres in [0, 1], row-major (x varies fastest)."""
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


class PixelSource:
    """DataSource over pixels: items are pixels, a batch is their coordinates and target values."""

    def __init__(self, array: np.ndarray, info: RasterInfo) -> None:
        self.coords = pixel_coords(info.width, info.height)
        values = torch.from_numpy(array.astype(np.float32).reshape(-1, info.channels))
        self.targets = values / float(info.max_value)

    def __len__(self) -> int:
        return self.coords.shape[0]

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"coords": self.coords[indices], "target": self.targets[indices]}


def mse_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mean squared error on [0, 1] values; PSNR (dB, peak 1) as the logged metric."""
    pred = model(batch["coords"])
    loss = torch.mean((pred.float() - batch["target"]) ** 2)
    psnr = -10.0 * torch.log10(loss.detach().clamp_min(1e-12))
    return loss, {"psnr": psnr}


@torch.no_grad()
def render(model: nn.Module, info: RasterInfo, device: torch.device | str | None = None) -> np.ndarray:
    """Evaluate the field on every pixel centre: (H, W, C) integers in the image's bit depth.

    Runs on ``device`` (default: where the model is) and leaves the model in eval mode."""
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device).eval()
    coords = pixel_coords(info.width, info.height)
    out = torch.empty(coords.shape[0], info.channels, dtype=torch.float32)
    for start in range(0, coords.shape[0], RENDER_CHUNK):
        chunk = coords[start : start + RENDER_CHUNK].to(device)
        out[start : start + RENDER_CHUNK] = model(chunk).float().cpu()
    values = torch.round(out.clamp(0.0, 1.0) * info.max_value)
    dtype = np.uint16 if info.bit_depth == 16 else np.uint8
    return values.numpy().astype(dtype).reshape(info.height, info.width, info.channels)


# ----------------------------------------------------------------------------- fitting
@dataclasses.dataclass
class FitImageResult:
    model: FieldModel
    steps: int
    seconds: float
    interrupted: bool
    calibration: dict[str, float]


def _render_seconds(model: FieldModel, source: PixelSource, device: torch.device) -> float:
    """Seconds to render the whole image, timed on one chunk of a throwaway copy (so a time budget
    can keep a reserve for the final renders)."""
    probe = copy.deepcopy(model).to(device).eval()
    chunk = min(RENDER_CHUNK, len(source))
    coords = source.coords[:chunk].to(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        probe(coords)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * len(source) / chunk


def _plan_minutes(
    model: FieldModel,
    source: PixelSource,
    plan: ModelPlan,
    batch: int,
    device: torch.device,
    minutes: float,
    steps: int | None,
    started: float,
    resume_from: Path | None = None,
) -> tuple[BudgetPlan, dict[str, float]]:
    """Probe a step and a full render, then plan the budget: without ``steps`` as many steps as fit
    (the cosine schedule then ends in time); with them the budget only caps the fit."""
    from fieldpress.engine import plan_budget
    from fieldpress.engine.probe import seconds_per_step

    per_step = seconds_per_step(
        model, source, mse_loss, batch, device, lr=plan.lr, param_groups=cam_param_groups
    )
    render_seconds = _render_seconds(model, source, device)
    budget = plan_budget(
        minutes,
        per_step,
        epochs=None if steps is None else {"fit": steps},
        # the final render runs twice (quantized check + the decoder's), plus coding and writing
        reserve_seconds=2.2 * render_seconds + 0.03 * minutes * 60.0 + 1.0,
        elapsed_seconds=time.perf_counter() - started,
        margin=1 / 1.1,
        min_epochs=10,
        shrink=False,
        resume_from=resume_from,
    )
    return budget, {"seconds_per_step": per_step, "render_seconds": render_seconds}


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """Where a fit checkpoints (``<output>.ckpt/``; None: nowhere), whether it resumes from there, an
    extra step interval, and what must match for a resume (the image's digest, the flags)."""

    output: Path | None
    resume: bool = False
    every_steps: int | None = None
    signature: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def fit_image(
    array: np.ndarray,
    info: RasterInfo,
    plan: ModelPlan,
    *,
    steps: int | None,
    minutes: float | None,
    seed: int,
    device: torch.device,
    show_progress: bool = False,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    started: float | None = None,
    checkpoints: Checkpoints | None = None,
) -> FitImageResult:
    """Fit a model of ``plan`` to the image through the Fitter (one cosine "fit" stage).

    ``minutes`` budgets the whole run from ``started`` (a ``time.perf_counter()`` value; default
    now), keeping a reserve for coding and the final render. Without ``steps``, a short timing
    probe sets the step count so the cosine schedule completes inside the budget; the budget also
    stays a hard cap. CPU fits use small batches (CPU_BATCH): more steps per second beat larger
    batches under a time budget there; CUDA uses the plan's batch. ``checkpoints``: where the Fitter
    checkpoints and whether it resumes (a ``--minutes`` plan is then the one stored).
    """
    from fieldpress.engine import FitConfig, Fitter, Stage

    ck = checkpoints or Checkpoints(None)

    started = time.perf_counter() if started is None else started
    source = PixelSource(array, info)
    model = build_model(plan, info.channels, seed)
    batch = min(plan.batch_size if device.type == "cuda" else CPU_BATCH, len(source))
    calibration: dict[str, float] = {}
    fit_minutes = budget = None
    if minutes is not None:
        budget, calibration = _plan_minutes(model, source, plan, batch, device, minutes, steps, started,
                                            ck.output if ck.resume else None)
        steps, fit_minutes = budget.epochs["fit"], budget.cap_minutes
    if steps is None:
        steps = DEFAULT_STEPS
    if steps < 1:
        raise InputError("--steps must be at least 1")
    config = FitConfig(
        batch_size=batch,
        seed=seed,
        device=str(device),
        minutes=fit_minutes,
        steps_per_epoch=1,
        log_every=max(1, steps // 50),
        description=f"fit-image {plan.name}",
        eval_every=eval_every,
        checkpoint_every_steps=ck.every_steps,
    )
    stages = [Stage(kind="fit", epochs=steps, lr=plan.lr, warmup=0.02, schedule="cosine", min_lr_ratio=0.01)]
    fitter = Fitter(
        model,
        source,
        mse_loss,
        config,
        stages,
        output=ck.output,
        signature={"plan": plan.to_dict(), "seed": seed, "steps": steps, **ck.signature},
        param_groups=cam_param_groups,
        evaluate=evaluate,
        show_progress=show_progress,
        budget=budget,
    )
    result = fitter.run(resume=ck.resume)
    fitted = result.model.to("cpu")
    return FitImageResult(fitted, result.steps, result.seconds, result.interrupted, calibration)


# ----------------------------------------------------------------------------- coding
def encode_image(
    model: FieldModel,
    plan: ModelPlan,
    info: RasterInfo,
    *,
    bits: int,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> Encoded:
    """Quantize and pack the model: the header and streams of an ``image/field`` file (the codec
    registry stamps ``codec``/``codec_version`` when it writes them; ``format`` stays for readers
    older than the registry)."""
    from fieldpress.codec.quant import compress_state_dict

    state = codec_state(model)
    streams, meta = compress_state_dict(state, bits=bits, axes=codec_axes(state))
    streams = dict(streams)
    if isinstance(model.encoding, RandomFourierEncoding):
        streams[RFF_STREAM] = model.encoding.B.detach().cpu().numpy().astype(np.float16)
    header = {
        "format": FORMAT,
        "image": info.to_dict(),
        "model": plan.to_dict(),
        "seed": seed,
        "bits": bits,
        "quant": meta,
        **dict(extra or {}),
    }
    return Encoded(header, streams)


def _check_plan(plan: Mapping[str, Any]) -> None:
    """Refuse absurd architectures from a damaged or hostile header before allocating them."""
    enc, net = dict(plan["encoding"]), dict(plan["network"])
    if not 0 < int(plan["n_params"]) <= MAX_DECODE_PARAMS:
        raise ValueError(f"parameter count {plan['n_params']} out of range")
    if not 0 < int(net.get("n_neurons", 64)) <= 4096 or not 0 <= int(net.get("n_hidden_layers", 2)) <= 64:
        raise ValueError("network size out of range")
    if not 0 < int(enc.get("n_frequencies", 1)) <= 1 << 14:
        raise ValueError("n_frequencies out of range")
    cam = net.get("cam")
    if cam:
        if not isinstance(cam, Mapping):
            raise ValueError("cam is not an object")
        shape = [int(v) for v in cam.get("grid_shape", (32, 32))]
        if not (shape and all(0 < v <= 1 << 12 for v in shape) and 0 < int(cam.get("channels", 1)) <= 256
                and math.prod(shape) * int(cam.get("channels", 1)) <= 1 << 22):
            raise ValueError("CAM grid out of range")
    if enc.get("otype") in ("HashGrid", "DenseGrid", "TiledGrid", "Grid"):
        from fieldpress.cuda.hashgrid_ref import HashGridSpec

        if HashGridSpec.from_config(enc, 2).n_params > MAX_DECODE_PARAMS:
            raise ValueError("grid too large")


def decode_model(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[FieldModel, RasterInfo]:
    """Rebuild the fitted model from a header and its decoded streams (what the decoder runs)."""
    from fieldpress.codec.quant import decompress_state_dict

    try:
        info = RasterInfo.from_dict(dict(header["image"]))
        plan = dict(header["model"])
        seed = int(header["seed"])
        meta = header["quant"]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"image header is incomplete: {exc}") from None
    try:
        _check_plan(plan)
        model = build_model(plan, info.channels, seed)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"image header names an unusable model: {exc}") from None
    if learned_params(model) != int(plan.get("n_params", -1)):
        raise FormatError("image header's parameter count does not match its model")
    quant_streams = {k: v for k, v in arrays.items() if k != RFF_STREAM}
    state = decompress_state_dict(quant_streams, meta)
    load_codec_state(model, state)
    if isinstance(model.encoding, RandomFourierEncoding):
        if RFF_STREAM not in arrays:
            raise FormatError(f"image file lacks the {RFF_STREAM} stream")
        b = torch.from_numpy(np.asarray(arrays[RFF_STREAM]).astype(np.float32))
        if tuple(b.shape) != tuple(model.encoding.B.shape):
            raise FormatError("random Fourier matrix has the wrong shape")
        model.encoding.B.copy_(b)
    return model, info


class ImageDecoder:
    """The container decoder for kind "image": ``.info`` and ``.image(device)`` -> (H, W, C) array."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.header = dict(container.header)
        if int(self.header.get("format", -1)) != FORMAT:
            raise FormatError(f"unsupported image format version {self.header.get('format')}")
        self.info = RasterInfo.from_dict(dict(self.header.get("image", {})))

    def model(self) -> FieldModel:
        return decode_model(self.header, self.container.arrays())[0]

    def image(self, device: torch.device | str = "cpu") -> np.ndarray:
        return render(self.model(), self.info, device)


class ImageCodecImpl:
    """The heavy half of the image field codec (fieldpress.fields.codecs): encode a fitted field,
    decode a container."""

    def encode(self, model: FieldModel, plan: ModelPlan, info: RasterInfo, *, bits: int, seed: int,
               extra: Mapping[str, Any] | None = None) -> Encoded:
        return encode_image(model, plan, info, bits=bits, seed=seed, extra=extra)

    def decode(self, container: Any) -> ImageDecoder:
        return ImageDecoder(container)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): load the weights into the field; render nothing."""
        ImageDecoder(container).model()


FIELD_CODEC = ImageCodecImpl()


# ----------------------------------------------------------------------------- the pipeline's method
@dataclasses.dataclass
class FieldFit:
    """A fitted image field (the pipeline's ``FittedImage`` for the ``field`` codec)."""

    model: FieldModel
    plan: ModelPlan
    info: RasterInfo
    seed: int
    steps: int
    seconds: float
    interrupted: bool = False
    _preview: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def facts(self) -> dict[str, Any]:
        return {"model": self.plan.name, "params": self.plan.n_params}

    def preview(self) -> np.ndarray:
        if self._preview is None:
            self._preview = render(self.model, self.info)
        return self._preview

    def encode(self, options: ImageOptions) -> Encoded:
        return FIELD_CODEC.encode(self.model, self.plan, self.info, bits=options.bits, seed=self.seed)


def fit_field(image: SourceImage, options: ImageOptions, device: torch.device, hooks: FitHooks) -> FieldFit:
    """The ``field`` method of ``fieldpress.fields.pipeline``: size ``options.model`` to the budget
    ``options.params`` for this image and fit it (``fit_image``)."""
    info = image.info
    plan = plan_model(options.model, options.params, info.width, info.height, info.channels)
    torch.manual_seed(options.seed)
    checkpoints = None
    if hooks.checkpoint is not None:
        digest = hashlib.sha256(np.ascontiguousarray(image.pixels).tobytes()).hexdigest()
        flags = {k: v for k, v in dataclasses.asdict(options).items() if k != "threads"}
        checkpoints = Checkpoints(hooks.checkpoint, hooks.resume, hooks.checkpoint_every_steps,
                                  {"image_sha256": digest, "options": flags})
    fit = fit_image(image.pixels, info, plan, steps=options.steps, minutes=options.minutes, seed=options.seed,
                    device=device, show_progress=hooks.progress, evaluate=hooks.evaluate,
                    eval_every=hooks.eval_every, started=hooks.started, checkpoints=checkpoints)
    return FieldFit(fit.model, plan, info, options.seed, fit.steps, fit.seconds, fit.interrupted)

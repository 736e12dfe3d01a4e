"""The image pipeline: ``compress(input, options, device) -> Result`` and ``decode(path, device)``.

One shape for every image codec. ``compress`` reads the image, hands it to the *method* registered
for ``options.model`` (a codec name plus the function that fits and encodes; ``METHODS``), turns the
encoded result into the file's bytes through the codec registry (so the header names ``codec`` and
``codec_version``), decodes exactly those bytes back on the CPU and measures them: ``psnr``
(= ``psnr_frame_mean``: one frame), ``ms_ssim`` and ``bpp`` beside the codec's facts. The commands
(`fit-image`, `decode-image`) and ``bench/image_fields.py`` call these functions.

A second image codec (an overfitted latent grid, say) is a new method: a codec registered by entry
point under ``image/<name>`` and a ``fit(image, options, device, hooks) -> FittedImage`` function,
added with ``register_method(model_name, ImageMethod(codec, "module:function"))``. Options that
only it reads become fields of ``ImageOptions`` (defaulting to "unset"), refused by methods that
do not read them.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fieldpress.codec.registry import Codec, Encoded, Result, encode_file, get_codec
from fieldpress.errors import InputError
from fieldpress.fields.image_io import RasterInfo, read_image
from fieldpress.fields.presets import MODELS
from fieldpress.runtime import cpu_threads, torch_threads

if TYPE_CHECKING:
    import torch

__all__ = [
    "METHODS",
    "DecodedImage",
    "FitHooks",
    "FittedImage",
    "ImageMethod",
    "ImageOptions",
    "SourceImage",
    "code",
    "compress",
    "compress_image",
    "decode",
    "default_model",
    "decoded_pixels",
    "fit",
    "image_ms_ssim",
    "image_psnr",
    "load_image",
    "method_for",
    "model_names",
    "register_method",
    "resolve_model",
]

KIND = "image"
AUTO = "auto"  # --model not given: DEFAULT_RGB8 for 8-bit RGB images, DEFAULT_FIELD for the others
DEFAULT_RGB8 = "latent"  # the rate-distortion latent-grid codec: beats JPEG on Kodak (docs/latent-codec.md)
DEFAULT_FIELD = "cam-ffn"  # the latent codec codes 3 channels of 8 bits only: grey, alpha, 16-bit go here


# ----------------------------------------------------------------------------- options and inputs
@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """The fit-image flags: architecture (``model``; "auto" picks it per image) and its learned-parameter
    budget, the fit length (``steps``, or a time budget ``minutes``; both: the steps, capped by the
    time), weight bits, seed and CPU threads (None: the image thread policy,
    ``runtime.cpu_threads(small_batches=True)``)."""

    model: str = AUTO  # AUTO: chosen per image by ``resolve_model``
    params: int = 60_000
    steps: int | None = None
    minutes: float | None = None
    bits: int = 6
    seed: int = 0
    threads: int | None = None
    lmbda: float | None = None  # rate-distortion methods: loss = distortion + lmbda * bpp
    quality: int | None = None  # ... or a fixed lambda ladder, 1 (fewest bits) .. 8
    target_bpp: float | None = None  # ... or the lambda whose file lands at this many bits per pixel
    prior: str | None = None  # recombiner: the prior file (None: the shipped one)
    kl_budget: float | None = None  # recombiner: bits per pixel spent on REC indices
    block_bits: int | None = None  # recombiner: bits per REC block (2^bits candidates)
    finetune_chunks: int | None = None  # recombiner: fine-tune after each of this many chunks of blocks

    @property
    def rate_distortion(self) -> bool:
        """Whether a rate-distortion flag (--lambda, --quality, --target-bpp) was given."""
        return any(v is not None for v in (self.lmbda, self.quality, self.target_bpp))

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.lmbda, self.quality, self.target_bpp)) > 1:
            raise InputError("give at most one of --lambda, --quality and --target-bpp")
        if self.lmbda is not None and not self.lmbda > 0:
            raise InputError(f"--lambda must be positive, got {self.lmbda}")
        if self.quality is not None and not 1 <= self.quality <= 8:
            raise InputError(f"--quality must be an integer from 1 to 8, got {self.quality}")
        if self.target_bpp is not None and not self.target_bpp > 0:
            raise InputError(f"--target-bpp must be positive, got {self.target_bpp}")
        if not 2 <= self.bits <= 16:
            raise InputError(f"--bits must be in 2..16, got {self.bits}")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be positive, got {self.steps}")
        if self.minutes is not None and not self.minutes > 0:
            raise InputError(f"--minutes must be positive, got {self.minutes}")
        if self.params < 1:
            raise InputError(f"--params must be positive, got {self.params}")
        if self.kl_budget is not None and not self.kl_budget > 0:
            raise InputError(f"--kl-budget must be a positive number of bits per pixel, got {self.kl_budget}")

    def method_options(self) -> set[str]:
        """The method-specific options that were given (METHOD_OPTIONS names them)."""
        return {name for name in METHOD_OPTIONS if getattr(self, name) is not None}


METHOD_OPTIONS = {"prior": "--prior", "kl_budget": "--kl-budget", "block_bits": "--block-bits",
                  "finetune_chunks": "--finetune-chunks"}


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """The pixels to code, (H, W, C) uint8 or uint16 in their own mode, with their layout."""

    pixels: np.ndarray
    info: RasterInfo
    path: str | None = None


def load_image(path: str | Path) -> SourceImage:
    """Read an image file (InputError, exit 2, when it is not a readable image)."""
    pixels, info = read_image(path)
    return SourceImage(pixels, info, str(path))


@dataclasses.dataclass(frozen=True)
class FitHooks:
    """How a fit runs besides its options: a progress bar, the ``time.perf_counter()`` the time budget
    counts from (default: when the fit starts), the Fitter's ``evaluate(model)`` every
    ``eval_every`` steps (benchmarks draw PSNR curves with it), and checkpoints for ``--resume``."""

    progress: bool = False
    started: float | None = None
    evaluate: Callable[[Any], dict[str, float]] | None = None
    eval_every: int | None = None
    checkpoint: Path | None = None  # the output path: the Fitter checkpoints to <checkpoint>.ckpt/
    resume: bool = False  # continue from that checkpoint (refused when the flags or the image differ)
    checkpoint_every_steps: int | None = None  # also checkpoint every N steps (default: every 60 s)


class FittedImage(Protocol):
    """What a method's fit returns: a fitted representation that encodes at any options' bits."""

    steps: int
    seconds: float

    def facts(self) -> dict[str, Any]:
        """The summary's description of the fit (``model``, ``params``, ...)."""
        ...

    def preview(self) -> np.ndarray:
        """The pixels before quantization (for ``psnr_before_quant``)."""
        ...

    def encode(self, options: ImageOptions) -> Encoded:
        """The codec's header and streams at ``options`` (bits, ...)."""
        ...

    # optional: ``decode_options() -> dict``, what the decoder needs besides the file (a prior, ...)


# ----------------------------------------------------------------------------- methods
@dataclasses.dataclass(frozen=True)
class ImageMethod:
    """One way to code an image: the registered ``codec`` (kind image) that writes and reads the file,
    and ``fit``, a function taking ``(image, options, device, hooks)`` and returning a
    ``FittedImage``, or its "module:function" name, imported on first use (keeps torch unloaded)."""

    codec: str
    fit: str | Callable[[SourceImage, ImageOptions, Any, FitHooks], FittedImage]
    description: str = ""
    rate_distortion: bool = False  # takes --lambda / --quality / --target-bpp
    options: tuple[str, ...] = ()  # the ImageOptions fields of METHOD_OPTIONS it reads

    def codec_object(self) -> Codec:
        return get_codec(KIND, self.codec)

    def run_fit(self, image: SourceImage, options: ImageOptions, device: Any, hooks: FitHooks) -> FittedImage:
        function = self.fit
        if isinstance(function, str):
            module, _, attr = function.partition(":")
            function = getattr(importlib.import_module(module), attr)
        return function(image, options, device, hooks)


FIELD_METHOD = ImageMethod("field", "fieldpress.fields.image:fit_field",
                           "a coordinate field (SIREN, Fourier features, hash grid, CAM), quantized weights")
LATENT_METHOD = ImageMethod("latent", "fieldpress.fields.latent.method:fit_latent",
                            "an overfitted latent-grid codec trained for rate + lambda x distortion",
                            rate_distortion=True)
RECOMBINER_METHOD = ImageMethod("recombiner", "fieldpress.fields.recombiner.method:fit_recombiner",
                                "RECOMBINER: a Bayesian INR posterior sample, relative-entropy coded under a "
                                "learned prior", options=tuple(METHOD_OPTIONS))
METHODS: dict[str, ImageMethod] = {**{name: FIELD_METHOD for name in MODELS}, "latent": LATENT_METHOD,
                                   "recombiner": RECOMBINER_METHOD}


def register_method(model: str, method: ImageMethod) -> ImageMethod:
    """Make ``fit-image --model MODEL`` (and ``compress``) use ``method``."""
    METHODS[model] = method
    return method


def model_names() -> list[str]:
    return list(METHODS)


def default_model(info: RasterInfo) -> str:
    """The model ``--model`` defaults to: the latent codec for 8-bit RGB (no alpha), which it codes and
    where it beats JPEG; a coordinate field (``cam-ffn``) for grey, alpha or 16-bit images."""
    return DEFAULT_RGB8 if info.mode == "RGB" and info.bit_depth == 8 else DEFAULT_FIELD


def resolve_model(options: ImageOptions, info: RasterInfo) -> ImageOptions:
    """``options`` with ``model="auto"`` replaced by :func:`default_model` of the image."""
    if options.model != AUTO:
        return options
    return dataclasses.replace(options, model=default_model(info))


def method_for(model: str) -> ImageMethod:
    try:
        return METHODS[model]
    except KeyError:
        raise InputError(f"unknown model {model!r}: choose from {', '.join(METHODS)}") from None


# ----------------------------------------------------------------------------- measuring
def image_psnr(ref: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    """PSNR in dB over every stored channel, peak 2^bits - 1 (MSE pooled over all samples)."""
    from fieldpress.metrics import psnr

    return float(psnr(ref, test, max_val=float((1 << bit_depth) - 1)))


def image_ms_ssim(ref: np.ndarray, test: np.ndarray, bit_depth: int) -> float:
    """MS-SSIM over every stored channel (fieldpress.metrics' window rule); 16-bit values are scaled
    to the 0..255 range it measures on."""
    from fieldpress.metrics import ms_ssim

    if bit_depth != 8:
        scale = 255.0 / float((1 << bit_depth) - 1)
        ref, test = ref.astype(np.float64) * scale, test.astype(np.float64) * scale
    return float(ms_ssim(ref, test))


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """A decoded file: its pixels in the original size, mode and bit depth, and what wrote it."""

    pixels: np.ndarray
    info: RasterInfo
    codec: str
    header: dict[str, Any]


def decode(path: str | Path | bytes, device: Any = "cpu", **options: Any) -> DecodedImage:
    """Decode an image file (a path or its bytes) with the codec its header names (or that claims
    it, for old files); ``options`` go to that codec's decoder (e.g. ``prior=`` for recombiner)."""
    from fieldpress.codec.container import open_container

    container = open_container(path)
    if container.kind != KIND:
        kind = container.kind
        raise InputError(f"{path}: a {kind} container, not an image (use the {kind} decoder)")
    try:
        decoder = container.decoder(**options)
    except TypeError:
        raise InputError(f"{', '.join(options)} do not apply to {container.codec().name} files") from None
    return DecodedImage(decoder.image(device), decoder.info, container.codec().name, dict(container.header))


def decoded_pixels(data: bytes) -> np.ndarray:
    """The pixels a decoder reproduces from a file's bytes (decoded on the CPU)."""
    return decode(data, "cpu").pixels


# ----------------------------------------------------------------------------- the pipeline
@contextmanager
def _thread_policy(options: ImageOptions, device: Any) -> Iterator[None]:
    """CPU fits run with the image thread policy (small batches: one thread unless told otherwise)."""
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    with torch_threads(cpu_threads(options.threads, small_batches=True)) if on_cpu else nullcontext():
        yield


def fit(image: SourceImage, options: ImageOptions, device: torch.device,
        hooks: FitHooks | None = None) -> FittedImage:
    """Fit ``image`` with the method of ``options.model`` (no coding yet)."""
    hooks = hooks or FitHooks()
    if hooks.started is None:
        hooks = dataclasses.replace(hooks, started=time.perf_counter())
    chosen = resolve_model(options, image.info)
    method = method_for(chosen.model)
    if chosen.rate_distortion and not method.rate_distortion:
        info = image.info
        why = (f" (the default for this {info.mode} {info.bit_depth}-bit image: the latent codec codes "
               "8-bit RGB)" if options.model == AUTO else "")
        raise InputError(f"--lambda, --quality and --target-bpp apply to rate-distortion models "
                         f"({', '.join(m for m, v in METHODS.items() if v.rate_distortion)}), "
                         f"not {chosen.model}{why}")
    options = chosen
    foreign = sorted(options.method_options() - set(method.options))
    if foreign:
        flags = ", ".join(METHOD_OPTIONS[name] for name in foreign)
        raise InputError(f"{flags} do not apply to --model {options.model}")
    with _thread_policy(options, device):
        return method.run_fit(image, options, device, hooks)


def _measure(image: SourceImage, decoded: np.ndarray, fitted: FittedImage) -> dict[str, Any]:
    info = image.info
    psnr = image_psnr(image.pixels, decoded, info.bit_depth)
    return {
        "psnr": psnr,
        "psnr_frame_mean": psnr,  # one frame
        "ms_ssim": image_ms_ssim(image.pixels, decoded, info.bit_depth),
        "psnr_before_quant": image_psnr(image.pixels, fitted.preview(), info.bit_depth),
    }


def code(fitted: FittedImage, image: SourceImage, options: ImageOptions, device: Any = "cpu",
         started: float | None = None, codec: Codec | None = None) -> Result:
    """Encode a fit at ``options`` into file bytes, decode those bytes and measure them.

    The header gains the measured ``psnr`` (and ``psnr_channels``, ``steps``) for `fieldpress info`;
    the streams, hence the decoded pixels, are the ones measured."""
    started = time.perf_counter() if started is None else started
    options = resolve_model(options, image.info)
    codec = codec or method_for(options.model).codec_object()
    encoded = fitted.encode(options)
    decode_options = getattr(fitted, "decode_options", dict)()  # e.g. a recombiner fit's own prior
    measured = _measure(image, decode(encode_file(codec, encoded), "cpu", **decode_options).pixels, fitted)
    info = image.info
    header = {**encoded.header, "psnr": round(measured["psnr"], 4),
              "psnr_channels": f"{info.mode} at {info.bit_depth} bits", "steps": fitted.steps}
    data = encode_file(codec, dataclasses.replace(encoded, header=header))
    metrics = {
        "psnr": round(measured["psnr"], 3),
        "psnr_frame_mean": round(measured["psnr_frame_mean"], 3),
        "ms_ssim": round(measured["ms_ssim"], 5),
        "psnr_before_quant": round(measured["psnr_before_quant"], 3),
        "psnr_channels": info.mode,
        "psnr_bit_depth": info.bit_depth,
        "bpp": round(len(data) * 8.0 / (info.width * info.height), 4),
        **fitted.facts(),
        "steps": fitted.steps,
        "fit_seconds": round(fitted.seconds, 2),
        "size": f"{info.width}x{info.height}",
    }
    return Result(codec, data, metrics, input=image.path, seconds=time.perf_counter() - started,
                  device=str(device))


def compress_image(image: SourceImage, options: ImageOptions, device: torch.device,
                   hooks: FitHooks | None = None) -> Result:
    """Fit, encode, decode and measure pixels already in memory (``compress`` without the reading)."""
    hooks = hooks or FitHooks()
    started = time.perf_counter() if hooks.started is None else hooks.started
    chosen = resolve_model(options, image.info)
    codec = method_for(chosen.model).codec_object()
    with _thread_policy(options, device):  # the final renders and measures too
        fitted = fit(image, options, device, dataclasses.replace(hooks, started=started))
        return code(fitted, image, chosen, device, started, codec)


def compress(input_path: str | Path, options: ImageOptions, device: torch.device, *,
             progress: bool = False, checkpoint: Path | None = None, resume: bool = False,
             checkpoint_every_steps: int | None = None) -> Result:
    """Code the image at ``input_path``: the file's bytes (``result.write(path)``) and its measures.
    With ``checkpoint`` (the output path) the fit checkpoints to ``<checkpoint>.ckpt/``; ``resume``
    continues from there, bit for bit on the CPU."""
    started = time.perf_counter()
    image = load_image(input_path)
    hooks = FitHooks(progress=progress, started=started, checkpoint=checkpoint, resume=resume,
                     checkpoint_every_steps=checkpoint_every_steps)
    return compress_image(image, options, device, hooks)

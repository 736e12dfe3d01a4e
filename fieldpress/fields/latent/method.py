"""The latent-grid codec as a method of the image pipeline (`fit-image --model latent`) and as the
registered `image/latent` codec: fit at a lambda (from `--lambda`, `--quality` or `--target-bpp`),
encode to `Encoded`, decode a container to pixels."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec.rate_control import DEFAULT_QUALITY, check_lambda, quality_lambda, search_lambda
from fieldpress.codec.registry import Encoded, encode_file, get_codec
from fieldpress.errors import FormatError, InputError, ResumeError
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.latent import codec as latent_codec
from fieldpress.fields.latent.config import LatentConfig
from fieldpress.fields.latent.fit import (
    Checkpointing,
    FitConfig,
    FitResult,
    fit_latent_image,
    read_checkpoint,
)
from fieldpress.fields.latent.pipeline import to_tensor, to_uint8

DEFAULT_CPU_SECONDS = 300.0  # the bench's budget: 5 CPU-minutes per image
PROBE_FRACTION = 6  # a --target-bpp probe fits for 1/PROBE_FRACTION of the budget
MAX_PROBES = 4


@dataclasses.dataclass
class LatentFit:
    """A fitted latent-grid image (the pipeline's ``FittedImage`` for the ``latent`` codec)."""

    result: FitResult
    target: torch.Tensor
    info: RasterInfo
    search: list[dict[str, float]] = dataclasses.field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.result.steps

    @property
    def seconds(self) -> float:
        return self.result.seconds

    def facts(self) -> dict[str, Any]:
        out = {"model": "latent", "lambda": self.result.lambda_,
               "macs_per_pixel": round(self.result.model.macs_per_pixel(), 1)}
        if self.search:
            out["lambda_search"] = self.search
        return out

    def preview(self) -> np.ndarray:
        with torch.no_grad():
            image = self.result.model(None)[0][0]
        return to_uint8(image.clamp(0, 1))

    def encode(self, options: Any = None) -> Encoded:
        header, streams = latent_codec.encode(self.result.model, self.result.lambda_, self.target)
        header = {k: v for k, v in header.items() if k not in ("codec", "codec_version")}
        return Encoded({**header, "image": self.info.to_dict()}, streams)


def _budget(options: Any) -> dict[str, float | int]:
    """steps, or CPU seconds (--minutes, default DEFAULT_CPU_SECONDS), for one fit."""
    if options.steps is not None:
        return {"steps": options.steps}
    return {"seconds": options.minutes * 60.0 if options.minutes is not None else DEFAULT_CPU_SECONDS}


def _short(budget: dict[str, float | int]) -> dict[str, float | int]:
    """The budget of one --target-bpp probe."""
    if "steps" in budget:
        return {"steps": max(20, int(budget["steps"]) // PROBE_FRACTION)}
    return {"seconds": float(budget["seconds"]) / PROBE_FRACTION}


def _lambda_for(x: torch.Tensor, info: RasterInfo, options: Any, fit: FitConfig) -> tuple[float, list]:
    """The lambda of --lambda, --quality (default DEFAULT_QUALITY) or a --target-bpp search whose probes
    are short real fits measured from their encoded bytes."""
    if options.lmbda is not None:
        return check_lambda(options.lmbda), []
    if options.target_bpp is None:
        return quality_lambda(options.quality if options.quality is not None else DEFAULT_QUALITY), []
    codec, budget = get_codec("image", "latent"), _short(_budget(options))

    def measure(lam: float) -> float:
        probe = LatentFit(fit_latent_image(x, LatentConfig(), lam, fit=fit, **budget), x, info)
        return len(encode_file(codec, probe.encode())) * 8.0 / (info.width * info.height)

    lam, probes = search_lambda(options.target_bpp, measure, max_probes=MAX_PROBES)
    return lam, [{"lambda": p.lambda_, "bpp": round(p.bpp, 4)} for p in probes]


def _checkpointing(image: Any, options: Any, hooks: Any) -> Checkpointing | None:
    """Checkpoints beside the output (``hooks.checkpoint``), guarded by the image's digest and the flags."""
    if hooks.checkpoint is None:
        return None
    digest = hashlib.sha256(np.ascontiguousarray(image.pixels).tobytes()).hexdigest()
    flags = {k: v for k, v in dataclasses.asdict(options).items() if k != "threads"}
    return Checkpointing(Path(hooks.checkpoint), hooks.resume, hooks.checkpoint_every_steps,
                         signature={"image_sha256": digest, "options": flags})


def fit_latent(image: Any, options: Any, device: Any, hooks: Any) -> LatentFit:
    """The ``latent`` method of ``fieldpress.fields.pipeline``: 8-bit RGB only; fits on the CPU.

    With ``hooks.checkpoint`` the fit checkpoints to ``<output>.ckpt/``; ``hooks.resume`` continues it
    with the lambda stored there (a ``--target-bpp`` search is not run again)."""
    info = image.info
    if info.mode != "RGB" or info.bit_depth != 8:
        raise InputError(f"--model latent codes 8-bit RGB images; this one is {info.mode} at "
                         f"{info.bit_depth} bits (use a field model)")
    x = to_tensor(image.pixels)
    fit = FitConfig(seed=options.seed)
    ck = _checkpointing(image, options, hooks)
    if ck is not None and ck.resume:
        extra = read_checkpoint(ck)[1].get("extra") or {}
        if "lambda" not in extra:
            raise ResumeError(f"cannot resume: {ck.directory} holds no lambda")
        lam, search = float(extra["lambda"]), list(extra.get("lambda_search") or [])
    else:
        lam, search = _lambda_for(x, info, options, fit)
    if ck is not None:
        ck = dataclasses.replace(ck, extra={"lambda": lam, "lambda_search": search})
    result = fit_latent_image(x, LatentConfig(), lam, fit=fit, checkpoints=ck, **_budget(options))
    return LatentFit(result, x, info, search)


class LatentDecoder:
    """The decoder of an ``image/latent`` file: ``.info`` and ``.image(device)`` -> (H, W, 3) uint8."""

    def __init__(self, container: Any) -> None:
        self.container = container
        try:
            self.info = RasterInfo.from_dict(dict(container.header["image"]))
        except (KeyError, TypeError, InputError) as exc:
            raise FormatError(f"latent image header: {exc}") from None

    def image(self, device: Any = "cpu") -> np.ndarray:
        from fieldpress.runtime import torch_threads

        with torch_threads(1):  # small integer passes: one thread (two were 6x slower on a busy machine)
            decoded = latent_codec.decode(self.container.header, self.container.arrays())
        return to_uint8(decoded)


class LatentCodecImpl:
    """The heavy half of the ``image/latent`` codec (declared in fieldpress.fields.codecs)."""

    def encode(self, fitted: LatentFit) -> Encoded:
        return fitted.encode()

    def decode(self, container: Any) -> LatentDecoder:
        return LatentDecoder(container)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): the latents are entropy-coded under the file's
        own small networks, so checking them is decoding the image (one pass, no rendering beyond it)."""
        LatentDecoder(container).image()


LATENT_CODEC = LatentCodecImpl()

"""Image in, container file out (and back): the steps a CLI command or a benchmark runs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fieldpress.codec.container import open_container, write_container
from fieldpress.errors import InputError
from fieldpress.fields.latent import bitstream, codec
from fieldpress.fields.latent.config import LatentConfig
from fieldpress.fields.latent.fit import FitConfig, fit_latent_image


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"the latent codec takes 8-bit RGB images, got {rgb.dtype} {rgb.shape}")
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255.0  # a copy: inputs may be read-only


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 (round half up)."""
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def compress(rgb: np.ndarray, path: str | os.PathLike[str], lambda_: float, *, steps: int | None = None,
             seconds: float | None = None, config: LatentConfig = LatentConfig(),
             fit: FitConfig = FitConfig(),
             progress: Callable[[int, int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Fit, encode and write `path`; returns a report (bytes, bpp from the file, rate split, times)."""
    x = to_tensor(rgb)
    result = fit_latent_image(x, config, lambda_, steps=steps, seconds=seconds, fit=fit, progress=progress)
    t0 = time.process_time()
    header, streams = codec.encode(result.model, lambda_, x)
    file_bytes = write_container(path, "image", header, streams)
    encode_s = time.process_time() - t0
    npix = rgb.shape[0] * rgb.shape[1]
    info = open_container(path).streams
    latent_bytes, weight_bytes = info["latents"].length, info["weights"].length
    ctx = bitstream.IntContext.from_model(result.model, header["shifts"]["arm"])
    model_bits = bitstream.latent_bits(codec.integer_planes(result.model), ctx)
    return {"bytes": file_bytes, "bpp": file_bytes * 8 / npix, "lambda": lambda_, "steps": result.steps,
            "fit_cpu_s": result.seconds, "encode_cpu_s": encode_s, "latent_bytes": latent_bytes,
            "latent_model_bits": model_bits, "weight_bytes": weight_bytes,
            "other_bytes": file_bytes - latent_bytes, "shifts": header["shifts"],
            "train_bpp": result.history[-1]["bpp"], "train_psnr": result.history[-1]["psnr"],
            "macs_per_pixel": result.model.macs_per_pixel(), "history": result.history}


def decompress(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a latent-grid image file to (H, W, 3) uint8."""
    c = open_container(path)
    if c.kind != "image":
        raise InputError(f"{path}: a {c.kind} container, not an image")
    return to_uint8(codec.decode(c.header, c.arrays()))

"""encode(model) -> (header, streams) and decode(header, streams) -> image for latent-grid files."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fieldpress.codec.fixed_point import IntLinear
from fieldpress.errors import FormatError
from fieldpress.fields.latent import bitstream as bs
from fieldpress.fields.latent import context
from fieldpress.fields.latent.config import LATENT_MAX, LATENT_MIN, LatentConfig
from fieldpress.fields.latent.model import LatentImageModel

MAX_PIXELS = 1 << 28


def integer_planes(model: LatentImageModel) -> list[Tensor]:
    """The coded latents: rounded, clamped, as float64 planes holding integers."""
    return [torch.round(p.detach().clamp(LATENT_MIN, LATENT_MAX)).double() for p in model.latents]


def _choose_arm_shift(model: LatentImageModel, planes: list[Tensor]) -> tuple[int, float]:
    """The context-model step with the fewest latent + context-model bits."""
    best = (0, math.inf)
    for shift in bs.ARM_SHIFTS:
        ctx = bs.IntContext.from_model(model, shift)
        bits = bs.latent_bits(planes, ctx) + bs._weight_bits(bs._quantize_group(model, "arm", shift))
        if bits < best[1]:
            best = (shift, bits)
    return best


def _choose_synth_shift(model: LatentImageModel, group: str, planes: list[Tensor], target: Tensor | None,
                        lambda_: float) -> int:
    """The synthesis step minimising MSE + lambda * weight bits per pixel (8 without a target)."""
    if target is None:
        return 8
    npix = model.height * model.width
    floats = [p.detach().double().numpy().copy()
              for layer in bs._group_layers(model, group) for p in (layer.weight, layer.bias)]
    best = (8, math.inf)
    z = [p.float() for p in planes]
    for shift in bs.SYNTH_SHIFTS:
        bs._load_group(model, group, floats, 0)  # quantize from the float weights every time
        ints = bs._quantize_group(model, group, shift)
        bs._load_group(model, group, ints, shift)
        with torch.no_grad():
            mse = float(torch.mean((model.synthesize(z).clamp(0, 1) - target) ** 2))
        cost = mse + lambda_ * bs._weight_bits(ints) / npix
        if cost < best[1]:
            best = (shift, cost)
    bs._load_group(model, group, floats, 0)
    return best[0]


def encode(model: LatentImageModel, lambda_: float = 0.0, target: Tensor | None = None
           ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and streams of a trained model; network steps chosen by rate-distortion on `target`."""
    model = copy.deepcopy(model)
    planes = integer_planes(model)
    tgt = None if target is None else target.reshape(1, 3, model.height, model.width).float()
    shifts = {"arm": _choose_arm_shift(model, planes)[0]}
    for group in ("head", "blocks"):
        shifts[group] = _choose_synth_shift(model, group, planes, tgt, lambda_)
    ctx = bs.IntContext.from_model(model, shifts["arm"])
    ints = [a.reshape(-1) for g in bs.GROUPS[:1] for a in bs._quantize_group(model, g, shifts[g])]
    ints.append(ctx.offsets.reshape(-1))
    ints += [a.reshape(-1) for g in bs.GROUPS[1:] for a in bs._quantize_group(model, g, shifts[g])]
    header = {"codec": bs.CODEC, "codec_version": bs.CODEC_VERSION, "width": model.width,
              "height": model.height, "config": model.config.to_dict(), "shifts": shifts}
    streams = {"latents": bs.encode_latents(planes, ctx),
               "weights": np.concatenate(ints).astype(np.int32)}
    return header, streams


def _split(flat: np.ndarray, model: LatentImageModel) -> tuple[list[np.ndarray], np.ndarray, dict[str, list]]:
    """Cut the weights stream into arm arrays, offsets and synthesis arrays (shapes from the model)."""
    def shapes(group: str) -> list[tuple[int, ...]]:
        layers = bs._group_layers(model, group)
        return [tuple(p.shape) for layer in layers for p in (layer.weight, layer.bias)]

    layout = [("arm", shapes("arm")), ("offsets", [tuple(model.offsets.shape)]),
              ("head", shapes("head")), ("blocks", shapes("blocks"))]
    expected = sum(math.prod(s) for _, shp in layout for s in shp)
    if flat.size != expected:
        raise FormatError(f"latent weights stream holds {flat.size} values, expected {expected}")
    parts: dict[str, list] = {}
    pos = 0
    for group, shp in layout:
        parts[group] = []
        for s in shp:
            n = math.prod(s)
            parts[group].append(flat[pos:pos + n].astype(np.int64).reshape(s))
            pos += n
    return parts["arm"], parts["offsets"][0], parts


def _header_fields(header: dict[str, Any]) -> tuple[LatentConfig, int, int, dict[str, int]]:
    if header.get("codec") != bs.CODEC or header.get("codec_version") != bs.CODEC_VERSION:
        raise FormatError(f"not a latent v{bs.CODEC_VERSION} image: codec {header.get('codec')!r} "
                          f"version {header.get('codec_version')!r}")
    config = LatentConfig.from_dict(header.get("config"))
    try:
        width, height = int(header["width"]), int(header["height"])
        shifts = {g: int(header["shifts"][g]) for g in bs.GROUPS}
    except (KeyError, TypeError, ValueError):
        raise FormatError("latent header lacks width, height or shifts") from None
    if not (1 <= width and 1 <= height and width * height <= MAX_PIXELS) or any(
            not 0 <= s <= 24 for s in shifts.values()):
        raise FormatError("latent header has an out-of-range size or step")
    return config, width, height, shifts


def decode(header: dict[str, Any], streams: dict[str, np.ndarray]) -> Tensor:
    """The decoded image, (3, H, W) float32 in [0, 1]."""
    config, width, height, shifts = _header_fields(header)
    model = LatentImageModel(config, height, width)
    try:
        flat, words = np.asarray(streams["weights"]).reshape(-1), np.asarray(streams["latents"]).reshape(-1)
    except KeyError as exc:
        raise FormatError(f"latent image lacks stream {exc}") from None
    arm, offsets, parts = _split(flat, model)
    layers = [IntLinear(arm[2 * i], arm[2 * i + 1], shifts["arm"]) for i in range(len(arm) // 2)]
    n = len(model.arm_anchor.layers)
    ctx = bs.IntContext(layers[:n], layers[n:], offsets)
    for group in ("head", "blocks"):
        bs._load_group(model, group, parts[group], shifts[group])
    shapes = [context.level_shapes(height, width, config.n_levels)[lv] for lv in config.levels]
    planes = bs.decode_latents(words, shapes, ctx)
    with torch.no_grad():
        return model.synthesize([p.float() for p in planes])[0].clamp(0, 1)

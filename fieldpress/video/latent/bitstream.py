"""One group as bytes: integer latents range-coded under the fixed-point context model, networks
quantized with steps chosen by rate-distortion (the image codec's quantizers and integer layers).

Coding order within a group: coarsest level first; within a level frame by frame; within a frame the
anchors, then the rest. The decoder evaluates the integer context model frame by frame in that order.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fieldpress.codec import entropy, entropy_models
from fieldpress.codec.fixed_point import FRAC_BITS, IntLinear, int_mlp
from fieldpress.errors import FormatError
from fieldpress.fields.latent import bitstream as image_bs
from fieldpress.fields.latent import codec as image_codec
from fieldpress.fields.latent import context as image_context
from fieldpress.fields.latent.config import LATENT_MAX, LATENT_MIN
from fieldpress.video.latent import context
from fieldpress.video.latent.model import LatentGroupModel

GROUPS = image_bs.GROUPS  # ("arm", "head", "blocks"): one weight step each


def rows(ctx: image_bs.IntContext, k: int, feats: Tensor, anchors: bool) -> tuple[np.ndarray, np.ndarray]:
    """(centres, table rows) of features (N, C) of level k, in the integer context model."""
    out = int_mlp(feats, ctx.anchor if anchors else ctx.other).numpy().astype(np.int64)
    out += ctx.offsets[k, 0 if anchors else 1]
    mean = np.clip(out[:, 0], LATENT_MIN << FRAC_BITS, LATENT_MAX << FRAC_BITS)
    return entropy_models.param_indices(mean, out[:, 1])


def _level_rows(planes: list[Tensor], ctx: image_bs.IntContext, k: int, anchors: bool):  # noqa: ANN202
    parent = context.parent_volume(planes, k)
    centre, table = rows(ctx, k, context.pass_inputs(planes[k], parent, anchors), anchors)
    values = context.gather(planes[k], anchors).numpy().astype(np.int64)
    return centre, table, values


def latent_bits(planes: list[Tensor], ctx: image_bs.IntContext) -> float:
    """Exact bits of integer volumes under the integer tables (what the range coder will spend)."""
    return sum(entropy_models.table_bits(v, c, t) for k in range(len(planes)) for anchors in (True, False)
               for c, t, v in [_level_rows(planes, ctx, k, anchors)])


def encode_latents(planes: list[Tensor], ctx: image_bs.IntContext) -> np.ndarray:
    """Range-code integer volumes (float64 tensors holding integers); returns the coder's words."""
    enc = entropy_models.new_encoder()
    for k in reversed(range(len(planes))):
        frames = planes[k].shape[0]
        passes = [_level_rows(planes, ctx, k, anchors) for anchors in (True, False)]
        for t in range(frames):
            for centre, table, values in passes:
                n = values.size // frames
                cut = slice(t * n, (t + 1) * n)
                entropy_models.encode_symbols(enc, values[cut], centre[cut], table[cut])
    return entropy_models.finish(enc)


def decode_latents(words: np.ndarray, shapes: list[tuple[int, int, int]], ctx: image_bs.IntContext
                   ) -> list[Tensor]:
    """Decode a group's volumes (shapes (latent frames, h, w) per level) frame by frame and pass by pass
    (each one vectorized evaluation)."""
    dec = entropy_models.new_decoder(words)
    planes = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    for k in reversed(range(len(planes))):
        parent = context.parent_volume(planes, k)
        for t in range(planes[k].shape[0]):
            for anchors in (True, False):
                centre, table = rows(ctx, k, context.frame_inputs(planes[k], parent, t, anchors), anchors)
                values = entropy_models.decode_symbols(dec, centre, table)
                image_context.scatter(planes[k][t], torch.from_numpy(values.astype(np.float64)), anchors)
    return planes


def integer_planes(model: LatentGroupModel) -> list[Tensor]:
    """The coded latents: rounded, clamped, as float64 volumes holding integers."""
    return [torch.round(p.detach().clamp(LATENT_MIN, LATENT_MAX)).double() for p in model.latents]


def _choose_arm_shift(model: LatentGroupModel, planes: list[Tensor]) -> int:
    """The context-model step with the fewest latent + context-model bits."""
    best = (0, math.inf)
    for shift in image_bs.ARM_SHIFTS:
        bits = latent_bits(planes, image_bs.IntContext.from_model(model, shift))  # type: ignore[arg-type]
        bits += image_bs._weight_bits(image_bs._quantize_group(model, "arm", shift))  # type: ignore[arg-type]
        if bits < best[1]:
            best = (shift, bits)
    return best[0]


def _choose_synth_shift(model: LatentGroupModel, group: str, planes: list[Tensor], target: Tensor,
                        lambda_: float) -> int:
    """The synthesis step minimising MSE + lambda * weight bits per pixel."""
    layers = image_bs._group_layers(model, group)  # type: ignore[arg-type]
    floats = [p.detach().double().numpy().copy() for layer in layers for p in (layer.weight, layer.bias)]
    z = [p.float() for p in planes]
    best = (8, math.inf)
    for shift in image_bs.SYNTH_SHIFTS:
        image_bs._load_group(model, group, floats, 0)  # type: ignore[arg-type]
        ints = image_bs._quantize_group(model, group, shift)  # type: ignore[arg-type]
        image_bs._load_group(model, group, ints, shift)  # type: ignore[arg-type]
        with torch.no_grad():
            mse = float(torch.mean((model.synthesize(z).clamp(0, 1) - target) ** 2))
        cost = mse + lambda_ * image_bs._weight_bits(ints) / target[:, 0].numel()
        if cost < best[1]:
            best = (shift, cost)
    image_bs._load_group(model, group, floats, 0)  # type: ignore[arg-type]
    return best[0]


def encode_group(model: LatentGroupModel, lambda_: float, target: Tensor
                 ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, LatentGroupModel]:
    """(group header entry, latent words, weight integers, the model as the decoder will rebuild it)."""
    model = copy.deepcopy(model)
    planes = integer_planes(model)
    shifts = {"arm": _choose_arm_shift(model, planes)}
    for group in ("head", "blocks"):
        shifts[group] = _choose_synth_shift(model, group, planes, target, lambda_)
    ctx = image_bs.IntContext.from_model(model, shifts["arm"])  # type: ignore[arg-type]
    ints = [a.reshape(-1) for a in image_bs._quantize_group(model, "arm", shifts["arm"])]  # type: ignore[arg-type]
    ints.append(ctx.offsets.reshape(-1))
    for group in ("head", "blocks"):
        q = image_bs._quantize_group(model, group, shifts[group])  # type: ignore[arg-type]
        image_bs._load_group(model, group, q, shifts[group])  # type: ignore[arg-type]
        ints += [a.reshape(-1) for a in q]
    words = encode_latents(planes, ctx)
    with torch.no_grad():
        for p, q in zip(model.latents, planes):
            p.copy_(q)
    flat = np.concatenate(ints).astype(np.int32)
    entry = {"frames": model.frames, "shifts": shifts, "latent_bits": round(latent_bits(planes, ctx), 1),
             "latent_bytes": len(entropy.encode_best(words)[1]),
             "weight_bytes": len(entropy.encode_best(flat)[1])}
    return entry, words, flat, model


def decode_group(model: LatentGroupModel, shifts: dict[str, int], words: np.ndarray,
                 weights: np.ndarray) -> Tensor:
    """Fill `model` (built from the header) from a group's streams; returns its frames (T, 3, H, W)."""
    arm, offsets, parts = image_codec._split(weights, model)  # type: ignore[arg-type]
    layers = [IntLinear(arm[2 * i], arm[2 * i + 1], shifts["arm"]) for i in range(len(arm) // 2)]
    n = len(model.arm_anchor.layers)
    ctx = image_bs.IntContext(layers[:n], layers[n:], offsets)
    for group in ("head", "blocks"):
        image_bs._load_group(model, group, parts[group], shifts[group])  # type: ignore[arg-type]
    shapes = [tuple(p.shape) for p in model.latents]
    try:
        planes = decode_latents(words, shapes, ctx)
    except OverflowError as exc:
        raise FormatError(f"damaged latent video group ({exc})") from None
    with torch.no_grad():
        return model.synthesize([p.float() for p in planes]).clamp(0, 1)

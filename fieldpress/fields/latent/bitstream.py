"""Latent-grid image files: quantize the networks (steps chosen by rate-distortion), code, decode.

Streams: `latents` (range-coder words: all latent planes, coarsest first, anchors then the rest of
each level) and `weights` (every network integer, one int32 array, entropy-coded by the container).
The context model runs in fixed point (`fieldpress.codec.fixed_point`), so the decoder derives the
same integer table rows as the encoder on any machine; only the final synthesis runs in float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.codec import entropy, entropy_models
from fieldpress.codec.fixed_point import FRAC_BITS, IntLinear, int_mlp, quantize_linear
from fieldpress.fields.latent import context
from fieldpress.fields.latent.config import LATENT_MAX, LATENT_MIN
from fieldpress.fields.latent.model import LatentImageModel

CODEC, CODEC_VERSION = "latent", 1
ARM_SHIFTS = tuple(range(5, 13))
SYNTH_SHIFTS = tuple(range(4, 13))
GROUPS = ("arm", "head", "blocks")


def _group_layers(model: LatentImageModel, group: str) -> list[nn.Module]:
    if group == "arm":
        return [*model.arm_anchor.layers, *model.arm_other.layers]
    if group == "head":
        return list(model.synthesis.head)
    return list(model.synthesis.blocks)


def _quantize_group(model: LatentImageModel, group: str, shift: int) -> list[np.ndarray]:
    """Integer weight and bias arrays of one group at step 2**-shift (canonical order)."""
    out = []
    for layer in _group_layers(model, group):
        out.append(np.round(layer.weight.detach().double().numpy() * 2**shift).astype(np.int64))
        out.append(np.round(layer.bias.detach().double().numpy() * 2**shift).astype(np.int64))
    return out


def _load_group(model: LatentImageModel, group: str, ints: list[np.ndarray], shift: int) -> None:
    with torch.no_grad():
        for i, layer in enumerate(_group_layers(model, group)):
            layer.weight.copy_(torch.from_numpy(ints[2 * i] / 2.0**shift).reshape(layer.weight.shape))
            layer.bias.copy_(torch.from_numpy(ints[2 * i + 1] / 2.0**shift).reshape(layer.bias.shape))


def _weight_bits(ints: list[np.ndarray]) -> int:
    flat = np.concatenate([a.reshape(-1) for a in ints]).astype(np.int32)
    return 8 * len(entropy.encode_best(flat)[1])


# ----------------------------------------------------------------------------- the integer context model
@dataclass(frozen=True)
class IntContext:
    """The fixed-point context model: integer layers of both MLPs and integer per-level offsets."""

    anchor: list[IntLinear]
    other: list[IntLinear]
    offsets: np.ndarray  # (levels, 2, 2) int64, units 2**-FRAC_BITS

    @classmethod
    def from_model(cls, model: LatentImageModel, shift: int) -> IntContext:
        offsets = np.round(model.offsets.detach().double().numpy() * 2**FRAC_BITS).astype(np.int64)
        return cls([quantize_linear(layer, shift) for layer in model.arm_anchor.layers],
                   [quantize_linear(layer, shift) for layer in model.arm_other.layers], offsets)

    def rows(self, k: int, plane: Tensor, parent: Tensor | None,
             anchors: bool) -> tuple[np.ndarray, np.ndarray]:
        """(centres, table rows) of one pass in coding order; plane/parent are float64 integer planes."""
        feats = context.pass_inputs(plane, parent, anchors)
        out = int_mlp(feats, self.anchor if anchors else self.other).numpy().astype(np.int64)
        out += self.offsets[k, 0 if anchors else 1]
        mean = np.clip(out[:, 0], LATENT_MIN << FRAC_BITS, LATENT_MAX << FRAC_BITS)
        centre, table = entropy_models.param_indices(mean, out[:, 1])
        return centre, table


def _passes(n: int):
    """Coding order: coarsest plane first; anchors, then non-anchors."""
    for k in reversed(range(n)):
        for anchors in (True, False):
            yield k, anchors


def latent_bits(planes: list[Tensor], ctx: IntContext) -> float:
    """Exact bits of integer planes under the integer tables (what the range coder will spend)."""
    bits = 0.0
    for k, anchors in _passes(len(planes)):
        parent = planes[k + 1] if k + 1 < len(planes) else None
        centre, table = ctx.rows(k, planes[k], parent, anchors)
        values = context.gather(planes[k], anchors).numpy().astype(np.int64)
        bits += entropy_models.table_bits(values, centre, table)
    return bits


def encode_latents(planes: list[Tensor], ctx: IntContext) -> np.ndarray:
    """Range-code integer planes (float64 tensors holding integers); returns the coder's words."""
    enc = entropy_models.new_encoder()
    for k, anchors in _passes(len(planes)):
        parent = planes[k + 1] if k + 1 < len(planes) else None
        centre, table = ctx.rows(k, planes[k], parent, anchors)
        values = context.gather(planes[k], anchors).numpy().astype(np.int64)
        entropy_models.encode_symbols(enc, values, centre, table)
    return entropy_models.finish(enc)


def decode_latents(words: np.ndarray, shapes: list[tuple[int, int]], ctx: IntContext) -> list[Tensor]:
    """Decode the planes pass by pass (each pass one vectorized context evaluation)."""
    dec = entropy_models.new_decoder(words)
    planes = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    for k, anchors in _passes(len(planes)):
        parent = planes[k + 1] if k + 1 < len(planes) else None
        centre, table = ctx.rows(k, planes[k], parent, anchors)
        values = entropy_models.decode_symbols(dec, centre, table)
        context.scatter(planes[k], torch.from_numpy(values.astype(np.float64)), anchors)
    return planes

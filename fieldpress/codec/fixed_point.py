"""Fixed-point MLPs whose outputs are the same integers on every machine and thread count.

A context model that drives an entropy coder must give the decoder exactly the encoder's outputs.
Here every weight is an integer times 2**-k (k chosen per layer), inputs are integers, and each layer
rounds its output to FRAC_BITS fractional bits with a power-of-two shift. All intermediate values are
integers held in float64 and kept below 2**52, so every product and every partial sum is exact: the
result does not depend on summation order, BLAS kernel, FMA use or thread count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.errors import FormatError

FRAC_BITS = 8  # activations between layers and outputs: integers in units of 2**-FRAC_BITS
EXACT_LIMIT = 2.0**52


@dataclass(frozen=True)
class IntLinear:
    """One layer: integer weight (out, in) and bias, both in units of 2**-shift."""

    weight: np.ndarray  # int64
    bias: np.ndarray  # int64
    shift: int


def quantize_linear(layer: nn.Linear, shift: int) -> IntLinear:
    """Round a float layer's weight and bias to integers in units of 2**-shift."""
    scale = float(2**shift)
    w = torch.round(layer.weight.detach().double() * scale).long().numpy()
    b = torch.round(layer.bias.detach().double() * scale).long().numpy()
    return IntLinear(w, b, shift)


def dequantize_linear(q: IntLinear, layer: nn.Linear) -> None:
    """Load the quantized values into a float layer (what the encoder evaluated)."""
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(q.weight.astype(np.float64) / 2**q.shift))
        layer.bias.copy_(torch.from_numpy(q.bias.astype(np.float64) / 2**q.shift))


def _rescale(z: Tensor, from_bits: int) -> Tensor:
    """Integers in units 2**-from_bits -> integers in units 2**-FRAC_BITS (round half up)."""
    s = from_bits - FRAC_BITS
    if s > 0:
        return torch.floor(z / float(2**s) + 0.5)
    return z * float(2 ** (-s))


def _check_bound(h: Tensor, w: Tensor, b: Tensor) -> None:
    """Refuse inputs whose worst-case partial sums could leave the exactly representable integers."""
    if not h.numel():
        return
    bound = float(h.abs().max()) * float(w.abs().sum(dim=1).max()) + float(b.abs().max())
    if bound >= EXACT_LIMIT:
        raise FormatError("fixed-point context model overflow (values beyond 2**52)")


def int_mlp(x: Tensor, layers: list[IntLinear], input_bits: int = 0) -> Tensor:
    """Run integer layers (ReLU between them) on integer inputs in units 2**-input_bits.

    x: (N, C_in) float64 holding integers. Returns (N, C_out) float64 integers in units 2**-FRAC_BITS.
    """
    h = x.to(torch.float64)
    bits = input_bits
    for i, layer in enumerate(layers):
        w = torch.from_numpy(layer.weight.astype(np.float64))
        b = torch.from_numpy(layer.bias.astype(np.float64)) * float(2**bits)
        _check_bound(h, w, b)
        z = h @ w.T + b  # units 2**-(shift + bits), exact
        h = _rescale(z, layer.shift + bits)
        if i < len(layers) - 1:
            h = torch.relu(h)
        bits = FRAC_BITS
    return h

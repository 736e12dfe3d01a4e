"""Quantization-aware training: per-channel fake quantization of weights via `torch.nn.utils.parametrize`.

The parametrization recomputes the quantization parameters from the current weights on every
forward (`fieldpress.codec.quant.quant_params`, min-max) and applies `fieldpress.cuda.fake_quantize`
(straight-through gradient). Removing it keeps the float weights, so the codec, quantizing them with
the same bits and axis, reproduces exactly the values the QAT stage evaluated.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from fieldpress.engine.prunable import prunable_weights


class FakeQuantize(nn.Module):
    """`w -> fake_quantize(w, *quant_params(w))`, per channel along `axis` (None = per tensor)."""

    def __init__(self, bits: int, axis: int | None = 0, symmetric: bool = False) -> None:
        super().__init__()
        self.bits, self.axis, self.symmetric = int(bits), axis, bool(symmetric)

    def forward(self, w: Tensor) -> Tensor:
        from fieldpress.codec.quant import quant_params
        from fieldpress.cuda import fake_quantize

        axis = self.axis if (self.axis is None or w.dim() > self.axis) else None
        scale, zero_point, qmin, qmax = quant_params(w.detach(), self.bits, axis, symmetric=self.symmetric)
        scale, zero_point = scale.to(w.device), zero_point.to(w.device)
        return fake_quantize(w, scale, zero_point, qmin, qmax, axis)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, axis={self.axis}, symmetric={self.symmetric}"


def add_fake_quant(model: nn.Module, bits: int, axis: int | None = 0, symmetric: bool = False) -> list[str]:
    """Register fake quantization on every Linear/Conv weight; return their names."""
    names = []
    for name, module, attr in prunable_weights(model):
        if not parametrize.is_parametrized(module, attr):
            parametrize.register_parametrization(module, attr, FakeQuantize(bits, axis, symmetric))
        names.append(name)
    return names


def remove_fake_quant(model: nn.Module) -> None:
    """Remove the fake quantization, keeping the float weights it was applied to."""
    with torch.no_grad():
        for _, module, attr in prunable_weights(model):
            if parametrize.is_parametrized(module, attr):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)

"""Quantization-aware training: per-channel fake quantization of weights via `torch.nn.utils.parametrize`.

The parametrization recomputes the quantization parameters from the current weights on every
forward (`fieldpress.codec.quant.quant_params`, min-max) and applies `fieldpress.cuda.fake_quantize`
(straight-through gradient). Removing it keeps the float weights, so the codec, quantizing them with
the same bits and axis (the stage reports the axis of every weight), reproduces exactly the values
the QAT stage evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from fieldpress.codec.prunable import prunable_weights


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


def choose_axes(model: nn.Module, bits: int, axis: int | None | str = "auto",
                symmetric: bool = False) -> dict[str, int | None]:
    """The quantization axis of every Linear/Conv weight: `axis` itself, or with "auto" the codec's
    lowest-error choice (`fieldpress.codec.quant.choose_axis`, HNeRV's rule) on the current weights."""
    from fieldpress.codec.quant import choose_axis

    axes: dict[str, int | None] = {}
    for name, module, attr in prunable_weights(model):
        w = getattr(module, attr).detach()
        if axis == "auto":
            axes[name] = choose_axis(w, bits, symmetric)
        else:
            axes[name] = None if axis is None or w.dim() <= int(axis) else int(axis)
    return axes


def add_fake_quant(model: nn.Module, bits: int, axes: int | None | str | Mapping[str, int | None] = "auto",
                   symmetric: bool = False) -> dict[str, int | None]:
    """Register fake quantization on every Linear/Conv weight; return the axis used for each.

    Pass the returned axes to `compress_state_dict(..., axes=...)` so the file holds exactly the
    values the QAT stage evaluated."""
    if not isinstance(axes, Mapping):
        axes = choose_axes(model, bits, axes, symmetric)
    for name, module, attr in prunable_weights(model):
        if not parametrize.is_parametrized(module, attr):
            parametrize.register_parametrization(module, attr, FakeQuantize(bits, axes.get(name), symmetric))
    return dict(axes)


def remove_fake_quant(model: nn.Module) -> None:
    """Remove the fake quantization, keeping the float weights it was applied to."""
    with torch.no_grad():
        for _, module, attr in prunable_weights(model):
            if parametrize.is_parametrized(module, attr):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)

"""The decoder block every frame-wise video INR here shares, plus the small registries it draws from.

``DecoderBlock`` = Conv(k x k, C_in -> C_out * s^2) -> PixelShuffle(s) -> modulation slot -> activation
(NeRV's block; HNeRV uses it with kernels 1,3,5,5,5; NeRV++ wraps it as its upsampling block).

The modulation slot is built by name from ``MODULATIONS`` with ``(channels, spec)`` and is called as
``slot(h, t)`` with ``t`` the normalised frame time (B,) in [0, 1]. "none" is the identity; "cam"
is Coordinate-Aware Modulation (``fieldpress.fields.cam.CAM``: instance norm, then a per-channel
scale/shift read from a 1-D grid over time), so CAM plugs into every model without touching them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fieldpress.errors import InputError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "leaky": lambda: nn.LeakyReLU(0.2),
    "none": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise InputError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}") from None


@dataclass(frozen=True)
class ModulationSpec:
    """Which modulation fills the block's slot, and its grid size (time knots, for CAM)."""

    kind: str = "none"
    grid: int = 30            # CAM: knots of the 1-D time grid (30 for compression in the paper)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "grid": self.grid}


class NoModulation(nn.Module):
    """The empty slot: returns the features unchanged."""

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return h


def _cam(channels: int, spec: ModulationSpec) -> nn.Module:
    """CAM from the fields package: a temporal (1-D) grid of per-channel scale and shift."""
    try:
        from fieldpress.fields.cam import CAM
    except ImportError:
        raise InputError("--cam needs fieldpress.fields.cam, which this installation lacks") from None
    return _TimeCAM(CAM(1, (spec.grid,), channels))


class _TimeCAM(nn.Module):
    """Adapts CAM's ``forward(h, coords)`` (coords (B, 1)) to the slot's ``(h, t)`` call."""

    def __init__(self, cam: nn.Module) -> None:
        super().__init__()
        self.cam = cam

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.cam(h, t.reshape(-1, 1).to(h.dtype))


MODULATIONS: dict[str, Callable[[int, ModulationSpec], nn.Module]] = {
    "none": lambda channels, spec: NoModulation(),
    "cam": _cam,
}


def modulation(channels: int, spec: ModulationSpec) -> nn.Module:
    """Build the modulation slot named by ``spec.kind``."""
    try:
        factory = MODULATIONS[spec.kind]
    except KeyError:
        raise InputError(f"unknown modulation {spec.kind!r}; choose from {', '.join(MODULATIONS)}") from None
    return factory(channels, spec)


class DecoderBlock(nn.Module):
    """Conv(k) -> PixelShuffle(s) -> modulation(t) -> activation: the NeRV upsampling block."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int = 3, act: str = "gelu",
                 mod: ModulationSpec = ModulationSpec(), bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out * stride * stride, kernel, padding=kernel // 2, bias=bias)
        self.shuffle = nn.PixelShuffle(stride) if stride > 1 else nn.Identity()
        self.mod = modulation(c_out, mod)
        self.act = activation(act)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.act(self.mod(self.shuffle(self.conv(x)), t))


def channel_schedule(first: int, stages: int, reduction: float, lower: int, expansion: float = 1.0,
                     reduce_first: bool = False) -> list[int]:
    """Output widths of the blocks: NeRV's ``max(C // r, lower)`` (first block at ``first * expansion``),
    or HNeRV's ``max(round(C / r), lower)`` applied from the first block on (``reduce_first``)."""
    widths: list[int] = []
    c = first
    for i in range(stages):
        if reduce_first:
            c = max(int(round(c / reduction)), lower)
        elif i == 0:
            c = int(round(first * expansion))
        else:
            c = max(int(c // reduction), lower)
        widths.append(c)
    return widths


def choose_strides(height: int, width: int, target_grid: float, stages: Sequence[int] = (3, 4, 5),
                   preferred_stages: int = 5) -> tuple[int, ...]:
    """Pick the upsampling strides (non-increasing, each 2-5) for a frame of this size: the grid at the
    bottom (ceil(side / prod)) should have its short side near ``target_grid`` (9 in NeRV's 9x16,
    2 in HNeRV's bunny 2x4), with as little padding as possible."""
    best: tuple[float, int, tuple[int, ...]] | None = None
    short = min(height, width)
    for n in stages:
        for combo in itertools.combinations_with_replacement((5, 4, 3, 2), n):
            strides = tuple(sorted(combo, reverse=True))
            prod = math.prod(strides)
            gh, gw = math.ceil(height / prod), math.ceil(width / prod)
            if min(gh, gw) < 1 or prod > 2 * short:
                continue
            waste = gh * gw * prod * prod / (height * width) - 1.0
            off = abs(math.log(max(min(gh, gw), 1) / target_grid))
            score = waste + 0.25 * off
            key = (round(score, 6), abs(n - preferred_stages), strides)
            if best is None or key < best:
                best = key
    if best is None:
        raise InputError(f"a {width}x{height} frame is too small for the model")
    return best[2]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) on the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def output_head(x: torch.Tensor) -> torch.Tensor:
    """NeRV's output mapping, (tanh(x) + 1) / 2, to [0, 1]."""
    return torch.tanh(x) * 0.5 + 0.5

"""Quantization proxies for rate-distortion training: noise, straight-through, annealed soft-rounding.

Training a quantized value needs a differentiable stand-in for `round`. Three are used here, as in
Cool-chic and C3: additive uniform noise (the rate model sees a density), straight-through rounding
(the forward pass is exact), and soft-rounding (Agustsson & Theis 2020) whose temperature anneals
towards hard rounding. `schedule(progress)` gives the setting for a fraction 0..1 of the training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor


def uniform_noise(x: Tensor, amplitude: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """x plus U(-amplitude/2, amplitude/2) noise: the classic relaxation of rounding."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 0.5
    return x + amplitude * noise


def straight_through_round(x: Tensor) -> Tensor:
    """round(x) forward, identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def soft_round(x: Tensor, temperature: float) -> Tensor:
    """Agustsson & Theis soft-round: tends to round(x) as temperature -> 0 and to x as it grows."""
    if temperature <= 0:
        return torch.round(x)
    alpha = 1.0 / temperature
    floor = torch.floor(x)
    r = x - floor - 0.5
    return floor + 0.5 + torch.tanh(alpha * r) / (2.0 * math.tanh(alpha / 2.0))


def soft_round_noise(x: Tensor, temperature: float, noise: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """soft_round(soft_round(x) + noise): the smooth universal-quantization proxy used by C3/Cool-chic."""
    y = soft_round(x, temperature)
    if noise > 0:
        y = uniform_noise(y, noise, generator)
    return soft_round(y, temperature)


@dataclass(frozen=True)
class ProxySchedule:
    """When to use which proxy: soft-round + noise with temperature t0 -> t1, then straight-through."""

    t_start: float = 0.3
    t_end: float = 0.1
    noise_start: float = 1.0
    noise_end: float = 1.0
    ste_fraction: float = 0.1  # the last part of training uses straight-through rounding

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProxyState:
    """The proxy settings at one moment of training."""

    mode: str  # "softround" or "ste"
    temperature: float
    noise: float


def schedule(progress: float, config: ProxySchedule = ProxySchedule()) -> ProxyState:
    """Proxy settings at `progress` in [0, 1]: cosine anneal of temperature and noise, then STE."""
    p = min(max(float(progress), 0.0), 1.0)
    soft_end = 1.0 - config.ste_fraction
    if p >= soft_end:
        return ProxyState("ste", 0.0, 0.0)
    u = p / soft_end
    w = 0.5 * (1.0 + math.cos(math.pi * u))  # 1 -> 0
    temperature = config.t_end + (config.t_start - config.t_end) * w
    noise = config.noise_end + (config.noise_start - config.noise_end) * w
    return ProxyState("softround", temperature, noise)


def apply(x: Tensor, state: ProxyState, generator: torch.Generator | None = None) -> Tensor:
    """Apply the proxy `state` to x (training); use torch.round for the real encoder."""
    if state.mode == "ste":
        return straight_through_round(x)
    if state.mode == "noise":
        return uniform_noise(x, state.noise, generator)
    if state.mode == "softround":
        return soft_round_noise(x, state.temperature, state.noise, generator)
    raise ValueError(f"unknown proxy mode {state.mode!r}")

"""Coordinate networks: ReLU MLP and SIREN, optionally CAM-modulated, and ``FieldModel``.

``Network(config, n_in, n_out)`` builds from a tcnn-style config
(``{"otype": "MLP"|"FullyFusedMLP"|"CutlassMLP"|"SIREN", "n_neurons", "n_hidden_layers",
"activation", "output_activation"}``) plus our keys ``"cam": {"grid_shape": [32, 32], "channels": 1}``
and ``"w0"`` (SIREN). Networks take ``forward(h, coords=None)``; the coordinates feed CAM.
Unlike tcnn's fused MLPs our layers have biases, so only encoding params share tcnn's layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fieldpress.fields.cam import CAM

__all__ = ["ACTIVATIONS", "MLP", "NETWORKS", "FieldModel", "Network", "Siren", "register_network"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "None": nn.Identity,
    "ReLU": nn.ReLU,
    "LeakyReLU": nn.LeakyReLU,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "Softplus": nn.Softplus,
    "Exponential": lambda: _Lambda(torch.exp),
    "Sine": lambda: _Lambda(torch.sin),
}
NETWORKS: dict[str, Callable[..., nn.Module]] = {}


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def register_network(*otypes: str) -> Callable[[type], type]:
    """Class decorator: make a network buildable by ``Network({"otype": name, ...}, n_in, n_out)``."""

    def wrap(cls: type) -> type:
        for name in otypes:
            NETWORKS[name] = cls
        return cls

    return wrap


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _cams(config: Mapping[str, Any], n_layers: int, coord_dims: int) -> nn.ModuleList | None:
    cam_cfg = config.get("cam")
    if not cam_cfg:
        return None
    shape = tuple(cam_cfg.get("grid_shape", (32,) * coord_dims))
    channels = int(cam_cfg.get("channels", 1))
    return nn.ModuleList(CAM(coord_dims, shape, channels) for _ in range(n_layers))


@register_network("MLP", "FullyFusedMLP", "CutlassMLP")
class MLP(nn.Module):
    """Linear -> [CAM] -> activation, ``n_hidden_layers`` times, then a linear output layer."""

    def __init__(self, config: Mapping[str, Any], n_in: int, n_out: int, coord_dims: int = 2) -> None:
        super().__init__()
        self.config = dict(config)
        width = int(config.get("n_neurons", 64))
        depth = int(config.get("n_hidden_layers", 2))
        if width < 1 or depth < 0:
            raise ValueError("n_neurons must be >= 1 and n_hidden_layers >= 0")
        dims = [n_in] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = _activation(str(config.get("activation", "ReLU")))
        self.cams = _cams(config, depth, coord_dims)
        self.out = nn.Linear(dims[-1], n_out)
        self.out_act = _activation(str(config.get("output_activation", "None")))

    def forward(self, h: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.hidden):
            h = layer(h)
            if self.cams is not None:
                if coords is None:
                    raise ValueError("a CAM network needs the coordinates")
                h = self.cams[i](h, coords)
            h = self.act(h)
        return self.out_act(self.out(h))


class SineLayer(nn.Module):
    """sin(w0 * (W x + b)) with SIREN's initialisation (Sitzmann et al. 2020)."""

    def __init__(self, n_in: int, n_out: int, w0: float, first: bool) -> None:
        super().__init__()
        self.w0 = w0
        self.linear = nn.Linear(n_in, n_out)
        bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            self.linear.bias.uniform_(-1.0 / math.sqrt(n_in), 1.0 / math.sqrt(n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * self.linear(x))


@register_network("SIREN")
class Siren(nn.Module):
    """SIREN: sine layers (w0 = 30, first layer U(-1/n, 1/n), others U(+-sqrt(6/n)/w0)), linear output."""

    def __init__(self, config: Mapping[str, Any], n_in: int, n_out: int, coord_dims: int = 2) -> None:
        super().__init__()
        self.config = dict(config)
        width = int(config.get("n_neurons", 64))
        depth = int(config.get("n_hidden_layers", 3))
        w0 = float(config.get("w0", 30.0))
        if width < 1 or depth < 1:
            raise ValueError("SIREN needs n_neurons >= 1 and n_hidden_layers >= 1")
        dims = [n_in] + [width] * depth
        self.hidden = nn.ModuleList(
            SineLayer(a, b, w0, first=(i == 0)) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))
        )
        self.out = nn.Linear(dims[-1], n_out)
        bound = math.sqrt(6.0 / dims[-1]) / w0
        with torch.no_grad():
            self.out.weight.uniform_(-bound, bound)
        self.out_act = _activation(str(config.get("output_activation", "None")))

    def forward(self, h: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.hidden:
            h = layer(h)
        return self.out_act(self.out(h))


def Network(  # noqa: N802 - named like tcnn's constructor
    config: Mapping[str, Any], n_in: int, n_out: int, coord_dims: int = 2
) -> nn.Module:
    """Build a network from a tcnn-style config dict (registry by ``otype``)."""
    otype = str(config.get("otype", "MLP"))
    if otype not in NETWORKS:
        raise ValueError(f"unknown network otype {otype!r}; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[otype](config, n_in, n_out, coord_dims=coord_dims)


class FieldModel(nn.Module):
    """encoding then network, like tcnn's NetworkWithInputEncoding; coordinates also feed CAM."""

    def __init__(self, encoding: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.encoding = encoding
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(x), coords=x)

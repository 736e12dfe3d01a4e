"""Image field architectures by name, sized to a parameter budget.

Each preset turns (budget, image size, channels) into tcnn-style encoding and network configs,
solving the hidden width (and, for hash grids, the table size) so that the learned parameters,
CAM grids included, fit the budget. ``MODELS`` is the registry ``fit-image --model`` reads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from fieldpress.cuda.hashgrid_ref import HashGridSpec
from fieldpress.errors import InputError

__all__ = ["MODELS", "ModelPlan", "plan_model", "mlp_params"]

CAM_GRID = (32, 32)
MIN_WIDTH = 8
MAX_WIDTH = 1024


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """A sized architecture: configs for ``Encoding``/``Network``, its learned size and fit defaults."""

    name: str
    encoding: dict[str, Any]
    network: dict[str, Any]
    n_params: int
    lr: float
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def mlp_params(n_in: int, width: int, depth: int, n_out: int, cam_layers: int = 0) -> int:
    """Learned parameters of an MLP with biases (plus 32x32x2 CAM grids on ``cam_layers`` layers)."""
    hidden = n_in * width + width + (depth - 1) * (width * width + width)
    return hidden + width * n_out + n_out + cam_layers * CAM_GRID[0] * CAM_GRID[1] * 2


def _solve_width(budget: int, count: Callable[[int], int]) -> int:
    """Largest width whose ``count(width)`` fits the budget; InputError when even MIN_WIDTH does not."""
    if count(MIN_WIDTH) > budget:
        raise InputError(f"--params {budget} is too small for this model (needs at least {count(MIN_WIDTH)})")
    lo, hi = MIN_WIDTH, MAX_WIDTH
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _siren(budget: int, width: int, height: int, channels: int, cam: bool) -> ModelPlan:
    depth = 3
    w = _solve_width(budget, lambda k: mlp_params(2, k, depth, channels))
    enc = {"otype": "Identity", "scale": 2.0, "offset": -1.0}
    net = {
        "otype": "SIREN",
        "n_neurons": w,
        "n_hidden_layers": depth,
        "w0": 30.0,
        "output_activation": "None",
    }
    return ModelPlan("siren", enc, net, mlp_params(2, w, depth, channels), lr=1.5e-3, batch_size=16384)


def _relu_net(width: int, depth: int, cam: bool) -> dict[str, Any]:
    """The ReLU MLP with a sigmoid output of the FFN and hash-grid models, with CAM when asked."""
    net: dict[str, Any] = {
        "otype": "MLP",
        "n_neurons": width,
        "n_hidden_layers": depth,
        "activation": "ReLU",
        "output_activation": "Sigmoid",
    }
    if cam:
        net["cam"] = {"grid_shape": list(CAM_GRID), "channels": 1}
    return net


def _ffn(budget: int, width: int, height: int, channels: int, cam: bool) -> ModelPlan:
    depth, n_freq = 3, 128
    layers = depth if cam else 0
    w = _solve_width(budget, lambda k: mlp_params(2 * n_freq, k, depth, channels, layers))
    enc = {"otype": "RandomFourier", "n_frequencies": n_freq, "sigma": 10.0}
    net = _relu_net(w, depth, cam)
    name = "cam-ffn" if cam else "ffn"
    return ModelPlan(
        name, enc, net, mlp_params(2 * n_freq, w, depth, channels, layers), lr=3e-3, batch_size=16384
    )


def hashgrid_config(width: int, height: int, log2_size: int, n_levels: int = 8) -> dict[str, Any]:
    """Instant-NGP's level spacing from 16 vertices to the image's long side."""
    n_min, n_max = 16, max(width, height, 17)
    scale = math.exp((math.log(n_max) - math.log(n_min)) / (n_levels - 1))
    return {
        "otype": "HashGrid",
        "n_levels": n_levels,
        "n_features_per_level": 2,
        "log2_hashmap_size": log2_size,
        "base_resolution": n_min,
        "per_level_scale": round(scale, 6),
        "interpolation": "Linear",
    }


def _hashgrid(budget: int, width: int, height: int, channels: int, cam: bool) -> ModelPlan:
    depth, n_levels = 2, 8
    layers = depth if cam else 0
    n_in = n_levels * 2
    smallest = None
    for log2_size in range(22, 5, -1):  # the largest table whose grid still leaves room for a 32-wide MLP
        enc = hashgrid_config(width, height, log2_size, n_levels)
        grid = HashGridSpec.from_config(enc, 2).n_params
        rest = budget - grid
        smallest = grid + mlp_params(n_in, MIN_WIDTH, depth, channels, layers)
        if rest >= mlp_params(n_in, 32, depth, channels, layers):
            w = _solve_width(rest, lambda k: mlp_params(n_in, k, depth, channels, layers))
            net = _relu_net(w, depth, cam)
            total = grid + mlp_params(n_in, w, depth, channels, layers)
            return ModelPlan(
                "cam-hashgrid" if cam else "hashgrid", enc, net, total, lr=2e-2, batch_size=16384
            )
    raise InputError(f"--params {budget} is too small for a hash grid (needs at least {smallest})")


MODELS: dict[str, Callable[[int, int, int, int], ModelPlan]] = {
    "siren": lambda b, w, h, c: _siren(b, w, h, c, cam=False),
    "ffn": lambda b, w, h, c: _ffn(b, w, h, c, cam=False),
    "cam-ffn": lambda b, w, h, c: _ffn(b, w, h, c, cam=True),
    "hashgrid": lambda b, w, h, c: _hashgrid(b, w, h, c, cam=False),
    "cam-hashgrid": lambda b, w, h, c: _hashgrid(b, w, h, c, cam=True),
}


def plan_model(name: str, budget: int, width: int, height: int, channels: int) -> ModelPlan:
    """Size the named architecture to ``budget`` learned parameters for a W x H x C image."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    return MODELS[name](budget, width, height, channels)

"""Multiresolution hash grid (Instant-NGP) in plain PyTorch, following tiny-cuda-nn's rules exactly.

This is the reference twin of the GPU kernel (`fieldpress.cuda.hashgrid`) and the CPU path.
The rules, checked against NVlabs/tiny-cuda-nn (`include/tiny-cuda-nn/encodings/grid.h`,
`include/tiny-cuda-nn/common_device.h`), so that a tcnn config and its flat ``params`` vector
load here and give the same outputs:

* level scale ``s_l = exp2(l * log2(per_level_scale)) * base_resolution - 1`` (float32 math) and
  resolution ``r_l = ceil(s_l) + 1`` (vertices per axis);
* entries per level ``min(next_multiple(r_l**d, 8), 2**log2_hashmap_size)`` for hash grids
  (dense grids keep ``next_multiple(r_l**d, 8)``, tiled grids cap at ``base_resolution**d``);
  offsets are the running sum;
* a level is hashed when it is a hash grid and its table is smaller than ``r_l**d``;
* position ``p = fma(s_l, x, 0.5)``, corner ``floor(p)``, fraction ``p - floor(p)`` (Smoothstep
  applies ``3t^2 - 2t^3``; Nearest takes the floor corner without interpolation);
* hashed index ``XOR_k (c_k * prime_k)`` in uint32 with primes 1, 2654435761, 805459861, ...;
  dense index ``sum_k c_k * r_l**k`` (x fastest); then always ``index % entries``;
* corner ``c`` uses bit ``k`` of ``c`` for dimension ``k``; weight ``prod_k (frac_k or 1-frac_k)``;
* parameters ``params[(offsets[l] + index) * F + f]``; output column ``l * F + f``;
* initialisation ``U(-1e-4, 1e-4)``.
Inputs are expected in [0, 1] and, as in tcnn, are not clamped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["HashGridSpec", "hashgrid_ref", "init_hashgrid_params", "PRIMES", "GRID_TYPES"]

# tcnn's coherent_prime_hash factors (dimension k uses PRIMES[k]).
PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
# tcnn's MAX_BASES: the largest resolution whose dense stride fits in uint32, per dimension count.
MAX_BASES = (0x0, 0xFFFFFFFF, 0xFFFF, 0x659, 0xFF, 0x54, 0x28, 0x17, 0xF, 0xB, 0x9)
UINT32_MASK = 0xFFFFFFFF
INTERPOLATIONS = ("Nearest", "Linear", "Smoothstep")
GRID_TYPES = {"HashGrid": "Hash", "DenseGrid": "Dense", "TiledGrid": "Tiled"}
INIT_RANGE = 1e-4
ALIGNMENT = 8

# tcnn's defaults (encodings/grid.h factory).
DEFAULTS: dict[str, Any] = {
    "n_levels": 16,
    "n_features_per_level": 2,
    "log2_hashmap_size": 19,
    "base_resolution": 16,
    "per_level_scale": 2.0,
    "interpolation": "Linear",
}


def _next_multiple(value: int, divisor: int) -> int:
    return (value + divisor - 1) // divisor * divisor


def _grid_type(config: Mapping[str, Any]) -> str:
    otype = config.get("otype", "HashGrid")
    if otype == "Grid":
        kind = config.get("type", "Hash")
        if kind not in ("Hash", "Dense", "Tiled"):
            raise ValueError(f"grid 'type' must be Hash, Dense or Tiled, got {kind!r}")
        return str(kind)
    if otype not in GRID_TYPES:
        raise ValueError(f"not a grid encoding otype: {otype!r}")
    return GRID_TYPES[otype]


@dataclass(frozen=True)
class HashGridSpec:
    """Level table of a tcnn grid encoding: everything the kernels need, nothing learned.

    ``offsets[l]`` is the first table entry of level ``l`` and ``sizes[l]`` its entry count
    (both in entries, not floats); ``scales[l]`` is tcnn's float32 ``grid_scale``.
    """

    n_dims: int
    n_levels: int
    n_features_per_level: int
    resolutions: tuple[int, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    hashed: tuple[bool, ...]
    interpolation: str = "Linear"
    scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = self.n_levels
        if not (len(self.resolutions) == len(self.offsets) == len(self.sizes) == len(self.hashed) == n):
            raise ValueError("resolutions, offsets, sizes and hashed need one entry per level")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if not self.scales:  # derive tcnn's scale from the resolution when only that was given
            object.__setattr__(self, "scales", tuple(float(r - 1) for r in self.resolutions))
        if len(self.scales) != n:
            raise ValueError("scales needs one entry per level")

    @property
    def n_entries(self) -> int:
        """Table entries over all levels (tcnn's ``offset_table[n_levels]``)."""
        return self.offsets[-1] + self.sizes[-1] if self.n_levels else 0

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return self.n_entries * self.n_features_per_level

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    @classmethod
    def from_config(cls, config: Mapping[str, Any], n_dims: int) -> HashGridSpec:
        """Build the level table from a tcnn encoding config (HashGrid, DenseGrid, TiledGrid, Grid)."""
        cfg = {**DEFAULTS, **dict(config)}
        grid_type = _grid_type(cfg)
        f = int(cfg["n_features_per_level"])
        if f not in (1, 2, 4, 8):
            raise ValueError(f"n_features_per_level must be 1, 2, 4 or 8, got {f}")
        n_levels = int(cfg["n_levels"])
        if "n_features" in config:  # tcnn lets n_features set the level count
            n_levels = -(-int(config["n_features"]) // f)
        if n_levels < 1:
            raise ValueError("n_levels must be at least 1")
        if not 1 <= n_dims <= len(PRIMES):
            raise ValueError(f"grid encodings support 1 to {len(PRIMES)} input dimensions, got {n_dims}")
        log2_size = int(cfg["log2_hashmap_size"])
        if not 3 <= log2_size <= 31:
            raise ValueError(f"log2_hashmap_size must be in 3..31, got {log2_size}")
        base = int(cfg["base_resolution"])
        if base < 1:
            raise ValueError("base_resolution must be positive")
        per_level_scale = float(cfg["per_level_scale"])
        if per_level_scale <= 0:
            raise ValueError("per_level_scale must be positive")
        interpolation = str(cfg["interpolation"])
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")

        f32 = np.float32
        log2_scale = f32(np.log2(f32(per_level_scale)))
        max_params = UINT32_MASK // 2
        scales, resolutions, offsets, sizes, hashed = [], [], [], [], []
        offset = 0
        for level in range(n_levels):
            scale = f32(f32(np.exp2(f32(level) * log2_scale)) * f32(base)) - f32(1.0)
            res = int(math.ceil(float(scale))) + 1
            if float(res) ** n_dims > float(f32(max_params)):
                size = max_params
            else:
                size = res**n_dims
            size = _next_multiple(size, ALIGNMENT)
            if grid_type == "Hash":
                size = min(size, 1 << log2_size)
            elif grid_type == "Tiled":
                size = min(size, base**n_dims)
            stride = res**n_dims if res <= MAX_BASES[n_dims] else UINT32_MASK
            scales.append(float(scale))
            resolutions.append(res)
            offsets.append(offset)
            sizes.append(size)
            hashed.append(grid_type == "Hash" and size < stride)
            offset += size
        return cls(
            n_dims=n_dims,
            n_levels=n_levels,
            n_features_per_level=f,
            resolutions=tuple(resolutions),
            offsets=tuple(offsets),
            sizes=tuple(sizes),
            hashed=tuple(hashed),
            interpolation=interpolation,
            scales=tuple(scales),
        )


def init_hashgrid_params(spec: HashGridSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh flat parameter vector, uniform in [-1e-4, 1e-4] like tcnn."""
    params = torch.empty(spec.n_params, dtype=torch.float32)
    return params.uniform_(-INIT_RANGE, INIT_RANGE, generator=generator)


def _corner_bits(n_dims: int, device: torch.device) -> torch.Tensor:
    """(2**d, d) int64: bit k of corner c, the order tcnn iterates corners in."""
    c = torch.arange(1 << n_dims, device=device)
    return torch.stack([(c >> k) & 1 for k in range(n_dims)], dim=1)


def _level_indices(corners: torch.Tensor, spec: HashGridSpec) -> torch.Tensor:
    """Table indices within each level. corners: (N, L, C, d) int64 in uint32 range -> (N, L, C)."""
    device = corners.device
    d = spec.n_dims
    hashed = torch.tensor(spec.hashed, device=device)
    sizes = torch.tensor(spec.sizes, dtype=torch.int64, device=device)
    res = torch.tensor(spec.resolutions, dtype=torch.int64, device=device)

    hashed_idx = torch.zeros(corners.shape[:-1], dtype=torch.int64, device=device)
    for k in range(d):  # int64 products wrap; their low 32 bits are the uint32 product
        hashed_idx ^= (corners[..., k] * PRIMES[k]) & UINT32_MASK

    dense_idx = torch.zeros_like(hashed_idx)
    stride = torch.ones_like(res)
    for k in range(d):
        dense_idx = (dense_idx + corners[..., k] * stride[None, :, None]) & UINT32_MASK
        stride = stride * res
    overflow = torch.tensor([r > MAX_BASES[d] for r in spec.resolutions], device=device)
    dense_idx = torch.where(overflow[None, :, None], torch.zeros_like(dense_idx), dense_idx)

    idx = torch.where(hashed[None, :, None], hashed_idx, dense_idx)
    return idx % sizes[None, :, None]


def hashgrid_ref(x: torch.Tensor, params: torch.Tensor, spec: HashGridSpec) -> torch.Tensor:
    """Encode points ``x`` (N, d) in [0, 1] with the flat ``params``: returns (N, L*F).

    Differentiable in ``params`` and in ``x`` (through the interpolation weights).
    """
    if x.dim() != 2 or x.shape[1] != spec.n_dims:
        raise ValueError(f"x must be (N, {spec.n_dims}), got {tuple(x.shape)}")
    if params.dim() != 1 or params.numel() != spec.n_params:
        raise ValueError(f"params must be a flat vector of {spec.n_params}, got {tuple(params.shape)}")
    n, d, f, n_levels = x.shape[0], spec.n_dims, spec.n_features_per_level, spec.n_levels
    device = x.device
    scales = torch.tensor(spec.scales, dtype=torch.float64, device=device)
    # fmaf(scale, x, 0.5f): the float32 product is exact in float64, so one rounding to float32.
    pos = (x.to(torch.float64)[:, None, :] * scales[None, :, None] + 0.5).to(torch.float32)  # (N, L, d)
    floor = torch.floor(pos)
    frac = pos - floor
    base = floor.to(torch.int64) & UINT32_MASK
    offsets = torch.tensor(spec.offsets, dtype=torch.int64, device=device)
    table = params.view(-1, f)

    if spec.interpolation == "Nearest":
        idx = _level_indices(base[:, :, None, :], spec)[..., 0] + offsets[None, :]
        return table[idx].reshape(n, n_levels * f)

    if spec.interpolation == "Smoothstep":
        frac = frac * frac * (3.0 - 2.0 * frac)
    bits = _corner_bits(d, device)  # (C, d)
    corners = (base[:, :, None, :] + bits[None, None]) & UINT32_MASK  # (N, L, C, d)
    idx = _level_indices(corners, spec) + offsets[None, :, None]  # (N, L, C)
    weights = torch.where(bits[None, None].bool(), frac[:, :, None, :], 1.0 - frac[:, :, None, :]).prod(-1)
    values = table[idx]  # (N, L, C, F)
    out = (weights.to(values.dtype)[..., None] * values).sum(dim=2)  # (N, L, F)
    return out.reshape(n, n_levels * f)

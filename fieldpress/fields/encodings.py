"""Input encodings built from tiny-cuda-nn style config dicts.

``Encoding(config, n_input_dims)`` returns a module with ``n_output_dims`` and ``forward(x)``
(x: (N, n_input_dims) in [0, 1]). The ``otype`` picks the class from :data:`ENCODINGS`:

* ``HashGrid`` / ``DenseGrid`` / ``TiledGrid`` / ``Grid``: tcnn's multiresolution grids, exact layout
  (one flat ``params`` vector, so a tcnn state dict loads as is); ``DenseGrid`` with one level is the
  learned positional grid. Backed by :func:`fieldpress.cuda.hashgrid`.
* ``Frequency``: NeRF-style ``sin/cos(2^k * pi * x)`` in tcnn's output order.
* ``RandomFourier``: Gaussian random Fourier features ``[cos(2 pi B x), sin(2 pi B x)]``,
  ``B ~ N(0, sigma^2)`` (Tancik et al. 2020); not a tcnn otype.
* ``Identity``.
``backend="tcnn"`` builds the real ``tinycudann.Encoding`` (CUDA only); ``"auto"`` uses it when it
imports on a CUDA machine and the otype is tcnn's, else ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fieldpress.cuda.hashgrid_ref import GRID_TYPES, HashGridSpec, hashgrid_ref, init_hashgrid_params
from fieldpress.errors import InputError

__all__ = [
    "ENCODINGS",
    "Encoding",
    "FrequencyEncoding",
    "GridEncoding",
    "IdentityEncoding",
    "RandomFourierEncoding",
    "register_encoding",
    "tcnn_available",
]

ENCODINGS: dict[str, Callable[..., nn.Module]] = {}
TCNN_OTYPES = {"HashGrid", "DenseGrid", "TiledGrid", "Grid", "Frequency", "Identity"}


def register_encoding(*otypes: str) -> Callable[[type], type]:
    """Class decorator: make an encoding buildable by ``Encoding({"otype": name, ...})``."""

    def wrap(cls: type) -> type:
        for name in otypes:
            ENCODINGS[name] = cls
        return cls

    return wrap


def _hashgrid_op() -> Callable[[torch.Tensor, torch.Tensor, HashGridSpec], torch.Tensor]:
    """The kernels' dispatch (Triton on CUDA, reference on CPU) when present, else the reference."""
    try:
        from fieldpress.cuda import hashgrid
    except ImportError:
        return hashgrid_ref
    return hashgrid


@register_encoding("HashGrid", "DenseGrid", "TiledGrid", "Grid")
class GridEncoding(nn.Module):
    """tcnn's multiresolution grid encoding: (N, d) in [0, 1] -> (N, n_levels * F)."""

    def __init__(self, config: Mapping[str, Any], n_input_dims: int, seed: int = 1337) -> None:
        super().__init__()
        self.config = dict(config)
        self.spec = HashGridSpec.from_config(config, n_input_dims)
        self.n_input_dims = n_input_dims
        self.n_output_dims = self.spec.n_output_dims
        gen = torch.Generator().manual_seed(seed)
        self.params = nn.Parameter(init_hashgrid_params(self.spec, gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _hashgrid_op()(x, self.params, self.spec)

    def level_views(self) -> list[torch.Tensor]:
        """The table of each level as a (sizes[l], F) view of ``params``."""
        f = self.spec.n_features_per_level
        table = self.params.view(-1, f)
        return [table[o : o + s] for o, s in zip(self.spec.offsets, self.spec.sizes)]


@register_encoding("Frequency")
class FrequencyEncoding(nn.Module):
    """NeRF positional encoding in tcnn's order: per dim, per octave k, [sin, cos](2^k pi x)."""

    def __init__(self, config: Mapping[str, Any], n_input_dims: int, seed: int = 1337) -> None:
        super().__init__()
        self.config = dict(config)
        self.n_frequencies = int(config.get("n_frequencies", 12))
        if self.n_frequencies < 1:
            raise ValueError("n_frequencies must be at least 1")
        self.n_input_dims = n_input_dims
        self.n_output_dims = n_input_dims * self.n_frequencies * 2
        freqs = (2.0 ** torch.arange(self.n_frequencies, dtype=torch.float32)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arg = x[..., :, None] * self.freqs  # (N, d, K)
        out = torch.stack([torch.sin(arg), torch.cos(arg)], dim=-1)  # (N, d, K, 2)
        return out.reshape(x.shape[0], self.n_output_dims)


@register_encoding("RandomFourier")
class RandomFourierEncoding(nn.Module):
    """Gaussian random Fourier features: [cos(2 pi B x), sin(2 pi B x)], B (M, d) ~ N(0, sigma^2).

    ``B`` is a buffer drawn from ``seed`` (kept in the state dict, so a decoder needs no RNG).
    """

    def __init__(self, config: Mapping[str, Any], n_input_dims: int, seed: int = 1337) -> None:
        super().__init__()
        self.config = dict(config)
        self.n_frequencies = int(config.get("n_frequencies", 256))
        self.sigma = float(config.get("sigma", 10.0))
        if self.n_frequencies < 1 or self.sigma <= 0:
            raise ValueError("RandomFourier needs n_frequencies >= 1 and sigma > 0")
        gen = torch.Generator().manual_seed(seed)
        b = torch.randn(self.n_frequencies, n_input_dims, generator=gen) * self.sigma
        self.register_buffer("B", b)
        self.n_input_dims = n_input_dims
        self.n_output_dims = 2 * self.n_frequencies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arg = (2.0 * math.pi) * (x @ self.B.t())
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


@register_encoding("Identity")
class IdentityEncoding(nn.Module):
    """Pass-through (tcnn's Identity with scale 1, offset 0 by default)."""

    def __init__(self, config: Mapping[str, Any], n_input_dims: int, seed: int = 1337) -> None:
        super().__init__()
        self.config = dict(config)
        self.scale = float(config.get("scale", 1.0))
        self.offset = float(config.get("offset", 0.0))
        self.n_input_dims = self.n_output_dims = n_input_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


def tcnn_available() -> bool:
    """True when tinycudann imports (it needs a CUDA GPU at import time)."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # noqa: BLE001 - tcnn raises EnvironmentError/ImportError/RuntimeError
        return False
    return True


def _tcnn_encoding(config: Mapping[str, Any], n_input_dims: int, seed: int) -> nn.Module:
    """The real ``tinycudann.Encoding`` in float32; its one parameter is also named ``params``, with the
    same flat layout for grids, so state dicts move between the two backends unchanged."""
    import tinycudann as tcnn

    return tcnn.Encoding(n_input_dims, dict(config), seed=seed, dtype=torch.float32)


def Encoding(  # noqa: N802 - named like tcnn's constructor
    config: Mapping[str, Any], n_input_dims: int, *, seed: int = 1337, backend: str = "torch"
) -> nn.Module:
    """Build an encoding from a tcnn-style config dict; see the module docstring."""
    otype = str(config.get("otype", ""))
    if backend not in ("torch", "tcnn", "auto"):
        raise ValueError(f"backend must be torch, tcnn or auto, got {backend!r}")
    use_tcnn = backend == "tcnn" or (backend == "auto" and otype in TCNN_OTYPES and tcnn_available())
    if use_tcnn:
        if not tcnn_available():
            raise InputError("backend 'tcnn' needs tinycudann and a CUDA GPU")
        return _tcnn_encoding(config, n_input_dims, seed)
    if otype not in ENCODINGS:
        raise ValueError(f"unknown encoding otype {otype!r}; known: {', '.join(sorted(ENCODINGS))}")
    return ENCODINGS[otype](config, n_input_dims, seed=seed)


def is_grid_config(config: Mapping[str, Any]) -> bool:
    """True for the tcnn grid otypes (HashGrid, DenseGrid, TiledGrid, Grid)."""
    return config.get("otype") in GRID_TYPES or config.get("otype") == "Grid"

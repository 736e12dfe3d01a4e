"""NeuralGS's neural field: one small tanh MLP per cluster mapping a Gaussian's position (with a sin/cos
positional encoding) to its other attributes, with quantized weights and a trained rate.

Every weight tensor is stored as integers `q = clamp(round(w / step), -127, 127)` with a power-of-two
step per tensor; training sees a quantization proxy of `w / step` (soft-round + noise, then
straight-through, `fieldpress.codec.proxies`) and a Laplace rate per (tensor, cluster)
(`fieldpress.codec.entropy_models.FactorizedLaplace`), whose integer tables the file's range coder uses.
The decoder evaluates the integer weights in float64 so every machine and thread count decodes alike.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.codec import proxies
from fieldpress.codec.entropy_models import FactorizedLaplace
from fieldpress.errors import FormatError, InputError

QMAX = 127  # integer weights lie in [-QMAX, QMAX]: inside the range coder's residual alphabet
MAX_CLUSTERS = 4096
MAX_HIDDEN = 512
MAX_LAYERS = 8
MAX_FREQUENCIES = 16


@dataclass(frozen=True)
class FieldConfig:
    """The shape of the per-cluster MLPs and their quantization; serialised into the file header."""

    clusters: int = 8
    hidden: int = 32
    layers: int = 3  # hidden layers (the paper: 5 layers in all, hidden 128)
    frequencies: int = 10  # positional-encoding levels (the paper: 10)
    weight_shift: int = 6  # weight step 2**-shift (each tensor may get a coarser one at init)
    out_dims: int = 56  # 1 opacity + 3 scales + 4 quaternion + 3 DC + 3 x SH-rest coefficients (SH 3: 56)

    def validate(self) -> None:
        """InputError naming the first out-of-range field."""
        checks = {"clusters": (1, MAX_CLUSTERS), "hidden": (2, MAX_HIDDEN), "layers": (1, MAX_LAYERS),
                  "frequencies": (0, MAX_FREQUENCIES), "weight_shift": (0, 16), "out_dims": (11, 56)}
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise InputError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")

    @property
    def in_dims(self) -> int:
        return 3 + 6 * self.frequencies

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of each Linear layer, input to output."""
        dims = [self.in_dims] + [self.hidden] * self.layers + [self.out_dims]
        return list(zip(dims[:-1], dims[1:]))

    def params_per_cluster(self) -> int:
        return sum(i * o + o for i, o in self.layer_shapes())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> FieldConfig:
        """The config a header holds (FormatError when malformed)."""
        if not isinstance(d, dict):
            raise FormatError("neuralgs header lacks its field config")
        try:
            cfg = cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})
            cfg.validate()
        except (KeyError, TypeError, InputError) as exc:
            raise FormatError(f"bad neuralgs field config in header: {exc}") from None
        return cfg


def encode_positions_pe(x: Tensor, frequencies: int) -> Tensor:
    """[x, sin(2^l pi x), cos(2^l pi x)] for l < frequencies; x (N, 3) in [-1, 1]."""
    if frequencies == 0:
        return x
    scales = (2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)) * math.pi
    arg = (x[:, None, :] * scales[None, :, None]).reshape(x.shape[0], -1)
    return torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=1)


def tensor_names(config: FieldConfig) -> list[str]:
    """The stored tensors in canonical order: w0, b0, w1, b1, ..."""
    return [f"{kind}{i}" for i in range(len(config.layer_shapes())) for kind in ("w", "b")]


def tensor_shape(config: FieldConfig, name: str) -> tuple[int, ...]:
    """(clusters, fan_in, fan_out) of a weight, (clusters, fan_out) of a bias."""
    fan_in, fan_out = config.layer_shapes()[int(name[1:])]
    k = config.clusters
    return (k, fan_in, fan_out) if name[0] == "w" else (k, fan_out)


def run_mlps(x: Tensor, labels: Tensor, tensors: dict[str, Tensor], config: FieldConfig) -> Tensor:
    """Each cluster's MLP on the encoded positions of its Gaussians: (N, out_dims), in x's dtype."""
    pe = encode_positions_pe(x, config.frequencies)
    out = pe.new_zeros(x.shape[0], config.out_dims)
    n_layers = len(config.layer_shapes())
    for k in range(config.clusters):
        idx = torch.nonzero(labels == k).reshape(-1)
        if idx.numel() == 0:
            continue
        h = pe.index_select(0, idx)
        for i in range(n_layers):
            h = h @ tensors[f"w{i}"][k] + tensors[f"b{i}"][k]
            if i < n_layers - 1:
                h = torch.tanh(h)
        out = out.index_copy(0, idx, h)
    return out


class ClusterFields(nn.Module):
    """K MLPs (stacked per layer) with per-tensor steps and a Laplace rate model per (tensor, cluster)."""

    def __init__(self, config: FieldConfig, seed: int = 0) -> None:
        super().__init__()
        config.validate()
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        self.shifts: dict[str, int] = {}
        self.rate_models = nn.ModuleDict()
        for name in tensor_names(config):
            shape = tensor_shape(config, name)
            fan_in = config.layer_shapes()[int(name[1:])][0]
            bound = math.sqrt(1.0 / fan_in) if name[0] == "w" else 0.0
            value = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            self.register_parameter(name, nn.Parameter(value))
            # the coarsest step that still leaves 2x headroom over the initial weights
            fits = int(math.floor(math.log2(QMAX / max(2.0 * bound, 1e-6))))
            self.shifts[name] = max(0, min(config.weight_shift, fits))
            self.rate_models[name] = FactorizedLaplace(config.clusters, init_log_scale=1.5)
        self._cache: tuple[int, dict[str, Tensor]] | None = None
        self.straight_through = False  # True: train on the exact rounded weights (the fine-tune)

    def set_output_bias(self, value: Tensor) -> None:
        """Start each cluster's output bias at `value` (K, out_dims), e.g. its members' mean attributes,
        with the finest step that still holds it (so fitting starts from the k-means centroids)."""
        name = f"b{len(self.config.layer_shapes()) - 1}"
        with torch.no_grad():
            getattr(self, name).copy_(value.to(torch.float32))
        reach = float(value.abs().max()) if value.numel() else 0.0
        fits = int(math.floor(math.log2(QMAX / max(1.25 * reach, 1e-6))))
        self.shifts[name] = max(0, min(self.config.weight_shift, fits))
        self._cache = None

    def step(self, name: str) -> float:
        return 2.0 ** -self.shifts[name]

    def integers(self, info: Any = None) -> dict[str, Tensor]:
        """The weights in integer units, relaxed by the proxy at `info.progress` (hard-rounded
        without info); cached per step so the rate and the loss see the same values."""
        key = -1 if info is None else int(info.global_step)
        if info is not None and self.training and self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        state = proxies.schedule(info.progress) if info is not None and not self.straight_through else None
        out = {}
        for name in tensor_names(self.config):
            scaled = (getattr(self, name) / self.step(name)).clamp(-QMAX, QMAX)
            if state is not None:
                out[name] = proxies.apply(scaled, state)
            elif info is not None:
                out[name] = proxies.straight_through_round(scaled)
            else:
                out[name] = torch.round(scaled)
        if info is not None and self.training:
            self._cache = (key, out)
        return out

    def forward(self, x: Tensor, labels: Tensor, info: Any = None) -> Tensor:
        """Normalised attributes (N, out_dims) of Gaussians at x (N, 3) in [-1, 1]."""
        ints = self.integers(info)
        tensors = {name: q * self.step(name) for name, q in ints.items()}
        return run_mlps(x, labels, tensors, self.config)

    def rate_bits(self, info: Any) -> Tensor:
        """Bits of all weights under the rate models (what the range coder will about spend)."""
        ints = self.integers(info)
        total = torch.zeros(())
        for name, q in ints.items():
            total = total + self.rate_models[name].bits(q)
        return total

    def quantized(self) -> dict[str, np.ndarray]:
        """The integer weights (int64) the file stores."""
        with torch.no_grad():
            return {name: torch.round((getattr(self, name) / self.step(name)).clamp(-QMAX, QMAX))
                    .to(torch.int64).numpy() for name in tensor_names(self.config)}

    def coarsen(self, by: int = 1) -> None:
        """Double every step `by` times (a smaller file after training; weights unchanged)."""
        with torch.no_grad():
            for name, s in self.shifts.items():
                coarser = max(0, s - by)
                # the same weights in integer units shrink by 2**(s - coarser): so do the Laplace scales
                self.rate_models[name].log_scale.sub_((s - coarser) * math.log(2.0))
                self.shifts[name] = coarser


def decode_attributes(x: np.ndarray, labels: np.ndarray, ints: dict[str, np.ndarray],
                      shifts: dict[str, int], config: FieldConfig) -> np.ndarray:
    """The MLPs' normalised outputs (N, out_dims) float32 from integer weights, evaluated in float64."""
    tensors = {name: torch.from_numpy(ints[name].astype(np.float64) * 2.0 ** -shifts[name])
               for name in tensor_names(config)}
    with torch.no_grad():
        out = run_mlps(torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(labels.astype(np.int64)),
                       tensors, config)
    return out.numpy().astype(np.float32)

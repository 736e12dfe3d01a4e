"""What every video INR shares: the config base (serialised into the .fpv header), the model
interface the fitting and decoding code uses (including the side-information hooks), the sin/cos time
embedding, and the solver that picks a width so the stored parameter count lands on ``--size``.

Side information is what a model stores besides its weights (HNeRV's per-frame embeddings; per-group
grids or weights for later models). A model declares it with ``side_info`` (name -> `SideInfo`: the
tensor, its bits, its chunking), receives the stored values back with ``attach_side_info`` (a
`SideView` per name: the dequantized tensor in memory, or the file's chunks read on demand), and says
what one frame needs from it with ``decode_inputs``. The codec stores each entry as chunked quantized
streams, so decoding frames S:E reads only the chunks they touch; no code outside the model module
needs to know which model it holds."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from fieldpress.errors import InputError
from fieldpress.video.models.blocks import ModulationSpec, channel_schedule, output_head


@dataclass(frozen=True)
class VideoModelConfig:
    """Fields common to every model: the frame size (as decoded: the original, unpadded size), the
    frame count the time axis is normalised by, the upsampling strides, activation and modulation."""

    height: int
    width: int
    frames: int
    strides: tuple[int, ...]
    act: str = "gelu"
    modulation: ModulationSpec = ModulationSpec()

    @property
    def stride_product(self) -> int:
        return math.prod(self.strides)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the feature grid the decoder starts from: the padded size / stride product."""
        p = self.stride_product
        return math.ceil(self.height / p), math.ceil(self.width / p)

    @property
    def padded(self) -> tuple[int, int]:
        gh, gw = self.grid
        return gh * self.stride_product, gw * self.stride_product

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["strides"] = list(self.strides)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # noqa: ANN206 - returns the subclass
        if not isinstance(data, dict):
            raise TypeError(f"model config is a {type(data).__name__}, not an object")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        kwargs = {k: _checked(k, v, types[k]) for k, v in data.items() if k in types}
        if isinstance(kwargs.get("modulation"), dict):
            spec = {f.name: str(f.type) for f in dataclasses.fields(ModulationSpec)}
            kwargs["modulation"] = ModulationSpec(**{k: _checked(k, v, spec[k])
                                                     for k, v in kwargs["modulation"].items() if k in spec})
        for side in ("height", "width", "frames"):
            if side in kwargs and not 1 <= kwargs[side] <= MAX_CONFIG_SIDE:
                raise ValueError(f"model config {side} {kwargs[side]} is outside 1..{MAX_CONFIG_SIDE}")
        return cls(**kwargs)


MAX_CONFIG_SIDE = 1 << 20  # frame sides and frame counts a stored config may name


def _checked(key: str, value: Any, kind: str) -> Any:
    """A header value checked against its config field's declared type (TypeError when it is not one)."""
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind.startswith("tuple[int") and isinstance(value, (list, tuple)) \
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        return tuple(value)
    if kind == "ModulationSpec" and isinstance(value, dict):
        return value
    if kind not in ("int", "float", "str", "ModulationSpec") and not kind.startswith("tuple[int"):
        return tuple(value) if isinstance(value, list) else value
    raise TypeError(f"model config {key!r} is not a valid {kind}")


@dataclass(frozen=True)
class SideInfo:
    """A tensor a model stores besides its weights: quantized to `bits` (one scale, or one per channel
    along `axis`) and cut into chunks of `chunk` entries along `chunk_axis`, each its own stream."""

    tensor: torch.Tensor
    bits: int
    chunk: int
    chunk_axis: int = 0
    axis: int | None = None


class SideView(Protocol):
    """Stored side information as a model reads it: `entry(i)` is the slice at index i of the chunk
    axis (float32, dequantized)."""

    def entry(self, index: int) -> torch.Tensor: ...


class TensorView:
    """A `SideView` over a tensor held in memory (the fit's dequantized side information)."""

    def __init__(self, tensor: torch.Tensor, axis: int = 0) -> None:
        self.tensor = tensor
        self.axis = axis

    def entry(self, index: int) -> torch.Tensor:
        return self.tensor.select(self.axis, index)


class VideoINR(nn.Module):
    """Interface of a frame-wise video INR.

    ``forward(batch)`` maps a batch ``{"index": (B,) int64, "t": (B,) float, "frames": uint8 (B,3,H,W)}``
    to frames (B, 3, H, W) in [0, 1] at the original size. ``stored_state()`` is what goes into the
    file (without the submodules named in ``unstored_prefixes``, used only while fitting);
    ``stored_params()`` counts it (``--size``). The side-information hooks are described in the
    module docstring; by default a model stores none.
    """

    name: ClassVar[str]
    config: VideoModelConfig
    loss_name: ClassVar[str] = "fusion6"
    #: submodules used only while fitting: not stored, not pruned or quantized, dropped for decoding
    unstored_prefixes: tuple[str, ...] = ()

    def stored_state(self) -> dict[str, torch.Tensor]:
        unstored = tuple(f"{p}." for p in self.unstored_prefixes)
        return {k: v for k, v in self.state_dict().items() if not (unstored and k.startswith(unstored))}

    def side_info(self, source: Any, device: torch.device, bits: int) -> dict[str, SideInfo]:
        """What this fitted model stores besides its weights (`source`: the clip's frames, as the fit
        saw them; `bits`: the side-information bits asked for). None by default."""
        return {}

    def attach_side_info(self, side: Mapping[str, SideView]) -> None:
        """Decode from now on with the stored side information (as the file holds it) and drop the
        submodules used only for fitting."""
        self.side_views = dict(side)
        for prefix in self.unstored_prefixes:
            setattr(self, prefix, None)

    def decode_inputs(self, index: int) -> dict[str, torch.Tensor]:
        """What the decoder adds to frame `index`'s batch (besides index and t), with a batch axis of 1."""
        return {}

    # -- rate-distortion training (fieldpress.video.rd) of the side information
    def side_channels(self) -> dict[str, int]:
        """Side-information name -> its channel count (axis 1 of the fit's (B, C, ...) values); the RD
        fit gives each channel a Laplace scale. None by default."""
        return {}

    def fit_side(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The side information of this batch's frames as the fit computes it (name -> (B, C, ...)),
        which the RD fit quantizes and hands back to ``forward`` under `side_batch_key(name)`."""
        return {}

    def side_batch_key(self, name: str) -> str:
        """The batch key under which ``forward`` takes side information `name` instead of computing it."""
        return name

    def training_source(self, source: Any) -> Any:
        """The data source the fit trains on: the clip's whole frames by default (HiNeRV: patches)."""
        return source

    def stored_params(self) -> int:
        return sum(int(v.numel()) for v in self.stored_state().values() if v.is_floating_point())

    def crop(self, frames: torch.Tensor) -> torch.Tensor:
        """Drop the padding the strides forced: back to the original height x width."""
        return frames[..., : self.config.height, : self.config.width]


class TimeEmbedding(nn.Module):
    """NeRV's positional encoding of t in [0, 1): [sin(b^i pi t), cos(b^i pi t)], i < levels."""

    def __init__(self, base: float = 1.25, levels: int = 40) -> None:
        super().__init__()
        self.register_buffer("freqs", (base ** torch.arange(levels, dtype=torch.float64) * math.pi).float(),
                             persistent=False)
        self.dim = 2 * levels

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.reshape(-1, 1).float() * self.freqs
        return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)


def frame_time(index: torch.Tensor, frames: int) -> torch.Tensor:
    """Normalised time of frame `index` as NeRV defines it: index / frames (in [0, 1))."""
    return index.float() / float(max(frames, 1))


@dataclass(frozen=True)
class TimeINRConfig(VideoModelConfig):
    """What NeRV and NeRV++ share: the sin/cos time embedding (base, levels), the MLP stem
    (stem_hidden -> fc_dim x h x w) and the channel schedule (reduction, lower_width, expansion)."""

    fc_dim: int = 26
    levels: int = 40
    base: float = 1.25
    stem_hidden: int = 512
    expansion: float = 1.0
    reduction: float = 2.0
    lower_width: int = 96


class TimeINR(VideoINR):
    """NeRV and NeRV++: t -> sin/cos embedding -> ``stem`` reshaped to (fc_dim, h, w) -> upsampling blocks
    (each also given t) -> 1x1 head -> (tanh + 1) / 2, cropped. Configured by a ``TimeINRConfig``;
    subclasses set ``stem``, then call ``build_decoder``."""

    stem: nn.Module
    config: TimeINRConfig

    def __init__(self, config: TimeINRConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = TimeEmbedding(config.base, config.levels)

    def build_decoder(self, make_block: Callable[[int, int, int], nn.Module]) -> None:
        """One block per stride, ``make_block(c_in, c_out, stride)``, over NeRV's width schedule,
        then the 1x1 RGB head."""
        cfg = self.config
        widths = channel_schedule(cfg.fc_dim, len(cfg.strides), cfg.reduction, cfg.lower_width, cfg.expansion)
        blocks, c = [], cfg.fc_dim
        for stride, width in zip(cfg.strides, widths):
            blocks.append(make_block(c, width, stride))
            c = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, 3, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        t = batch["t"] if "t" in batch else frame_time(batch["index"], cfg.frames)
        gh, gw = cfg.grid
        x = self.stem(self.embed(t)).view(-1, cfg.fc_dim, gh, gw)
        for block in self.blocks:
            x = block(x, t)
        return self.crop(output_head(self.head(x)))


C = TypeVar("C", bound=VideoModelConfig)


def count_params(build: Callable[[C], VideoINR], config: C) -> int:
    """Stored parameter count of the model a config builds (built on the CPU: a few ms for these sizes)."""
    with torch.no_grad():
        return build(config).stored_params()


def solve_width(make_config: Callable[[int], C], build: Callable[[C], VideoINR], target: int,
                low: int = 4, high: int = 1 << 14) -> C:
    """The config whose stored parameter count is closest to `target` over the integer width the
    config factory takes (HNeRV's fc_dim balancing; counts grow monotonically with the width).
    Widths grow by doubling from `low`, so no model much larger than the target is ever built."""
    cache: dict[int, int] = {}

    def params(w: int) -> int:
        if w not in cache:
            cache[w] = count_params(build, make_config(w))
        return cache[w]

    if params(low) > target:
        raise InputError(f"--size {target:,} is too small: the smallest model of this shape stores "
                         f"{params(low):,} parameters")
    lo, hi = low, low * 2
    while params(hi) < target:
        if hi >= high:
            raise InputError(f"--size {target:,} is too large for this model")
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if params(mid) <= target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda w: abs(params(w) - target))
    return make_config(best)

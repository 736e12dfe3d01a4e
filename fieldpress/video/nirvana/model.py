"""The NIRVANA network of one group of frames and its quantized reparameterisation.

Paper facts followed (Maiya et al. 2023, Fig. 2 and the abstract): the input is a patch's coordinates,
a few SIREN layers are followed by an upsampling block, the output is that patch for all G frames of
the group, and the weights are kept as quantized integers during training ("decoded" to weights by a
per-tensor step) so that no post-hoc quantization is needed. Choices where the paper is not readable
here (said so in docs/formats/nirvana.md): the MLP output is a (C, p/s, p/s) feature map of the patch;
the upsampling block is a 3x3 conv on that map plus two pixel-in-patch coordinate channels, then
PixelShuffle(s) to (3G, p, p); one step per tensor, fixed for the whole file from the initial weights'
bound (`headroom` x bound / qmax); integers clamped to +-qmax (qmax = 2**(bits-1) - 1, bits <= 8).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from fieldpress.codec import proxies
from fieldpress.codec.entropy_models import laplace_bits
from fieldpress.errors import FormatError

MAX_SIDE = 16384


@dataclass(frozen=True)
class NirvanaConfig:
    """The network of every group (it serializes into the file header)."""

    height: int
    width: int
    group: int = 4          # frames per group (G): the network outputs 3G channels
    patch: int = 8          # patch side p in pixels
    upscale: int = 2        # PixelShuffle factor s of the upsampling block (p % s == 0)
    hidden: int = 64        # SIREN width
    layers: int = 3         # SIREN layers
    features: int = 8       # channels C of the (C, p/s, p/s) feature map the MLP emits
    w0: float = 30.0        # SIREN frequency of the first layer
    bits: int = 8           # integer range of the stored weights: +-(2**(bits-1) - 1)
    headroom: float = 2.5   # step = headroom x initial bound / qmax

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> NirvanaConfig:
        """The config a header holds (FormatError when it is malformed or out of range)."""
        if not isinstance(d, dict) or set(d) - {f.name for f in fields(cls)}:
            raise FormatError("malformed nirvana config in the header")
        try:
            cfg = cls(**d)
            cfg.check()
        except (TypeError, ValueError) as exc:
            raise FormatError(f"bad nirvana config in the header ({exc})") from None
        return cfg

    def check(self) -> None:
        """ValueError when a field is out of range."""
        ints = (self.height, self.width, self.group, self.patch, self.upscale, self.hidden, self.layers,
                self.features, self.bits)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise ValueError("integer fields must be integers")
        if not (1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE):
            raise ValueError(f"frame size {self.width}x{self.height}")
        if not (1 <= self.group <= 64 and 1 <= self.upscale <= 16 and self.patch % self.upscale == 0
                and 1 <= self.patch <= 256 and 1 <= self.hidden <= 1024 and 1 <= self.layers <= 16
                and 1 <= self.features <= 256 and 2 <= self.bits <= 8):
            raise ValueError("network sizes out of range")
        if not (math.isfinite(self.w0) and 0 < self.w0 <= 1000 and math.isfinite(self.headroom)
                and 0 < self.headroom <= 100):
            raise ValueError("w0 or headroom out of range")

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per column and per row (the frame is padded up to whole patches)."""
        return math.ceil(self.height / self.patch), math.ceil(self.width / self.patch)

    def shapes(self) -> list[tuple[int, ...]]:
        """The parameter tensors of one group's network, in storage order."""
        c, cells = self.features, self.patch // self.upscale
        dims = [2] + [self.hidden] * self.layers
        out: list[tuple[int, ...]] = []
        for a, b in zip(dims[:-1], dims[1:]):
            out += [(b, a), (b,)]
        out += [(c * cells * cells, self.hidden), (c * cells * cells,)]
        out += [(3 * self.group * self.upscale**2, c + 2, 3, 3), (3 * self.group * self.upscale**2,)]
        return out

    def bounds(self) -> list[float]:
        """Initial bound per tensor (a layer's weight and bias share it); it also fixes each tensor's
        quantization step. First SIREN layer 1/fan_in, other SIREN layers sqrt(6/fan_in) (SIREN's
        init), the output linear and the conv 1/sqrt(fan_in) (PyTorch's default)."""
        out = []
        for k, shape in enumerate(self.shapes()[::2]):
            fan = math.prod(shape[1:])
            bound = 1.0 / fan if k == 0 else math.sqrt(6.0 / fan) if k < self.layers else 1.0 / math.sqrt(fan)
            out += [bound, bound]
        return out

    def steps(self) -> list[float]:
        """The quantization step of each tensor: headroom x bound / qmax."""
        return [self.headroom * b / self.qmax for b in self.bounds()]

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes())


def patch_coords(cfg: NirvanaConfig) -> Tensor:
    """(N, 2) patch-centre coordinates in [-1, 1] (row, column), patches in raster order."""
    gh, gw = cfg.grid
    ys = (torch.arange(gh, dtype=torch.float32) + 0.5) / gh * 2 - 1
    xs = (torch.arange(gw, dtype=torch.float32) + 0.5) / gw * 2 - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)


def cell_coords(cfg: NirvanaConfig) -> Tensor:
    """(2, p/s, p/s) pixel-in-patch coordinates in [-1, 1] fed to the upsampling block."""
    n = cfg.patch // cfg.upscale
    r = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), 0)


def render(cfg: NirvanaConfig, weights: list[Tensor], coords: Tensor, cells: Tensor) -> Tensor:
    """The group's frames (G, 3, H, W), values around [0, 1], from dequantized `weights`."""
    h = coords
    for i in range(cfg.layers):
        pre = nn.functional.linear(h, weights[2 * i], weights[2 * i + 1])
        h = torch.sin((cfg.w0 if i == 0 else 1.0) * pre)
    n, cell = h.shape[0], cfg.patch // cfg.upscale
    i = 2 * cfg.layers
    fmap = nn.functional.linear(h, weights[i], weights[i + 1]).reshape(n, cfg.features, cell, cell)
    fmap = torch.cat([fmap, cells.expand(n, -1, -1, -1)], 1)
    out = nn.functional.pixel_shuffle(nn.functional.conv2d(fmap, weights[i + 2], weights[i + 3], padding=1),
                                      cfg.upscale)  # (N, 3G, p, p)
    gh, gw = cfg.grid
    p, g = cfg.patch, cfg.group
    out = out.reshape(gh, gw, g, 3, p, p).permute(2, 3, 0, 4, 1, 5).reshape(g, 3, gh * p, gw * p)
    return out[:, :, : cfg.height, : cfg.width] + 0.5


def initial_integers(cfg: NirvanaConfig, generator: torch.Generator) -> list[Tensor]:
    """The first group's starting latents: uniform in +-bound (SIREN-style), in step units."""
    out = []
    for shape, bound, step in zip(cfg.shapes(), cfg.bounds(), cfg.steps()):
        out.append((torch.rand(shape, generator=generator) * 2 - 1) * bound / step)
    return out


class GroupNet(nn.Module):
    """One group's trainable state: latent integers per tensor (in step units), a learned Laplace
    log-scale per tensor for the rate of the residual to `reference` (the previous group's integers,
    or zeros for a key group)."""

    def __init__(self, cfg: NirvanaConfig, start: list[Tensor], reference: list[Tensor],
                 log_scales: Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.latents = nn.ParameterList([nn.Parameter(t.detach().clone().float()) for t in start])
        init = torch.zeros(len(start)) if log_scales is None else log_scales.detach().clone()
        self.log_scales = nn.Parameter(init.float())
        q = cfg.qmax
        self.reference = [r.detach().float() for r in reference]
        self.lo = [torch.clamp(r - 127, min=-q) for r in self.reference]  # residuals stay in the tables'
        self.hi = [torch.clamp(r + 127, max=q) for r in self.reference]   # alphabet [-128, 127]
        self.steps = cfg.steps()
        self.register_buffer("coords", patch_coords(cfg), persistent=False)
        self.register_buffer("cells", cell_coords(cfg), persistent=False)

    def integers(self, state: proxies.ProxyState | None) -> list[Tensor]:
        """The latents through the quantization proxy (`None`: hard rounding), clamped to range."""
        out = []
        for v, lo, hi in zip(self.latents, self.lo, self.hi):
            x = torch.round(v) if state is None else proxies.apply(v, state)
            out.append(torch.maximum(torch.minimum(x, hi), lo))
        return out

    def forward(self, state: proxies.ProxyState | None) -> tuple[Tensor, Tensor]:
        """(frames (G, 3, H, W), differentiable bits of the residuals to the reference)."""
        ints = self.integers(state)
        weights = [x * s for x, s in zip(ints, self.steps)]
        bits = sum(laplace_bits(x - r, torch.zeros_like(x), self.log_scales[i].expand_as(x)).sum()
                   for i, (x, r) in enumerate(zip(ints, self.reference)))
        return render(self.cfg, weights, self.coords, self.cells), bits

    @torch.no_grad()
    def project(self) -> None:
        """Keep the latents inside the clamp range (so a clamped value can still move back)."""
        for v, lo, hi in zip(self.latents, self.lo, self.hi):
            v.copy_(torch.maximum(torch.minimum(v, hi + 0.49), lo - 0.49))

    def hard_integers(self) -> list[Tensor]:
        """The integers the file stores for this group."""
        with torch.no_grad():
            return [x.detach().to(torch.int64) for x in self.integers(None)]


@torch.no_grad()
def decode_group(cfg: NirvanaConfig, integers: list[Tensor]) -> Tensor:
    """A group's frames as the decoder computes them: (G, 3, H, W) float."""
    weights = [x.float() * s for x, s in zip(integers, cfg.steps())]
    return render(cfg, weights, patch_coords(cfg), cell_coords(cfg))

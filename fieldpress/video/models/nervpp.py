"""NeRV++ (Ghorbel & Hamidouche, ICIP 2024): NeRV with richer blocks, following the released code
(``ahmedgh970/NeRV-``, ``models/model_best.py``, ``models/layers.py``).

- Stem: a gated MLP, Linear(2L -> 2 * hidden) split into (x, z), then Linear(hidden -> fc_dim*h*w)
  applied to x * GELU_tanh(z) (no activation after it).
- Block (per stride): 1x1 projection C_in -> C_out; a gated CNN block (Linear C -> 2 * int(8/3 C),
  split into gate g / identity i / conv c, depthwise 5x5 on c, Linear(GELU(g) * [i, c]) -> C,
  residual); the shared NeRV upsampling block (conv 3x3 -> PixelShuffle -> modulation -> SiLU);
  a residual feed-forward (depthwise 3x3 -> 1x1 -> GELU -> 1x1, residual); plus a bilinear x s
  upsampling of the projection as a skip.
- Head 1x1 -> 3 and (tanh + 1) / 2; widths as NeRV (fc_dim * expansion, then max(C // 2, lower_width));
  Fusion6 loss, Adam (0.5, 0.999), lr 5e-4 as NeRV.

Deviations: the paper's figure shows a separable-conv residual block (SCRB) where the code has the
gated CNN block; we follow the code. The modulation slot sits after the PixelShuffle of the
upsampling block (empty by default, as in the paper). Default init is PyTorch's (the code uses
Xavier/trunc-normal). Strides and grid are chosen for the clip and the output is cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fieldpress.video.models.base import TimeINR, TimeINRConfig
from fieldpress.video.models.blocks import DecoderBlock, ModulationSpec


@dataclass(frozen=True)
class NeRVppConfig(TimeINRConfig):
    lower_width: int = 80
    act: str = "silu"


class GatedMLP(nn.Module):
    """gMLP stem: fc2(x * GELU_tanh(z)) with (x, z) = split(fc1(input))."""

    def __init__(self, c_in: int, hidden: int, c_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c_in, 2 * hidden)
        self.fc2 = nn.Linear(hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, z = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * F.gelu(z, approximate="tanh"))


class GatedCNNBlock(nn.Module):
    """Gated CNN block (MambaOut style, no norm, as released): residual around
    fc2(GELU(g) * cat(i, dwconv5x5(c)))."""

    def __init__(self, dim: int, expansion: float = 8 / 3, kernel: int = 5) -> None:
        super().__init__()
        hidden = int(expansion * dim)
        self.split = (hidden, hidden - dim, dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        g, i, c = torch.split(self.fc1(y), self.split, dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(g) * torch.cat((i, c), dim=-1))
        return x + y.permute(0, 3, 1, 2)


class ResidualFFN(nn.Module):
    """dwconv 3x3 -> 1x1 -> GELU -> 1x1, plus the input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Conv2d(dim, dim, 1),
                                 nn.GELU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class NeRVppBlock(nn.Module):
    """proj -> gated CNN -> NeRV upsampling block -> residual FFN, + bilinear skip of proj."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: str, mod: ModulationSpec) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1)
        self.gcnn = GatedCNNBlock(c_out)
        self.up = DecoderBlock(c_out, c_out, stride, 3, act, mod)
        self.ffn = ResidualFFN(c_out)
        self.stride = stride

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        y = self.ffn(self.up(self.gcnn(x), t))
        return y + F.interpolate(x, scale_factor=self.stride, mode="bilinear", align_corners=False)


class NeRVpp(TimeINR):
    """NeRV++: time embedding -> gMLP stem -> NeRV++ blocks -> 1x1 head."""

    name = "nervpp"
    loss_name = "fusion6"

    def __init__(self, config: NeRVppConfig) -> None:
        super().__init__(config)
        gh, gw = config.grid
        self.stem = GatedMLP(self.embed.dim, config.stem_hidden, config.fc_dim * gh * gw)
        self.build_decoder(lambda c_in, c_out, stride: NeRVppBlock(c_in, c_out, stride, config.act,
                                                                   config.modulation))


def nervpp_width_config(base: dict, fc_dim: int) -> NeRVppConfig:
    """NeRV++ scaled by one width, in the released bunny-S proportions (fc 26 : lower 80 : stem 512)."""
    lower = max(8, round(fc_dim * 80 / 26))
    stem = min(512, max(32, round(fc_dim * 512 / 26)))
    return NeRVppConfig(**{**base, "fc_dim": fc_dim, "lower_width": lower, "stem_hidden": stem})

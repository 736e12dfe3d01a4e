"""HNeRV (Chen et al., CVPR 2023): a ConvNeXt encoder turns each frame into a tiny embedding
(``embed_dim`` x H/P x W/P); a NeRV-style decoder turns the embedding back into the frame.

Only the decoder and the per-frame embeddings are stored; the encoder is dropped after fitting. The
embeddings are the model's side information ``embedding`` (frames, embed_dim, gh, gw), stored at
``--embed-bits`` (one scale) in chunks of ``EMBED_CHUNK`` frames.
Decoder: 1x1 conv (embed_dim -> fc_dim) + GELU, then blocks with kernels min(1 + 2i, 5) = 1,3,5,5,5,
widths ``max(round(C / 1.2), 12)`` from the first block on, a 3x3 head and (tanh + 1) / 2. ``fc_dim`` is
solved so that decoder + embeddings hit ``--size`` (the paper's parameter balancing). Trained with
L2, Adam lr 1e-3, 10% warmup + cosine, batch 2.

Encoder (as in the released code): per stage a strided conv (kernel = stride, the first followed by a
channels-last LayerNorm, the later ones preceded by one) and one ConvNeXt block (depthwise 7x7, LN,
Linear 4x, GELU, Linear, layer scale, residual); widths ``enc_dim`` except the last, ``embed_dim``.
Deviations: encoder and decoder strides are the ones chosen for the clip (the paper hand-picks them
per dataset), frames are replicate-padded to the stride product and the output is cropped back, and
the ConvNeXt blocks have no drop-path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fieldpress.video.models.base import SideInfo, SideView, VideoINR, VideoModelConfig, frame_time
from fieldpress.video.models.blocks import (
    DecoderBlock,
    activation,
    channel_schedule,
    output_head,
    pad_to_multiple,
)

EMBED_CHUNK = 8
"""Frames per stored embedding chunk (the unit of random access)."""


@dataclass(frozen=True)
class HNeRVConfig(VideoModelConfig):
    fc_dim: int = 68
    embed_dim: int = 16
    enc_dim: int = 64
    kernel_first: int = 1
    kernel_max: int = 5
    reduction: float = 1.2
    lower_width: int = 12

    @property
    def kernels(self) -> tuple[int, ...]:
        return tuple(min(self.kernel_first + 2 * i, self.kernel_max) for i in range(len(self.strides)))

    @property
    def embed_shape(self) -> tuple[int, int, int]:
        gh, gw = self.grid
        return self.embed_dim, gh, gw


class ChannelsLastNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LN -> Linear(4C) -> GELU -> Linear(C) -> layer scale -> residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtEncoder(nn.Module):
    """Frames (B, 3, Hp, Wp) -> embeddings (B, embed_dim, Hp/P, Wp/P); one stage per stride."""

    def __init__(self, strides: tuple[int, ...], enc_dim: int, embed_dim: int) -> None:
        super().__init__()
        dims = [enc_dim] * (len(strides) - 1) + [embed_dim]
        stages, c = [], 3
        for i, (stride, dim) in enumerate(zip(strides, dims)):
            down = ([nn.Conv2d(c, dim, stride, stride=stride), ChannelsLastNorm(dim)] if i == 0
                    else [ChannelsLastNorm(c), nn.Conv2d(c, dim, stride, stride=stride)])
            stages.append(nn.Sequential(*down, ConvNeXtBlock(dim)))
            c = dim
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class HNeRV(VideoINR):
    """Encoder (fitting only) + stored embeddings + decoder."""

    name = "hnerv"
    loss_name = "l2"

    #: the encoder is dropped after fitting: pruning and QAT act on the stored decoder only
    unstored_prefixes: tuple[str, ...] = ("encoder",)

    def __init__(self, config: HNeRVConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder: ConvNeXtEncoder | None = ConvNeXtEncoder(config.strides, config.enc_dim,
                                                               config.embed_dim)
        self.stem = nn.Sequential(nn.Conv2d(config.embed_dim, config.fc_dim, 1), activation(config.act))
        widths = channel_schedule(config.fc_dim, len(config.strides), config.reduction, config.lower_width,
                                  reduce_first=True)
        blocks, c = [], config.fc_dim
        for stride, kernel, width in zip(config.strides, config.kernels, widths):
            blocks.append(DecoderBlock(c, width, stride, kernel, config.act, config.modulation))
            c = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, 3, 3, padding=1)

    # -- encoder side (fitting)
    def encode(self, frames_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, 3, H, W) -> embeddings (B, embed_dim, gh, gw)."""
        if self.encoder is None:
            raise RuntimeError("this HNeRV has no encoder (it was loaded from a file)")
        x = pad_to_multiple(frames_uint8.float() / 255.0, self.config.stride_product)
        return self.encoder(x)

    # -- side information: the per-frame embeddings
    @torch.no_grad()
    def side_info(self, source: Any, device: torch.device, bits: int) -> dict[str, SideInfo]:
        """The encoder's embedding of every frame of `source`, one frame at a time."""
        out = []
        for i in range(len(source)):
            frames = source.batch(torch.tensor([i]))["frames"].to(device)
            out.append(self.encode(frames).float().cpu())
        return {"embedding": SideInfo(torch.cat(out), bits, EMBED_CHUNK)}

    def attach_side_info(self, side: Mapping[str, SideView]) -> None:
        if "embedding" not in side:
            raise ValueError("an HNeRV decodes from its stored 'embedding' side information")
        super().attach_side_info(side)

    def side_channels(self) -> dict[str, int]:
        return {"embedding": self.config.embed_dim}

    def fit_side(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"embedding": self.encode(batch["frames"])}

    def side_batch_key(self, name: str) -> str:
        return "embed"

    def decode_inputs(self, index: int) -> dict[str, torch.Tensor]:
        embed = self.side_views["embedding"].entry(index)
        return {"embed": embed[None].to(self.head.weight.device)}

    # -- decoder side
    def decode_embedding(self, embed: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = self.stem(embed)
        for block in self.blocks:
            x = block(x, t)
        return self.crop(output_head(self.head(x)))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = batch["t"] if "t" in batch else frame_time(batch["index"], self.config.frames)
        if "embed" in batch:
            embed = batch["embed"]
        elif self.encoder is not None:
            embed = self.encode(batch["frames"])
        else:
            embed = torch.cat([self.decode_inputs(int(i))["embed"] for i in batch["index"]])
        return self.decode_embedding(embed.to(self.head.weight.dtype), t)

    def stored_params(self) -> int:
        embed = self.config.frames * self.config.embed_dim * self.config.grid[0] * self.config.grid[1]
        return super().stored_params() + embed


def hnerv_width_config(base: dict, fc_dim: int) -> HNeRVConfig:
    """HNeRV with first decoder width ``fc_dim`` (the quantity the paper solves for)."""
    return HNeRVConfig(**{**base, "fc_dim": fc_dim})

"""One group of frames as latent volumes: a latent pyramid every `time_stride` frames (blended linearly
in time), a causal context model that also sees the previous latent frame, and a synthesis.

With ``reference="none"`` every frame is the image codec's synthesis of its blended planes. With
``reference="key"`` the group's first frame (the key frame) has a latent frame of its own, synthesized
as an image; every later frame's planes give a flow, a mask and a residual, and the frame is the key
frame warped by the flow, times the mask, plus the residual, so content the key frame already shows
costs the later frames almost nothing (`WarpSynthesis`).

The networks (context MLPs, per-level offsets, synthesis) are shared by the frames of a group and
stored once per group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fieldpress.codec import proxies
from fieldpress.codec.entropy_models import laplace_bits
from fieldpress.fields.latent import context as image_context
from fieldpress.fields.latent.model import (
    ContextMLP,
    Synthesis,
    decoder_macs_per_pixel,
    pixel_mlp,
    quantized_latents,
    residual_blocks,
    synthesis_macs,
    upsample,
)
from fieldpress.video.latent import context
from fieldpress.video.latent.config import VideoLatentConfig

FLOW_SCALE = 8.0  # flow in pixels per unit of the warp head's output (2: 0.1 dB worse in a training-only
# probe on carphone 0:32)
MASK_BIAS = 3.0  # the mask's initial logit: a fresh model copies the key frame (sigmoid(3) = 0.95)
KEY_FIRST_SHARE = 0.05  # training: the key frame alone for this share of a group's CPU time (its steps
# then code only the key's latents, 0.05 CPU-s a step against 0.09), so that the later frames start from
# a sharper reference. Carphone 0:32 at 128 CPU-s, quality 6 (3): 0.25 gave 30.05 dB at 0.285 bpp (29.23
# at 0.133), 0.15 30.17 at 0.257, 0.125 30.24 at 0.262, 0.10 30.13 at 0.251 (29.21 at 0.128), 0.05 30.22
# at 0.245 and 30.20 at 0.237 in a rerun (29.64 at 0.123), 0 29.48 at 0.224 (the key frame at 25.7 dB)


class WarpSynthesis(nn.Module):
    """Later frames' planes (B, L, H, W) and the key frame (1, 3, H, W) -> RGB (B, 3, H, W): a per-pixel
    MLP to (residual RGB, flow x/y, mask logit), the key frame warped by the flow (bilinear, borders
    repeated) times sigmoid(mask) plus the residual, then residual blocks of two 3x3 convs."""

    def __init__(self, channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.head = nn.ModuleList([nn.Linear(channels, hidden), nn.Linear(hidden, 6)])
        self.blocks = nn.ModuleList([nn.Conv2d(3, 3, 3, padding=1) for _ in range(2 * blocks)])
        with torch.no_grad():  # start as "copy the key frame": no residual, no flow, mask near 1
            self.head[1].weight.mul_(0.1)
            self.head[1].bias.zero_()
            self.head[1].bias[5] = MASK_BIAS
            for conv in self.blocks[1::2]:
                conv.weight.mul_(0.1)
                conv.bias.zero_()

    def forward(self, z: Tensor, key: Tensor) -> Tensor:
        b, _, h, w = z.shape
        out = pixel_mlp(self.head, z)
        rows = torch.arange(h, dtype=z.dtype)[:, None]
        cols = torch.arange(w, dtype=z.dtype)[None, :]
        gx = (cols + out[:, 3] * FLOW_SCALE + 0.5) * (2.0 / w) - 1.0
        gy = (rows + out[:, 4] * FLOW_SCALE + 0.5) * (2.0 / h) - 1.0
        warped = F.grid_sample(key.expand(b, -1, -1, -1), torch.stack([gx, gy], dim=-1), mode="bilinear",
                               padding_mode="border", align_corners=False)
        return residual_blocks(self.blocks, torch.sigmoid(out[:, 5:6]) * warped + out[:, :3])


class KeyWarpSynthesis(nn.Module):
    """The key frame's synthesis (the image codec's) and the later frames' `WarpSynthesis`. `head` and
    `blocks` list both networks' layers (key first), the order the weights stream stores them in."""

    def __init__(self, channels: int, warp_channels: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.key = Synthesis(channels, hidden, blocks)
        self.warp = WarpSynthesis(warp_channels, hidden, blocks)

    @property
    def head(self) -> list[nn.Module]:
        return [*self.key.head, *self.warp.head]

    @property
    def blocks(self) -> list[nn.Module]:
        return [*self.key.blocks, *self.warp.blocks]


def blend_in_time(volumes: list[Tensor], times: Tensor, stride: int) -> list[Tensor]:
    """Planes at `times` (float64 frame times counted from the volumes' first frame) from volumes of
    latent frames, latent frame k sitting at time (k + 1/2) * stride - 1/2: a linear blend of the two
    around each time (times beyond the ends copy the end)."""
    n = volumes[0].shape[0]
    pos = ((times - (stride - 1) / 2) / stride).clamp(0, n - 1)
    k0 = pos.floor().long().clamp(max=n - 1)
    k1 = (k0 + 1).clamp(max=n - 1)
    w = (pos - k0).to(volumes[0].dtype)[:, None, None]
    return [p[k0] * (1 - w) + p[k1] * w for p in volumes]


class LatentGroupModel(nn.Module):
    """Latent volumes (frames, h_l, w_l) per level + context model + synthesis for one group."""

    def __init__(self, config: VideoLatentConfig, frames: int, height: int, width: int) -> None:
        super().__init__()
        self.config, self.frames, self.height, self.width = config, frames, height, width
        shapes = image_context.level_shapes(height, width, config.n_levels)
        self.latents = nn.ParameterList([
            nn.Parameter(torch.zeros(config.level_frames(frames, lv), *shapes[lv])) for lv in config.levels])
        self.arm_anchor = ContextMLP(context.ANCHOR_IN, config.arm_hidden)
        self.arm_other = ContextMLP(context.NONANCHOR_IN, config.arm_hidden)
        self.offsets = nn.Parameter(torch.zeros(len(config.levels), 2, 2))  # level, pass, (mean, log-scale)
        if config.reference == "key":
            self.synthesis: nn.Module = KeyWarpSynthesis(len(config.levels), len(config.p_levels),
                                                         config.synth_hidden, config.synth_convs)
        else:
            self.synthesis = Synthesis(len(config.levels), config.synth_hidden, config.synth_convs)
        self.subset: Tensor | None = None  # training: synthesize only these frames, sorted (None: all)

    def warm_start(self, previous: LatentGroupModel) -> None:
        """Start from the previous group: its networks, and its last frame's latents in every frame (with
        a key frame: its key frame's latents in the key frame, the later frames' at zero, "copy")."""
        key = self.config.reference == "key"
        with torch.no_grad():
            for mine, theirs in zip(self.latents, previous.latents):
                if key:
                    mine[:1].copy_(theirs[:1])
                else:
                    mine.copy_(theirs[-1:].expand_as(mine))
            for name, p in self.named_parameters():
                if not name.startswith("latents."):
                    p.copy_(previous.get_parameter(name))

    def quantized_planes(self, state: proxies.ProxyState | None) -> list[Tensor]:
        """Latents through the proxy (training) or rounded (state None), clamped to the coded range."""
        return quantized_latents(self.latents, state)

    def rate_bits(self, planes: list[Tensor]) -> Tensor:
        """Differentiable bits of all latent volumes under the context model."""
        total = planes[0].new_zeros(())
        for k, vol in enumerate(planes):
            parent = context.parent_volume(planes, k)
            for anchors in (True, False):
                feats = context.pass_inputs(vol, parent, anchors)
                params = (self.arm_anchor if anchors else self.arm_other)(feats)
                params = params + self.offsets[k, 0 if anchors else 1]
                values = context.gather(vol, anchors)
                total = total + laplace_bits(values, params[:, 0], params[:, 1]).sum()
        return total

    def in_time(self, planes: list[Tensor]) -> list[Tensor]:
        """Latent frames -> one plane per frame: latent frame k sits at time (k + 1/2) * stride - 1/2;
        frames between two latent frames blend them linearly (frames beyond the ends copy them)."""
        s = self.config.time_stride
        if s == 1:
            return planes
        return blend_in_time(planes, torch.arange(self.frames, dtype=torch.float64), s)

    def training_frames(self, generator: torch.Generator, count: int | None,
                        progress: float) -> Tensor | None:
        """The frames one training step synthesizes (None: all): `count` drawn at random; with a key
        frame, the key frame alone for the first `KEY_FIRST_SHARE` of the steps, then always among them."""
        n = self.frames
        if self.config.reference == "key" and n > 1:
            if progress < KEY_FIRST_SHARE:
                return torch.zeros(1, dtype=torch.long)
            if count is None or count >= n:
                return None
            later = 1 + torch.randperm(n - 1, generator=generator)[:max(count - 1, 0)].sort().values
            return torch.cat([torch.zeros(1, dtype=torch.long), later])
        if count is None or count >= n:
            return None
        return torch.randperm(n, generator=generator)[:count].sort().values

    def synthesize(self, planes: list[Tensor]) -> Tensor:
        """(frames, 3, H, W) in [0, 1] (unclamped) of the frames in `subset` (None: all): the latent
        frames blended in time, every frame's planes upsampled, then the synthesis."""
        if self.config.reference == "key":
            return self._synthesize_from_key(planes)
        planes = self.in_time(planes)
        if self.subset is not None:
            planes = [p[self.subset] for p in planes]
        return self.synthesis(upsample(planes, self.height, self.width, self.config.upsample))

    def _synthesize_from_key(self, planes: list[Tensor]) -> Tensor:
        """The key frame from latent frame 0; later frame t from the later latent frames (latent frame
        1 + k sits at time 1 + (k + 1/2) * stride - 1/2, blended linearly) warped from the key frame."""
        size, mode = (self.height, self.width), self.config.upsample
        frames = torch.arange(self.frames) if self.subset is None else self.subset
        key = self.synthesis.key(upsample([p[:1] for p in planes], *size, mode))
        later = frames[frames > 0]
        if len(later) == 0:
            return key[:0] if len(frames) == 0 else key
        first = len(planes) - len(self.config.p_levels)
        blended = blend_in_time([p[1:] for p in planes[first:]], later.to(torch.float64) - 1,
                                self.config.time_stride)
        out = self.synthesis.warp(upsample(blended, *size, mode), key.clamp(0, 1))
        return torch.cat([key, out]) if bool(frames[0] == 0) else out

    def forward(self, state: proxies.ProxyState | None) -> tuple[Tensor, Tensor]:
        """(frames, bits): with a `subset`, its frames and the bits scaled by its share of the group, so
        bits per synthesized pixel stay the group's (the key frame alone: its own latent frames' bits)."""
        planes = self.quantized_planes(state)
        if self._key_alone():  # only the key frame's latents reach the loss: its bits are all that train
            bits = self.rate_bits([p[:1] for p in planes])
        else:
            bits = self.rate_bits(planes)
        if self.subset is not None:
            bits = bits * (len(self.subset) / self.frames)
        return self.synthesize(planes), bits

    def _key_alone(self) -> bool:
        """A training step that synthesizes the key frame only (the key-first phase)."""
        return (self.config.reference == "key" and self.subset is not None and len(self.subset) == 1
                and int(self.subset[0]) == 0)

    def macs_per_pixel(self) -> float:
        """Decoder multiply-accumulates per pixel (context model + synthesis; upsampling excluded)."""
        pixels = self.frames * self.height * self.width
        macs = decoder_macs_per_pixel(self.config, self.latents, pixels, context.ANCHOR_IN,
                                      context.NONANCHOR_IN) + 2 * len(self.config.levels)
        if self.config.reference == "key":  # later frames: the warp head and blocks instead, + warping
            c = self.config
            warp = synthesis_macs(len(c.p_levels), 6, c.synth_hidden, c.synth_convs) + 16
            image = synthesis_macs(len(c.levels), 3, c.synth_hidden, c.synth_convs)
            macs += (warp - image) * (self.frames - 1) / self.frames
        return macs

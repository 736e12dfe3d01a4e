"""One group of frames as latent volumes: a latent pyramid every `time_stride` frames (blended linearly
in time), a causal context model that also sees the previous latent frame, and the image codec's
synthesis applied to every frame.

The networks (context MLPs, per-level offsets, synthesis) are shared by the frames of a group and
stored once per group; static content costs almost nothing because the context model predicts each
latent from the previous latent frame's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fieldpress.codec import proxies
from fieldpress.codec.entropy_models import laplace_bits
from fieldpress.fields.latent import context as image_context
from fieldpress.fields.latent.model import (
    ContextMLP,
    Synthesis,
    decoder_macs_per_pixel,
    quantized_latents,
    upsample,
)
from fieldpress.video.latent import context
from fieldpress.video.latent.config import VideoLatentConfig


class LatentGroupModel(nn.Module):
    """Latent volumes (frames, h_l, w_l) per level + context model + synthesis for one group."""

    def __init__(self, config: VideoLatentConfig, frames: int, height: int, width: int) -> None:
        super().__init__()
        self.config, self.frames, self.height, self.width = config, frames, height, width
        shapes = image_context.level_shapes(height, width, config.n_levels)
        n = config.latent_frames(frames)
        self.latents = nn.ParameterList([nn.Parameter(torch.zeros(n, *shapes[lv]))
                                         for lv in config.levels])
        self.arm_anchor = ContextMLP(context.ANCHOR_IN, config.arm_hidden)
        self.arm_other = ContextMLP(context.NONANCHOR_IN, config.arm_hidden)
        self.offsets = nn.Parameter(torch.zeros(len(config.levels), 2, 2))  # level, pass, (mean, log-scale)
        self.synthesis = Synthesis(len(config.levels), config.synth_hidden, config.synth_convs)
        self.subset: Tensor | None = None  # training: synthesize only these frames (None: all)

    def warm_start(self, previous: LatentGroupModel) -> None:
        """Start from the previous group: its networks, and its last frame's latents in every frame."""
        with torch.no_grad():
            for mine, theirs in zip(self.latents, previous.latents):
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
            parent = planes[k + 1] if k + 1 < len(planes) else None
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
        n = planes[0].shape[0]
        pos = ((torch.arange(self.frames, dtype=torch.float64) - (s - 1) / 2) / s).clamp(0, n - 1)
        k0 = pos.floor().long().clamp(max=n - 1)
        k1 = (k0 + 1).clamp(max=n - 1)
        w = (pos - k0).to(planes[0].dtype)[:, None, None]
        return [p[k0] * (1 - w) + p[k1] * w for p in planes]

    def synthesize(self, planes: list[Tensor]) -> Tensor:
        """(frames, 3, H, W) in [0, 1] (unclamped): the latent frames blended in time, every frame's
        planes upsampled, then the synthesis."""
        planes = self.in_time(planes)
        if self.subset is not None:
            planes = [p[self.subset] for p in planes]
        return self.synthesis(upsample(planes, self.height, self.width, self.config.upsample))

    def forward(self, state: proxies.ProxyState | None) -> tuple[Tensor, Tensor]:
        """(frames, bits): with a `subset`, its frames and the bits scaled by its share of the group, so
        bits per synthesized pixel stay the group's."""
        planes = self.quantized_planes(state)
        bits = self.rate_bits(planes)
        if self.subset is not None:
            bits = bits * (len(self.subset) / self.frames)
        return self.synthesize(planes), bits

    def macs_per_pixel(self) -> float:
        """Decoder multiply-accumulates per pixel (context model + synthesis; upsampling excluded)."""
        pixels = self.frames * self.height * self.width
        return decoder_macs_per_pixel(self.config, self.latents, pixels, context.ANCHOR_IN,
                                      context.NONANCHOR_IN) + 2 * len(self.config.levels)

"""NeRV (Chen et al., NeurIPS 2021): frame index -> whole frame.

t = index / frames -> sin/cos embedding (base 1.25, ``levels`` frequencies) -> MLP stem (two Linear +
activation, the last included) reshaped to (fc_dim, h, w) -> NeRV blocks (conv 3x3 -> PixelShuffle
-> activation) with widths ``fc_dim * expansion`` then ``max(C // reduction, lower_width)`` -> 1x1 head
-> (tanh + 1) / 2. Trained with 0.7 L1 + 0.3 (1 - SSIM), Adam betas (0.5, 0.999), lr 5e-4, warmup +
cosine (the paper's settings).

Deviation: the paper fixes the output size at 9x16 x prod(strides) and resizes the video to it; we
choose the strides for the clip, start from ceil(H / prod) x ceil(W / prod) and crop the output back
to the clip's exact size, so any size works.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fieldpress.video.models.base import TimeINR, TimeINRConfig
from fieldpress.video.models.blocks import DecoderBlock, activation


@dataclass(frozen=True)
class NeRVConfig(TimeINRConfig):
    kernel: int = 3


class NeRV(TimeINR):
    """The NeRV generator: time embedding -> MLP stem -> upsampling blocks -> RGB head."""

    name = "nerv"
    loss_name = "fusion6"

    def __init__(self, config: NeRVConfig) -> None:
        super().__init__(config)
        gh, gw = config.grid
        self.stem = nn.Sequential(
            nn.Linear(self.embed.dim, config.stem_hidden), activation(config.act),
            nn.Linear(config.stem_hidden, config.fc_dim * gh * gw), activation(config.act),
        )
        self.build_decoder(lambda c_in, c_out, stride: DecoderBlock(c_in, c_out, stride, config.kernel,
                                                                    config.act, config.modulation))


def nerv_width_config(base: dict, fc_dim: int) -> NeRVConfig:
    """NeRV scaled by one width: fc_dim, with lower_width and the stem in NeRV-S's proportions
    (fc 26 : lower 96 : stem 512), the stem capped at 512."""
    lower = max(8, round(fc_dim * 96 / 26))
    stem = min(512, max(32, round(fc_dim * 512 / 26)))
    return NeRVConfig(**{**base, "fc_dim": fc_dim, "lower_width": lower, "stem_hidden": stem})

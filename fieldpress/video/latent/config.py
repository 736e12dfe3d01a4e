"""The latent video codec's decoder configuration (serialized into every file's header)."""

from __future__ import annotations

from dataclasses import dataclass

from fieldpress.errors import InputError
from fieldpress.fields.latent.config import LatentConfig

MAX_GROUP = 64  # frames per group a decoder accepts (one group is decoded at once)


@dataclass(frozen=True)
class VideoLatentConfig(LatentConfig):
    """The image codec's latent pyramid, context model and synthesis, plus the group length in frames
    (groups are coded independently: random access by group)."""

    group: int = 32  # 16 on carphone 0:32 at 128 CPU-s: 28.62 dB at 0.223 bpp; 32 (one network set, 8
    # frames a step): 28.90 dB at 0.162 bpp
    time_stride: int = 4  # one latent frame per this many frames, linearly interpolated in time

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.group, int) or not 1 <= self.group <= MAX_GROUP:
            raise InputError(f"latent video: the group length must be in 1..{MAX_GROUP} frames, got "
                             f"{self.group!r}")
        if not isinstance(self.time_stride, int) or not 1 <= self.time_stride <= MAX_GROUP:
            raise InputError(f"latent video: the time stride must be in 1..{MAX_GROUP}, got "
                             f"{self.time_stride!r}")

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a group of `frames` frames."""
        return -(-frames // self.time_stride)

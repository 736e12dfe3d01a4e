"""The latent video codec's decoder configuration (serialized into every file's header)."""

from __future__ import annotations

from dataclasses import dataclass

from fieldpress.errors import InputError
from fieldpress.fields.latent.config import LatentConfig

MAX_GROUP = 64  # frames per group a decoder accepts (one group is decoded at once)
REFERENCES = ("none", "key")  # how a group's later frames use its first: not at all, or warped


@dataclass(frozen=True)
class VideoLatentConfig(LatentConfig):
    """The image codec's latent pyramid, context model and synthesis, plus the group length in frames
    (groups are coded independently: random access by group)."""

    group: int = 32  # 16 on carphone 0:32 at 128 CPU-s: 28.62 dB at 0.223 bpp; 32 (one network set, 8
    # frames a step): 28.90 dB at 0.162 bpp
    time_stride: int = 4  # one latent frame per this many frames, linearly interpolated in time
    # "key": the group's first frame is coded alone (the key frame) and every later frame is the key
    # frame warped by a flow, scaled by a mask, plus a residual, all decoded from its own latent frames
    # (docs/formats/video-latent.md). "none" (files written before it): every frame from its latents only
    reference: str = "none"
    p_first_level: int = 0  # with "key": the finest level the later latent frames hold (coarser: cheaper)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference not in REFERENCES:
            raise InputError(f"latent video: the reference must be one of {', '.join(REFERENCES)}, got "
                             f"{self.reference!r}")
        if not isinstance(self.p_first_level, int) or not self.first_level <= self.p_first_level < \
                self.n_levels:
            raise InputError(f"latent video: p_first_level must be in {self.first_level}.."
                             f"{self.n_levels - 1}, got {self.p_first_level!r}")
        if not isinstance(self.group, int) or not 1 <= self.group <= MAX_GROUP:
            raise InputError(f"latent video: the group length must be in 1..{MAX_GROUP} frames, got "
                             f"{self.group!r}")
        if not isinstance(self.time_stride, int) or not 1 <= self.time_stride <= MAX_GROUP:
            raise InputError(f"latent video: the time stride must be in 1..{MAX_GROUP}, got "
                             f"{self.time_stride!r}")

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a group of `frames` frames (with a key frame: the key's, then the later
        frames' at `time_stride`)."""
        if self.reference == "key":
            return 1 + -(-(frames - 1) // self.time_stride)
        return -(-frames // self.time_stride)

    def level_frames(self, frames: int, level: int) -> int:
        """Latent frames level `level` holds in a group of `frames` frames (the key's alone below
        `p_first_level` with a key frame)."""
        if self.reference == "key" and level < self.p_first_level:
            return 1
        return self.latent_frames(frames)

    @property
    def p_levels(self) -> range:
        """The levels the later frames' synthesis reads (with a key frame)."""
        return range(max(self.first_level, self.p_first_level), self.n_levels)

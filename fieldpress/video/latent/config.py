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

    group: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.group, int) or not 1 <= self.group <= MAX_GROUP:
            raise InputError(f"latent video: the group length must be in 1..{MAX_GROUP} frames, got "
                             f"{self.group!r}")

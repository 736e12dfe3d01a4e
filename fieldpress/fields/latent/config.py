"""The latent-grid image codec's decoder configuration (serialized into every file's header)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fieldpress.errors import FormatError, InputError

MAX_WIDTH, MAX_CONVS = 256, 8  # bounds a decoder checks before building networks from a header
LATENT_MIN, LATENT_MAX = -64, 63  # coded latent range (residuals then fit the [-128, 127] alphabet)


@dataclass(frozen=True)
class LatentConfig:
    """Decoder shape: latent levels, context-model width, synthesis widths, upsampling."""

    n_levels: int = 7  # levels 1:1 .. 1:2**(n_levels-1)
    first_level: int = 0  # 1 drops the full-resolution latent (cheaper, for low rates)
    arm_hidden: int = 16
    synth_hidden: int = 24
    synth_convs: int = 1  # residual blocks of two 3x3 convs on the 3 output channels
    upsample: str = "bicubic"

    def __post_init__(self) -> None:
        if not 1 <= self.n_levels <= 12 or not 0 <= self.first_level < self.n_levels:
            raise InputError(f"latent levels: need 0 <= first_level < n_levels <= 12, got "
                             f"{self.first_level}, {self.n_levels}")
        if not (1 <= self.arm_hidden <= MAX_WIDTH and 1 <= self.synth_hidden <= MAX_WIDTH
                and 0 <= self.synth_convs <= MAX_CONVS):
            raise InputError(f"latent config: widths must be in 1..{MAX_WIDTH} and synthesis blocks in "
                             f"0..{MAX_CONVS}")
        if self.upsample not in ("bicubic", "bilinear"):
            raise InputError(f"latent config: unknown upsampling {self.upsample!r}")

    @property
    def levels(self) -> range:
        return range(self.first_level, self.n_levels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentConfig:
        """Rebuild from a header; unknown keys mean a newer writer (FormatError)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - names:
            raise FormatError(f"latent config has unknown fields {sorted(set(d) - names)}")
        try:
            return cls(**d)
        except (TypeError, InputError) as exc:
            raise FormatError(f"bad latent config: {exc}") from None

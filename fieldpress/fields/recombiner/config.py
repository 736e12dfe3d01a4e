"""The RECOMBINER network shape (frozen, stored in the prior and in every file's header) and the
encoder's schedule (CPU defaults; the paper-scale recipe by flags on a GPU)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fieldpress.errors import FormatError, InputError

MAX_BLOCK_BITS = 20  # 2^20 candidates per block: the most a decoder regenerates


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """One patch's INR: Fourier features of the patch-local coordinates and upsampled learned positional
    latents (``latent_grid`` x ``latent_grid`` x ``latent_dim`` per patch) feed a sine MLP."""

    patch: int = 32
    fourier_freqs: int = 2  # per coordinate: sin and cos at 2^0..2^(f-1) x pi -> 4 f features
    latent_grid: int = 2
    latent_dim: int = 16
    upsample_hidden: int = 16
    pe_dim: int = 8
    hidden: tuple[int, ...] = (12, 12)
    out_dim: int = 3
    w0: float = 30.0

    @property
    def in_dim(self) -> int:
        """Input features per pixel: Fourier features plus upsampled positional latents."""
        return 4 * self.fourier_freqs + self.pe_dim

    @property
    def dims(self) -> list[int]:
        """Widths of the MLP from input to output."""
        return [self.in_dim, *self.hidden, self.out_dim]

    @property
    def layer_sizes(self) -> list[int]:
        """Parameters of each linear layer (bias first, then the weight matrix)."""
        d = self.dims
        return [d[i + 1] * (d[i] + 1) for i in range(len(d) - 1)]

    @property
    def n_weights(self) -> int:
        """Reparameterised INR parameters per patch."""
        return sum(self.layer_sizes)

    @property
    def n_latent(self) -> int:
        """Positional-latent dimensions per patch."""
        return self.latent_grid * self.latent_grid * self.latent_dim

    @property
    def n_params(self) -> int:
        """Bayesian dimensions per patch: INR (reparameterised) weights, then positional latents."""
        return self.n_weights + self.n_latent

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in priors."""
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> NetConfig:
        """Parse a header's or prior's config (FormatError on anything malformed or out of range)."""
        if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
            raise FormatError("recombiner network config is missing or has unknown keys")
        try:
            hidden = tuple(int(h) for h in data["hidden"])
            ints = {k: int(data[k]) for k in ("patch", "fourier_freqs", "latent_grid", "latent_dim",
                                              "upsample_hidden", "pe_dim", "out_dim")}
            config = cls(hidden=hidden, w0=float(data["w0"]), **ints)
        except (TypeError, ValueError):
            raise FormatError("recombiner network config has a non-numeric field") from None
        ok = (8 <= config.patch <= 256 and 1 <= config.latent_grid <= config.patch
              and config.patch % (4 * config.latent_grid) == 0 and 0 <= config.fourier_freqs <= 16
              and all(1 <= v <= 256 for v in (config.latent_dim, config.upsample_hidden, config.pe_dim,
                                               *config.hidden))
              and 1 <= len(config.hidden) <= 8 and config.out_dim in (1, 3) and 0 < config.w0 <= 1000)
        if not ok:
            raise FormatError("recombiner network config is out of range")
        return config


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    """The encoder: bits per pixel to spend (``kl_budget``), REC block size in bits, posterior steps,
    the beta rule (paper: x/÷ (1 + beta_step) every ``beta_every`` steps toward each block's budget), and
    fine-tuning of the uncoded blocks after every ``finetune_every`` coded blocks."""

    kl_budget: float = 0.5
    block_bits: int = 16
    steps: int = 1200  # 80 CPU-s on a 256x256 crop; 300 left the KL 1.3-2.5x the index bits above 0.25 bpp
    lr: float = 0.01  # 0.003 lost about 0.9 dB on a 64x64 Kodak crop at 400 steps
    samples: int = 1
    initial_beta: float = 1e-5
    beta_step: float = 0.05
    beta_every: int = 1
    upper_buffer: float = 0.0
    lower_buffer: float = 0.4
    finetune_chunks: int = 8  # fine-tune after each of this many chunks of blocks (paper: after every block)
    finetune_steps: int = 60  # per chunk (paper: max(30000 // blocks, 50) per block)
    cap_kl: bool = True  # before REC codes a block, pull its posterior toward the prior until its KL is
    # at most block_bits (REC's sample follows q only when KL <= log2(candidates)); False: code as fitted
    init_scale_ratio: float = 0.5  # the posterior starts at the prior's mean with this x its std (KL ~0.46
    # bits per dim), so the fit starts under any budget instead of needing thousands of steps to widen

    def __post_init__(self) -> None:
        if not self.kl_budget > 0:
            raise InputError(f"--kl-budget must be a positive number of bits per pixel, got {self.kl_budget}")
        if not 1 <= self.block_bits <= MAX_BLOCK_BITS:
            raise InputError(f"--block-bits must be in 1..{MAX_BLOCK_BITS}, got {self.block_bits}")
        if not 0 < self.init_scale_ratio <= 1:
            raise InputError(f"init_scale_ratio must be in (0, 1], got {self.init_scale_ratio}")
        if self.steps < 0 or self.finetune_steps < 0 or self.finetune_chunks < 1 or self.samples < 1:
            raise InputError("recombiner steps must be non-negative and chunks/samples positive")

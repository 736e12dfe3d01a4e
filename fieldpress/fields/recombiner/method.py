"""RECOMBINER as a method of the image pipeline (`fit-image --model recombiner [--prior FILE]
[--kl-budget BPP] [--block-bits B]`): fit the posterior, REC-code it, hand the pipeline the file."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from fieldpress.codec.registry import Encoded
from fieldpress.errors import InputError
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.recombiner import codec
from fieldpress.fields.recombiner.config import EncodeConfig
from fieldpress.fields.recombiner.encode import EncodeResult, encode_image
from fieldpress.fields.recombiner.model import Prior, load_prior

DEFAULT_KL_BUDGET = 0.5  # bits per pixel


@dataclasses.dataclass
class RecombinerFit:
    """A coded RECOMBINER image (the pipeline's ``FittedImage``): the indices are already chosen."""

    result: EncodeResult
    prior: Prior
    info: RasterInfo
    config: EncodeConfig
    seed: int

    @property
    def steps(self) -> int:
        """Posterior steps, fine-tuning included."""
        return self.result.steps

    @property
    def seconds(self) -> float:
        """CPU seconds of the fit and coding."""
        return self.result.seconds

    @property
    def index_bits(self) -> int:
        """The rate: every REC index at the block's bit count (exactly what the index stream holds)."""
        return len(self.result.indices) * self.config.block_bits

    def facts(self) -> dict[str, Any]:
        """The summary's description: prior, budget, blocks, index bits, KL before coding."""
        pixels = self.info.width * self.info.height
        return {"model": "recombiner", "prior": self.prior.fingerprint(), "kl_budget": self.config.kl_budget,
                "block_bits": self.config.block_bits, "blocks": len(self.result.indices),
                "index_bits": self.index_bits, "index_bpp": round(self.index_bits / pixels, 4),
                "kl_bits_before_coding": round(self.result.kl_bits, 1),
                **self.spent(),
                "fit_cpu_seconds": round(self.result.seconds, 1)}

    def spent(self) -> dict[str, Any]:
        """The KL actually spent (each block's KL when REC coded it) beside the index bits written: REC
        names a sample faithfully when a block's KL is about its bit count (fewer wastes bits; more
        distorts the sample)."""
        kl = self.result.coded_kl_bits
        if kl is None or not len(kl):
            return {}
        bits = self.config.block_bits
        return {"kl_spent_bits": round(float(kl.sum()), 1),
                "kl_spent_over_index_bits": round(float(kl.sum()) / self.index_bits, 4),
                "blocks_over_budget": int((kl > bits + 1).sum()),
                "block_kl_bits_max": round(float(kl.max()), 2)}

    def preview(self) -> np.ndarray:
        """The posterior mean's image before REC coding (``psnr_before_quant``)."""
        return codec.to_uint8(self.result.preview)

    def decode_options(self) -> dict[str, Any]:
        """The decoder gets the very prior the encoder used."""
        return {"prior": self.prior}

    def encode(self, options: Any = None) -> Encoded:
        """Header and packed REC indices."""
        return codec.encoded(self.info, self.prior, self.seed, self.config.block_bits, self.result.indices)


def encode_config(options: Any) -> EncodeConfig:
    """The encoder's settings from the fit-image options (InputError on a bad budget)."""
    if options.minutes is not None:
        raise InputError("--model recombiner takes --steps (posterior steps), not --minutes")
    extra: dict[str, Any] = {}
    if options.steps is not None:
        extra["steps"] = options.steps
    if options.block_bits is not None:
        extra["block_bits"] = options.block_bits
    if options.finetune_chunks is not None:
        extra["finetune_chunks"] = options.finetune_chunks
    budget = DEFAULT_KL_BUDGET if options.kl_budget is None else options.kl_budget
    return EncodeConfig(kl_budget=budget, **extra)


def fit_recombiner(image: Any, options: Any, device: Any, hooks: Any) -> RecombinerFit:
    """The ``recombiner`` method of ``fieldpress.fields.pipeline``: 8-bit RGB images."""
    info = image.info
    if info.mode != "RGB" or info.bit_depth != 8:
        raise InputError(f"--model recombiner codes 8-bit RGB images; this one is {info.mode} at "
                         f"{info.bit_depth} bits")
    config = encode_config(options)
    prior = load_prior(options.prior)
    if prior.config.out_dim != 3:
        raise InputError("this prior is not for RGB images")
    x = torch.from_numpy(np.ascontiguousarray(image.pixels)).float() / 255.0
    progress = None
    if getattr(hooks, "progress", False):
        import sys

        def progress(msg: str) -> None:
            """Coding progress on stderr."""
            print(msg, file=sys.stderr, flush=True)
    result = encode_image(prior, x, config, options.seed, torch.device(device), progress)
    return RecombinerFit(result, prior.cpu(), info, config, options.seed)

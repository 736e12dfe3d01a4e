"""What decides a video fit: `FitOptions` (also the resume signature), the stages they plan (fit with
the paper recipe -> optional prune + fine-tune -> optional QAT, or with ``--lambda`` / ``--quality``
the rate-distortion stage instead of QAT), the quality measures, and the small rules of ``fit-video``
(default output, preview downscale). The pipeline that runs it all is
`fieldpress.video.pipeline`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BITS_PER_PARAM_CODED = 0.85
"""Entropy-coded bits per quantized bit, used only to turn ``--target-bpp`` into a size."""
BUDGET_MARGIN = 0.85
"""Share of ``--minutes`` the planned stages may fill (the rest absorbs probe error and overheads)."""


@dataclass(frozen=True)
class FitOptions:
    """Everything that decides the fit (it is also the resume signature)."""

    model: str = "hnerv"
    size: int | None = 150_000
    target_bpp: float | None = None
    epochs: int = 300
    minutes: float | None = None
    bits: int = 8
    embed_bits: int = 6
    prune: float = 0.0
    prune_epochs: int | None = None
    qat_epochs: int = 0
    precision: str = "fp32"
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    cam: bool = False
    cam_grid: int = 30
    strides: tuple[int, ...] | None = None
    patch: int | None = None  # HiNeRV: training patch side in pixels (0 = whole frames); None = its default
    # group-wise and rate-distortion methods (NIRVANA; latent models): None = the method's default
    group_size: int | None = None
    key_every: int | None = None
    adaptive_groups: bool = True
    lmbda: float | None = None  # rate-distortion weight: loss = MSE + lmbda * bpp
    quality: int | None = None  # 1..8, a fixed lambda ladder
    rd_epochs: int | None = None  # VideoINR models with lmbda/quality: rd stage epochs (None: epochs // 3)
    rate_trained: bool = False  # --rd: an rd stage even without lmbda/quality (steered to target_bpp if set)

    @property
    def rd(self) -> bool:
        """Whether the rate is trained (``--rd``, ``--lambda`` or ``--quality`` given)."""
        return self.rate_trained or self.lmbda is not None or self.quality is not None

    @property
    def steered(self) -> bool:
        """Whether the rd stage steers lambda to ``--target-bpp`` (``--rd`` with a target) instead of the
        target choosing the model's size."""
        return self.rate_trained and self.target_bpp is not None

    def rd_lambda(self) -> float:
        """Lambda of the rd stage: ``--lambda``, else ``--quality``'s rung of the ladder, else the default
        rung; a steered stage starts from ``--lambda``/``--quality`` or the ladder's smallest lambda (the
        rate then falls toward the target from above, the direction the steering converges in)."""
        from fieldpress.codec.rate_control import (
            DEFAULT_QUALITY,
            QUALITY_LAMBDAS,
            check_lambda,
            quality_lambda,
        )

        if self.lmbda is not None:
            return check_lambda(self.lmbda)
        if self.quality is None and self.steered:
            return min(QUALITY_LAMBDAS.values())
        return quality_lambda(int(self.quality if self.quality is not None else DEFAULT_QUALITY))


def size_for_bpp(bpp: float, frames: int, width: int, height: int, bits: int) -> int:
    """Stored parameters that land near `bpp` at `bits` per weight after entropy coding."""
    return max(1, int(bpp * frames * width * height / (bits * BITS_PER_PARAM_CODED)))


def plan_epochs(opts: FitOptions) -> dict[str, int]:
    """Epochs of each stage as the flags ask (prune fine-tune defaults to a third of the fit)."""
    plan = {"fit": opts.epochs}
    if opts.prune > 0:
        plan["prune"] = opts.prune_epochs if opts.prune_epochs is not None else max(1, opts.epochs // 3)
    if opts.qat_epochs > 0:
        plan["qat"] = opts.qat_epochs
    if opts.rd:
        plan["rd"] = opts.rd_epochs if opts.rd_epochs is not None else max(1, opts.epochs // 3)
    return plan


def stages_for(opts: FitOptions, plan: dict[str, int], lr: float, warmup: float) -> list:
    """The Fitter's stages for `plan` (stage kind -> epochs): fit, then prune, QAT and rd as planned."""
    from fieldpress.engine.config import Stage

    stages = [Stage("fit", plan["fit"], lr, warmup=warmup, schedule="cosine")]
    if "prune" in plan:
        stages.append(Stage.prune(plan["prune"], lr, amount=opts.prune, warmup=0.0, schedule="cosine"))
    if "qat" in plan:
        stages.append(Stage.qat(plan["qat"], lr * 0.1, bits=opts.bits, axis=0, schedule="cosine"))
    if "rd" in plan:
        stages.append(Stage.rd(plan["rd"], lr, opts.rd_lambda(), lambda_warmup=0.2, schedule="cosine",
                               min_lr_ratio=0.05, target_rate=opts.target_bpp if opts.steered else None))
    return stages


def quality(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """PSNR (pooled and per-frame mean) and MS-SSIM of uint8 (T, H, W, 3) clips."""
    from fieldpress.metrics import ms_ssim, video_psnr

    pooled, mean = video_psnr(ref, test)
    return {
        "psnr": round(float(pooled), 4),
        "psnr_frame_mean": round(float(mean), 4),
        "ms_ssim": round(float(ms_ssim(ref, test)), 6),
    }


def default_output(input_path: Path) -> Path:
    """``clip.mp4`` -> ``clip.fpv`` beside it."""
    return input_path.with_suffix(".fpv")


def downscale_for(width: int, height: int, max_width: int) -> tuple[int, int] | None:
    """The (W, H) a preview downscales to (even sides, aspect kept), or None when it fits."""
    if width <= max_width:
        return None
    scale = max_width / width
    return max_width - max_width % 2, max(2, int(math.floor(height * scale / 2)) * 2)

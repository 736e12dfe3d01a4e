"""Overfit a latent-grid model to one image: loss = MSE + lambda * bits per pixel.

Schedule (after Cool-chic, shortened for CPU budgets): soft-round + noise with annealed temperature
and a cosine learning rate, then a short straight-through phase at a low learning rate. A time budget
is turned into a step count from the first steps' speed, so the schedule knows its length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from fieldpress.codec import proxies
from fieldpress.codec.rate_control import check_lambda
from fieldpress.errors import InputError
from fieldpress.fields.latent.config import LatentConfig
from fieldpress.fields.latent.model import LatentImageModel

PROBE_STEPS = 3


@dataclass(frozen=True)
class FitConfig:
    """Training settings of one fit."""

    lr_latents: float = 1e-1
    lr_networks: float = 2e-2
    lr_ste: float = 1e-2  # lr multiplier during the straight-through phase
    final_lr_fraction: float = 0.02
    proxy: proxies.ProxySchedule = field(default_factory=proxies.ProxySchedule)
    grad_clip: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    """A trained model plus its training trace."""

    model: LatentImageModel
    lambda_: float
    steps: int
    seconds: float
    history: list[dict[str, float]]


def _lr_factor(progress: float, fit: FitConfig) -> float:
    soft_end = 1.0 - fit.proxy.ste_fraction
    if progress >= soft_end:
        return fit.lr_ste
    u = progress / soft_end
    return fit.final_lr_fraction + (1 - fit.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * u))


def _optimizer(model: LatentImageModel, fit: FitConfig) -> torch.optim.Optimizer:
    nets = [p for n, p in model.named_parameters() if not n.startswith("latents.")]
    return torch.optim.Adam([{"params": list(model.latents.parameters()), "lr": fit.lr_latents},
                             {"params": nets, "lr": fit.lr_networks}])


def _step(model: LatentImageModel, opt: torch.optim.Optimizer, target: Tensor, lambda_: float,
          progress: float, fit: FitConfig) -> dict[str, float]:
    state = proxies.schedule(progress, fit.proxy)
    factor = _lr_factor(progress, fit)
    for group, base in zip(opt.param_groups, (fit.lr_latents, fit.lr_networks)):
        group["lr"] = base * factor
    image, bits = model(state)
    npix = target.shape[-1] * target.shape[-2]
    mse = torch.mean((image - target) ** 2)
    loss = mse + lambda_ * bits / npix
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if fit.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), fit.grad_clip)
    opt.step()
    mse_v = float(mse.detach())
    return {"loss": float(loss.detach()), "mse": mse_v, "bpp": float(bits.detach()) / npix,
            "psnr": -10 * math.log10(max(mse_v, 1e-12))}


def fit_latent_image(image: Tensor, config: LatentConfig, lambda_: float, steps: int | None = None,
                     seconds: float | None = None, fit: FitConfig = FitConfig(),
                     progress: Callable[[int, int, dict[str, float]], None] | None = None) -> FitResult:
    """Fit a model to `image` ((3, H, W) float in [0, 1]) for `steps` or about `seconds` of CPU time.

    `seconds` counts this process's CPU time (all threads), so a busy machine does not shrink the fit.
    """
    check_lambda(lambda_)
    if (steps is None) == (seconds is None):
        raise InputError("give exactly one of steps or seconds")
    if image.dim() != 3 or image.shape[0] != 3:
        raise InputError(f"expected a (3, H, W) image, got {tuple(image.shape)}")
    torch.manual_seed(fit.seed)
    target = image[None].float()
    model = LatentImageModel(config, image.shape[1], image.shape[2])
    opt = _optimizer(model, fit)
    history: list[dict[str, float]] = []
    start = time.process_time()
    total = steps if steps is not None else 10**9
    step = 0
    while step < total:
        known = steps is not None or step >= PROBE_STEPS
        rec = _step(model, opt, target, lambda_, step / total if known else 0.0, fit)
        step += 1
        if steps is None and step == PROBE_STEPS:
            per_step = (time.process_time() - start) / PROBE_STEPS
            total = max(PROBE_STEPS + 1, int(seconds / per_step))  # type: ignore[operator]
        rec.update(step=step, seconds=time.process_time() - start)
        history.append(rec)
        if progress is not None:
            progress(step, total, rec)
    return FitResult(model, lambda_, step, time.process_time() - start, history)

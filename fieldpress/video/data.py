"""The clip as a Fitter data source, and the losses the video papers train with (by name)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fieldpress.errors import InputError


class ClipSource:
    """Frames of a clip, kept as uint8 and handed out per batch as
    ``{"index": int64 (B,), "t": float32 (B,), "frames": uint8 (B, 3, H, W)}``."""

    def __init__(self, frames: np.ndarray, time_frames: int | None = None) -> None:
        self.frames = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
        self.time_frames = int(time_frames or frames.shape[0])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = indices.long().cpu()
        return {"index": idx, "t": idx.float() / float(self.time_frames), "frames": self.frames[idx]}


def to_unit(frames_uint8: torch.Tensor) -> torch.Tensor:
    return frames_uint8.float() / 255.0


def to_uint8(frames_unit: torch.Tensor) -> torch.Tensor:
    """[0, 1] float frames -> uint8, rounding to nearest (the decoder does exactly this)."""
    return (frames_unit.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def _ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ssim

    side = min(x.shape[-2:])
    win = 11 if side >= 11 else max(3, side - (1 - side % 2))
    return ssim(x, y, data_range=1.0, size_average=True, win_size=win)


def fusion6(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NeRV's 'Fusion6': 0.7 L1 + 0.3 (1 - SSIM)."""
    return 0.7 * F.l1_loss(pred, target) + 0.3 * (1.0 - _ssim(pred.float(), target.float()))


def l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"fusion6": fusion6, "l2": l2}


def make_loss(name: str) -> Callable[[nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict]]:
    """A Fitter loss function: decode the batch, compare with its frames; reports PSNR."""
    try:
        criterion = LOSSES[name]
    except KeyError:
        raise InputError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}") from None

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        target = to_unit(batch["frames"])
        pred = model(batch)
        loss = criterion(pred, target)
        with torch.no_grad():
            mse = F.mse_loss(pred.detach().float(), target).clamp_min(1e-10)
            psnr = -10.0 * torch.log10(mse)
        return loss, {"psnr": psnr}

    return loss_fn

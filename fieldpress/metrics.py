"""Quality and rate metrics, one implementation for every codec fieldpress compares against.

- PSNR on 8-bit values (peak 255): the headline pools the squared error over every pixel of every
  frame (float64 sums, frames taken in chunks to bound memory); the papers' protocol is the mean of
  per-frame PSNR. A zero error, or any PSNR above it, is reported as ``PSNR_CAP_DB`` = 100 dB, so a
  lossless frame cannot turn a mean into infinity and JSON summaries stay finite.
- MS-SSIM (Gaussian window, sigma 1.5, data range 255, float64), averaged over frames: our own small
  implementation of Wang et al. 2003, the same arithmetic as pytorch-msssim's public `ms_ssim` (checked
  against it in tests/test_metrics.py), because that library offers 5 scales only. The window is 11,
  or 7 when the short side is under 161 px. 5 scales need the short
  side above (window - 1) x 2**4; smaller frames use the largest number of scales L
  with short side > (window - 1) x 2**(L-1), keeping the first L standard weights renormalised to sum 1
  (L = 1 is plain SSIM); frames narrower than the window shrink the window to the largest odd size
  that fits.
- SSIM: the same window rule, single scale.
- bpp from the real bytes of a file: bytes x 8 / (frames x width x height of the original).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fieldpress.errors import InputError

PSNR_CAP_DB = 100.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003 (pytorch-msssim's default)
_CHUNK_ELEMENTS = 1 << 24  # elements per chunk (128 MiB of float64)


def _tensor(a: Any) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach()
    return torch.from_numpy(np.ascontiguousarray(a))


def _pair(ref: Any, test: Any) -> tuple[Tensor, Tensor]:
    r, t = _tensor(ref), _tensor(test)
    if r.shape != t.shape:
        raise InputError(f"cannot compare images of shapes {tuple(r.shape)} and {tuple(t.shape)}")
    if r.numel() == 0:
        raise InputError("cannot compare empty images")
    return r, t.to(r.device)


def psnr_from_mse(mse: float, max_val: float = 255.0) -> float:
    """10 log10(max^2 / mse), capped at PSNR_CAP_DB (also for mse == 0)."""
    if mse <= 0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(max_val * max_val / mse))


def mse(ref: Any, test: Any) -> float:
    """Mean squared error pooled over every element, accumulated in float64 chunk by chunk."""
    r, t = _pair(ref, test)
    fr, ft = r.reshape(-1), t.reshape(-1)
    total = 0.0
    for i in range(0, fr.numel(), _CHUNK_ELEMENTS):
        d = fr[i:i + _CHUNK_ELEMENTS].double() - ft[i:i + _CHUNK_ELEMENTS].double()
        total += float((d * d).sum())
    return total / fr.numel()


def psnr(ref: Any, test: Any, max_val: float = 255.0) -> float:
    """PSNR in dB of the squared error pooled over everything given (capped at PSNR_CAP_DB)."""
    return psnr_from_mse(mse(ref, test), max_val)


def frame_psnrs(ref: Any, test: Any, max_val: float = 255.0) -> np.ndarray:
    """PSNR of each frame of (T, H, W[, C]) arrays, capped at PSNR_CAP_DB."""
    r, t = _pair(ref, test)
    step = max(1, _CHUNK_ELEMENTS // max(r[0].numel(), 1))
    out = []
    for i in range(0, r.shape[0], step):
        d = r[i:i + step].double() - t[i:i + step].double()
        out.extend((d * d).reshape(d.shape[0], -1).mean(dim=1).tolist())
    return np.array([psnr_from_mse(m, max_val) for m in out], dtype=np.float64)


def video_psnr(ref: Any, test: Any) -> tuple[float, float]:
    """(pooled PSNR, mean of per-frame PSNR) of uint8 (T, H, W, C) videos: the headline and the papers'."""
    r, t = _pair(ref, test)
    if r.dim() != 4:
        raise InputError(f"expected videos shaped (T, H, W, C), got {tuple(r.shape)}")
    return psnr(r, t), float(frame_psnrs(r, t).mean())


# ----------------------------------------------------------------------------- SSIM family
def ms_ssim_window(height: int, width: int) -> int:
    """The Gaussian window: 11, or 7 when the short side is under 161 px (shrunk to fit tiny frames)."""
    short = min(height, width)
    win = 11 if short >= 161 else 7
    if short < win:
        win = short if short % 2 == 1 else short - 1
    return max(win, 1)


def ms_ssim_levels(height: int, width: int, window: int | None = None) -> int:
    """How many MS-SSIM scales fit: 5 when the short side exceeds (window - 1) x 16, else fewer."""
    short = min(height, width)
    win = ms_ssim_window(height, width) if window is None else window
    levels = 1
    while levels < 5 and short > (win - 1) * 2 ** levels:
        levels += 1
    return levels


def _nchw(x: Tensor) -> Tensor:
    """(T, H, W, C), (H, W, C) or (H, W) -> (N, C, H, W), a view in the input's dtype (no copy)."""
    if x.dim() == 2:
        x = x[None, :, :, None]
    elif x.dim() == 3:
        x = x[None]
    elif x.dim() != 4:
        raise InputError(f"expected (H, W), (H, W, C) or (T, H, W, C) images, got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)


def gaussian_window(size: int, sigma: float = 1.5) -> Tensor:
    """The normalised 1-D Gaussian window, computed in float32 (as pytorch-msssim does, so the figures
    match it to rounding) before any cast."""
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: Tensor, window: Tensor) -> Tensor:
    """Separable 'valid' Gaussian blur of (N, C, H, W), per channel; a side shorter than the window
    is left unblurred (pytorch-msssim's rule; the window and scale rules never ask for it)."""
    channels, size = x.shape[1], window.numel()
    w = window.to(x.device, x.dtype).view(1, 1, 1, size).repeat(channels, 1, 1, 1)
    if x.shape[-1] >= size:
        x = torch.nn.functional.conv2d(x, w, groups=channels)
    if x.shape[-2] >= size:
        x = torch.nn.functional.conv2d(x, w.transpose(2, 3), groups=channels)
    return x


def ssim_and_cs(x: Tensor, y: Tensor, window: Tensor, data_range: float = 255.0) -> tuple[Tensor, Tensor]:
    """Per-channel SSIM and contrast-structure term (N, C) of (N, C, H, W) images (Wang et al. 2004,
    K1 = 0.01, K2 = 0.03, means over the valid area)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y = _blur(x * x, window) - mu_xx, _blur(y * y, window) - mu_yy
    cov = _blur(x * y, window) - mu_xy
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _ms_ssim_batch(x: Tensor, y: Tensor, win: int, levels: int) -> Tensor:
    """MS-SSIM per image of (N, C, H, W) over `levels` scales (Wang et al. 2003): the contrast-structure
    terms of the first levels - 1 scales and the SSIM of the last, each clamped at 0, raised to the
    first `levels` standard weights (renormalised to sum 1 when fewer than 5), multiplied, then
    averaged over channels. Between scales a 2x2 average pool, padded on odd sides.
    levels = 5 is pytorch-msssim's ms_ssim."""
    window = gaussian_window(win)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    if levels < len(MS_SSIM_WEIGHTS):  # the full set is used as published (it sums to 1.0001)
        weights = weights / weights.sum()
    parts = []
    for i in range(levels):
        s, cs = ssim_and_cs(x, y, window)
        if i < levels - 1:
            parts.append(torch.relu(cs))
            pad = [d % 2 for d in x.shape[2:]]
            x = torch.nn.functional.avg_pool2d(x, kernel_size=2, padding=pad)
            y = torch.nn.functional.avg_pool2d(y, kernel_size=2, padding=pad)
    parts.append(torch.relu(s))
    stacked = torch.stack(parts, dim=0)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(1)


def _per_frame(ref: Any, test: Any, fn: Any) -> float:
    r, t = _pair(ref, test)
    x_all, y_all = _nchw(r), _nchw(t)
    h, w = x_all.shape[-2:]
    step = max(1, _CHUNK_ELEMENTS // max(x_all[0].numel() * 8, 1))  # SSIM keeps ~8 maps per frame
    values = []
    for i in range(0, x_all.shape[0], step):  # float64 one chunk at a time: a whole video would not fit
        values.append(fn(x_all[i:i + step].double(), y_all[i:i + step].double(), int(h), int(w)))
    return float(torch.cat(values).mean())


def ms_ssim(ref: Any, test: Any) -> float:
    """Mean over frames of MS-SSIM (uint8 (T, H, W, C), (H, W, C) or (H, W)); see the module notes."""

    def fn(x: Tensor, y: Tensor, h: int, w: int) -> Tensor:
        win = ms_ssim_window(h, w)
        return _ms_ssim_batch(x, y, win, ms_ssim_levels(h, w, win))

    return _per_frame(ref, test, fn)


def ssim(ref: Any, test: Any) -> float:
    """Mean over frames of single-scale SSIM with the MS-SSIM window rule."""

    def fn(x: Tensor, y: Tensor, h: int, w: int) -> Tensor:
        return ssim_and_cs(x, y, gaussian_window(ms_ssim_window(h, w)))[0].mean(1)

    return _per_frame(ref, test, fn)


# ----------------------------------------------------------------------------- rate
def bpp(file_bytes: int, frames: int, width: int, height: int) -> float:
    """Bits per pixel of a file: bytes x 8 / (frames x width x height of the original)."""
    if file_bytes < 0 or frames < 1 or width < 1 or height < 1:
        raise InputError(f"bpp needs bytes >= 0 and positive frames/width/height, got "
                         f"{file_bytes}, {frames}, {width}x{height}")
    return file_bytes * 8.0 / (frames * width * height)


def bd_rate(
    rate_a: list[float], psnr_a: list[float], rate_b: list[float], psnr_b: list[float]
) -> float | None:
    """Bjontegaard delta rate of B against A in percent (negative: B needs fewer bits at equal PSNR):
    a cubic fit of log-rate over PSNR, integrated over the overlapping PSNR interval. None when the
    curves do not overlap or either has fewer than 4 points. The benches' one BD-rate."""
    if len(rate_a) < 4 or len(rate_b) < 4:
        return None
    pa, pb = np.asarray(psnr_a, float), np.asarray(psnr_b, float)
    la, lb = np.log(np.asarray(rate_a, float)), np.log(np.asarray(rate_b, float))
    lo, hi = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if hi <= lo:
        return None
    fa, fb = np.polyfit(pa, la, 3), np.polyfit(pb, lb, 3)
    ia, ib = np.polyint(fa), np.polyint(fb)
    avg_a = (np.polyval(ia, hi) - np.polyval(ia, lo)) / (hi - lo)
    avg_b = (np.polyval(ib, hi) - np.polyval(ib, lo)) / (hi - lo)
    return float((np.exp(avg_b - avg_a) - 1.0) * 100.0)

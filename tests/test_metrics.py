"""Metrics against hand-computed values: pooled vs per-frame PSNR, the 100 dB cap, float64 chunked
pooling, the MS-SSIM window and scale rules, SSIM, bpp from bytes. Our MS-SSIM is checked against
pytorch-msssim's public `ms_ssim` / `ssim` where those apply (5 scales, 1 scale) and against a plain
numpy transcription of Wang et al. 2003 for 2-4 scales, which the library does not offer."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import pytorch_msssim
import torch

from fieldpress import metrics as M
from fieldpress.errors import InputError
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture

PEAK = 20 * math.log10(255)  # PSNR of an MSE of 1 on 8-bit values: 48.1308 dB


def _noisy(shape: tuple[int, ...], amp: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, shape, dtype=np.uint8)
    test = np.clip(ref.astype(np.int16) + rng.integers(-amp, amp + 1, shape), 0, 255).astype(np.uint8)
    return ref, test


def test_psnr_hand_values() -> None:
    ref = np.zeros((4, 5, 3), np.uint8)
    assert M.psnr(ref, ref + 1) == pytest.approx(PEAK, abs=1e-12)
    assert M.psnr(ref, ref + 2) == pytest.approx(PEAK - 20 * math.log10(2), abs=1e-12)
    assert M.psnr(ref, ref) == M.PSNR_CAP_DB == 100.0


def test_pooled_and_mean_per_frame_differ_as_defined() -> None:
    ref = np.zeros((2, 8, 8, 3), np.uint8)
    test = ref.copy()
    test[0] += 1  # frame MSE 1
    test[1] += 2  # frame MSE 4
    pooled, mean = M.video_psnr(ref, test)
    assert pooled == pytest.approx(10 * math.log10(255**2 / 2.5), abs=1e-12)
    assert mean == pytest.approx((PEAK + PEAK - 10 * math.log10(4)) / 2, abs=1e-12)
    test[1] = 0  # a lossless frame counts as 100 dB, not infinity
    assert M.video_psnr(ref, test)[1] == pytest.approx((PEAK + 100.0) / 2, abs=1e-12)


def test_pooled_mse_is_float64_and_chunked(monkeypatch) -> None:
    ref, test = _noisy((5, 7, 9, 3))
    exact = ((ref.astype(np.float64) - test) ** 2).mean()
    whole = M.mse(ref, test)
    monkeypatch.setattr(M, "_CHUNK_ELEMENTS", 17)
    assert M.mse(ref, test) == pytest.approx(exact, rel=1e-15)
    assert whole == pytest.approx(exact, rel=1e-15)
    frames = M.frame_psnrs(ref, test)
    expect = [10 * math.log10(255**2 / ((ref[i].astype(np.float64) - test[i]) ** 2).mean()) for i in range(5)]
    np.testing.assert_allclose(frames, expect, rtol=1e-13)


def test_ms_ssim_window_and_scale_rule() -> None:
    assert M.ms_ssim_window(161, 300) == 11 and M.ms_ssim_window(160, 300) == 7
    assert M.ms_ssim_window(1080, 1920) == 11 and M.ms_ssim_window(5, 40) == 5 and M.ms_ssim_window(4, 4) == 3
    assert M.ms_ssim_levels(161, 161) == 5  # 161 > 10 * 16
    assert M.ms_ssim_levels(97, 120) == 5 and M.ms_ssim_levels(96, 120) == 4  # window 7: 5 scales need > 96
    assert M.ms_ssim_levels(20, 20) == 2 and M.ms_ssim_levels(5, 5) == 1


@pytest.mark.parametrize(("h", "w", "win"), [(162, 170, 11), (100, 120, 7)])
def test_ms_ssim_matches_pytorch_msssim_where_it_applies(h: int, w: int, win: int) -> None:
    ref, test = _noisy((1, h, w, 3), amp=20)
    x = torch.from_numpy(ref).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(test).permute(0, 3, 1, 2).double()
    expect = float(pytorch_msssim.ms_ssim(x, y, data_range=255, win_size=win))
    assert M.ms_ssim(ref, test) == pytest.approx(expect, abs=1e-12)
    assert M.ms_ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_on_small_frames_reduces_scales() -> None:
    ref, test = _noisy((3, 48, 64, 3), amp=20)
    value = M.ms_ssim(ref, test)
    assert 0.0 < value < 1.0
    tiny_ref, tiny_test = _noisy((6, 6, 3), amp=20, seed=2)  # one scale, window 5: MS-SSIM is SSIM
    assert M.ms_ssim(tiny_ref, tiny_test) == pytest.approx(M.ssim(tiny_ref, tiny_test), abs=1e-12)


def _np_ssim_cs(x: np.ndarray, y: np.ndarray, win: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel SSIM and cs of (C, H, W) float64 arrays: an explicit 2-D valid window, no torch.
    The float32 window differs from torch's in the last bit (exp): results agree to ~1e-7, not 1e-12."""
    c = np.arange(win, dtype=np.float32) - win // 2
    g = np.exp(-(c ** 2) / np.float32(2 * 1.5 ** 2)).astype(np.float32)
    g = (g / g.sum()).astype(np.float64)
    k = np.outer(g, g)

    def blur(a: np.ndarray) -> np.ndarray:
        views = np.lib.stride_tricks.sliding_window_view(a, (win, win), axis=(1, 2))
        return np.einsum("chwij,ij->chw", views, k)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cs = (2 * cov + c2) / (vx + vy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return ssim.reshape(len(x), -1).mean(1), cs.reshape(len(x), -1).mean(1)


def _np_pool(a: np.ndarray) -> np.ndarray:
    """2x2 average, an odd side zero-padded on both ends and the padding counted (avg_pool2d's rule)."""
    ph, pw = a.shape[1] % 2, a.shape[2] % 2
    a = np.pad(a, ((0, 0), (ph, ph), (pw, pw)))
    h, w = (a.shape[1] - 2) // 2 + 1, (a.shape[2] - 2) // 2 + 1
    a = a[:, :2 * h, :2 * w]
    return a.reshape(len(a), h, 2, w, 2).mean(axis=(2, 4))


def _np_ms_ssim(ref: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM of one (H, W, C) uint8 pair with the module's window and scale rules."""
    x, y = ref.transpose(2, 0, 1).astype(np.float64), test.transpose(2, 0, 1).astype(np.float64)
    win = M.ms_ssim_window(*ref.shape[:2])
    levels = M.ms_ssim_levels(*ref.shape[:2])
    weights = np.array(M.MS_SSIM_WEIGHTS[:levels])
    weights = weights / weights.sum() if levels < 5 else weights
    value = np.ones(len(x))
    for i in range(levels):
        s, cs = _np_ssim_cs(x, y, win)
        value *= np.maximum(cs if i < levels - 1 else s, 0) ** weights[i]
        x, y = _np_pool(x), _np_pool(y)
    return float(value.mean())


@pytest.mark.parametrize("shape", [(48, 64, 3), (20, 23, 1), (40, 33, 3), (96, 130, 3), (12, 9, 3)])
def test_ms_ssim_with_fewer_scales_matches_a_numpy_reference(shape: tuple[int, ...]) -> None:
    ref, test = _noisy(shape, amp=25, seed=sum(shape))
    assert 1 <= M.ms_ssim_levels(*shape[:2]) < 5
    assert M.ms_ssim(ref, test) == pytest.approx(_np_ms_ssim(ref, test), abs=1e-6)


def test_ms_ssim_at_five_scales_matches_the_numpy_reference_too() -> None:
    ref, test = _noisy((100, 120, 3), amp=20, seed=5)
    assert M.ms_ssim(ref, test) == pytest.approx(_np_ms_ssim(ref, test), abs=1e-6)


def test_metrics_use_no_pytorch_msssim_at_run_time() -> None:
    code = ("import sys, numpy as np; from fieldpress import metrics as M;"
            "a = np.zeros((40, 50, 3), np.uint8); M.ms_ssim(a, a + 3); M.ssim(a, a);"
            "sys.exit('pytorch_msssim' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_ssim_of_single_image_matches_library() -> None:
    ref, test = _noisy((64, 80, 3), amp=10)
    x = torch.from_numpy(ref).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(test).permute(2, 0, 1)[None].double()
    assert M.ssim(ref, test) == pytest.approx(float(pytorch_msssim.ssim(x, y, data_range=255, win_size=7)),
                                              abs=1e-12)


def test_bpp_from_bytes() -> None:
    assert M.bpp(1000, 2, 100, 50) == pytest.approx(0.8)
    assert M.bpp(0, 1, 1, 1) == 0.0
    with pytest.raises(InputError):
        M.bpp(10, 0, 10, 10)


def test_shape_mismatch_is_input_error() -> None:
    with pytest.raises(InputError, match="shapes"):
        M.psnr(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(InputError, match="T, H, W, C"):
        M.video_psnr(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)))


def test_bd_rate_of_a_curve_needing_a_fifth_fewer_bits_is_minus_20_percent() -> None:
    from fieldpress.metrics import bd_rate

    rates, psnrs = [0.2, 0.4, 0.8, 1.6], [28.0, 31.0, 34.0, 37.0]
    assert bd_rate(rates, psnrs, [r * 0.8 for r in rates], psnrs) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(rates, psnrs, rates[:3], psnrs[:3]) is None  # fewer than 4 points
    assert bd_rate(rates, psnrs, rates, [p + 20 for p in psnrs]) is None  # no overlap

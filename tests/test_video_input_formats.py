"""Video inputs a phone or a grading suite makes: a 10-bit clip (rounded to 8 bits, with a warning
that says so) and a variable-frame-rate clip (every frame kept, in order, timed at the average rate).
The clips are made at run time with the ffmpeg bundled in imageio-ffmpeg, into tmp_path."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from fieldpress.metrics import psnr
from fieldpress.video.io import VideoWarning, read_video

# presentation times of 12 frames: 4 at 25 fps, 4 at 5 fps, 4 at 25 fps again (multiples of 1/25 s)
VFR_PTS = "if(lt(N,4),N*0.04,if(lt(N,8),0.16+(N-4)*0.2,0.96+(N-8)*0.04))"
VFR_AVERAGE = 11 / 1.08  # 11 intervals over 1.08 s


def _ffmpeg(raw: bytes, pix_in: str, size: tuple[int, int], args: list[str], out: Path) -> Path:
    """Encode raw frames with the bundled ffmpeg (input at 25 fps)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", pix_in,
           "-s", f"{size[0]}x{size[1]}", "-r", "25", "-i", "-", *args, str(out)]
    subprocess.run(cmd, input=raw, check=True, timeout=120)
    return out


def _ten_bit_frames(n: int = 3) -> np.ndarray:
    """(n, 32, 32, 3) uint16 frames holding every 10-bit value in each channel."""
    v = np.arange(1024, dtype=np.uint16).reshape(32, 32)
    return np.stack([np.stack([np.roll(v, 7 * i), v[::-1], v.T], -1) for i in range(n)])


def _read(path: Path, **kwargs: object) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip = read_video(path, **kwargs)  # type: ignore[arg-type]
    return clip, [str(w.message) for w in caught if issubclass(w.category, VideoWarning)]


def test_ten_bit_rgb_is_rounded_to_nearest_with_a_warning(tmp_path: Path) -> None:
    ten = _ten_bit_frames()
    path = _ffmpeg((ten << 6).tobytes(), "rgb48le", (32, 32), ["-c:v", "ffv1", "-pix_fmt", "gbrp10le"],
                   tmp_path / "ten.mkv")
    clip, said = _read(path)
    assert clip.frames.dtype == np.uint8 and clip.count == 3  # type: ignore[attr-defined]
    expect = np.round(ten.astype(np.float64) * 255 / 1023).astype(np.uint8)
    assert np.array_equal(clip.frames, expect)  # type: ignore[attr-defined]
    assert any("10-bit" in m and "8 bits" in m and "gbrp10le" in m for m in said), said
    half, _ = _read(path, resize=(16, 16))
    assert half.frames.shape == (3, 16, 16, 3)  # type: ignore[attr-defined]
    assert psnr(half.frames, expect[:, ::2, ::2]) > 25  # type: ignore[attr-defined]


def test_ten_bit_yuv_h264_reads_close_to_its_source_with_a_warning(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 1024, (3, 6, 8, 3)), np.ones((1, 8, 8, 1))).astype(np.uint16)
    path = _ffmpeg((base << 6).tobytes(), "rgb48le", (64, 48),
                   ["-c:v", "libx264", "-pix_fmt", "yuv444p10le", "-qp", "0"], tmp_path / "ten.mp4")
    clip, said = _read(path)
    source8 = np.round(base.astype(np.float64) * 255 / 1023).astype(np.uint8)
    assert clip.frames.shape == source8.shape  # type: ignore[attr-defined]
    assert psnr(source8, clip.frames) > 40  # type: ignore[attr-defined]
    assert any("yuv444p10le is 10-bit" in m for m in said), said


def _gray_frames(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    levels = (np.arange(n) * 20 + 10).astype(np.uint8)
    return levels, np.broadcast_to(levels[:, None, None, None], (n, 32, 48, 3)).copy()


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_keeps_every_frame_in_order(tmp_path: Path, suffix: str) -> None:
    levels, frames = _gray_frames()
    path = _ffmpeg(frames.tobytes(), "rgb24", (48, 32),
                   ["-vf", f"setpts='{VFR_PTS}/TB'", "-fps_mode", "vfr", "-c:v", "libx264", "-bf", "2",
                    "-g", "12", "-crf", "12", "-pix_fmt", "yuv420p"], tmp_path / f"vfr{suffix}")
    clip, said = _read(path)
    means = clip.frames.reshape(clip.count, -1).mean(1)  # type: ignore[attr-defined]
    assert clip.count == len(levels)  # type: ignore[attr-defined]
    np.testing.assert_allclose(means, levels, atol=3)  # each frame where it belongs (20 levels apart)
    assert clip.fps == pytest.approx(VFR_AVERAGE, rel=1e-6)  # type: ignore[attr-defined]
    assert any("variable frame rate" in m for m in said), said
    part, _ = _read(path, frames=(3, 9))
    np.testing.assert_allclose(part.frames.reshape(6, -1).mean(1), levels[3:9], atol=3)  # type: ignore


def test_constant_frame_rate_is_not_called_variable(tmp_path: Path) -> None:
    levels, frames = _gray_frames()
    path = _ffmpeg(frames.tobytes(), "rgb24", (48, 32),
                   ["-c:v", "libx264", "-bf", "2", "-crf", "12", "-pix_fmt", "yuv420p"], tmp_path / "cfr.mkv")
    clip, said = _read(path)
    assert clip.count == len(levels) and clip.fps == pytest.approx(25.0)  # type: ignore[attr-defined]
    assert not any("variable" in m for m in said), said

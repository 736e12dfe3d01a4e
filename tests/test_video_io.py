"""Video IO through PyAV: reading ranges/resize/crop, writing mp4 (lossless round trip) and PNG folders,
and one-line errors for things that are not videos."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file
from test_video_models import tiny_clip

from fieldpress.errors import InputError
from fieldpress.video.io import VideoWarning, is_folder_output, read_video, write_video


@pytest.fixture(scope="module")
def lossless_mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    frames = tiny_clip(6, 37, 53)
    path = tmp_path_factory.mktemp("io") / "tiny.mp4"
    write_video(frames, path, 12.0, lossless=True)
    return path, frames


def test_lossless_mp4_round_trips_bit_exactly(lossless_mp4: tuple[Path, np.ndarray]) -> None:
    path, frames = lossless_mp4
    clip = read_video(path)
    assert clip.frames.dtype == np.uint8
    assert np.array_equal(clip.frames, frames)
    assert abs(clip.fps - 12.0) < 1e-6


def test_frame_range_resize_and_crop(lossless_mp4: tuple[Path, np.ndarray]) -> None:
    path, frames = lossless_mp4
    part = read_video(path, frames=(2, 5))
    assert part.count == 3 and part.frame_start == 2
    assert np.array_equal(part.frames, frames[2:5])
    crop = read_video(path, crop=(20, 10, 3, 4))
    assert np.array_equal(crop.frames, frames[:, 4:14, 3:23])
    resized = read_video(path, frames=(0, 2), resize=(26, 18), crop=(20, 10, None, None))
    assert resized.frames.shape == (2, 10, 20, 3)
    with pytest.raises(InputError):
        read_video(path, crop=(60, 10, None, None))


def test_png_folder_output_is_numbered_by_source_frame(tmp_path: Path) -> None:
    frames = tiny_clip(3, 16, 24)
    out = tmp_path / "frames"
    assert is_folder_output(out) and is_folder_output(f"{tmp_path}/x/") and not is_folder_output("a.mp4")
    write_video(frames, out, 10.0, first_index=5)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["frame_000005.png", "frame_000006.png", "frame_000007.png"]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(out / "frame_000006.png")), frames[1])


def test_lossy_mp4_with_odd_sides(tmp_path: Path) -> None:
    frames = tiny_clip(4, 37, 53)
    write_video(frames, tmp_path / "odd.mp4", 10.0)
    back = read_video(tmp_path / "odd.mp4")
    assert back.frames.shape == frames.shape
    assert np.abs(back.frames.astype(int) - frames.astype(int)).mean() < 6


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 10])
def test_not_a_video_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(InputError):
        read_video(bad)


def test_truncated_mp4_is_an_input_error(lossless_mp4: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = lossless_mp4
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VideoWarning)
        with pytest.raises(InputError):
            read_video(cut)


def test_empty_frame_range_is_an_input_error(lossless_mp4: tuple[Path, np.ndarray]) -> None:
    path, _ = lossless_mp4
    with pytest.raises(InputError, match="selects no frames"):
        read_video(path, frames=(50, 60))


def test_reads_yuv444p_and_warns_about_audio() -> None:
    path = shared_file("video/cockatoo.mp4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip = read_video(path, frames=(0, 2), resize=(160, 90))
    assert clip.frames.shape == (2, 90, 160, 3)
    assert clip.source["pix_fmt"] == "yuv444p"
    assert any(issubclass(w.category, VideoWarning) and "audio" in str(w.message) for w in caught)

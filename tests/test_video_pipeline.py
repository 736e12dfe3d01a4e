"""The video pipeline: compress() returns the file bytes and measurements taken on exactly those bytes;
write() puts them on disk; the header names its codec and version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_video_models import (
    _one_thread_when_busy,  # noqa: F401
    tiny_clip,
)

from fieldpress.codec.container import open_container
from fieldpress.codec.registry import Result
from fieldpress.video.codec import open_video
from fieldpress.video.fit import FitOptions
from fieldpress.video.io import VideoClip
from fieldpress.video.pipeline import compress, write


@pytest.mark.parametrize("model", ["hnerv", "nerv"])
def test_compress_measures_the_bytes_it_returns(tmp_path: Path, model: str) -> None:
    clip = VideoClip(tiny_clip(4, 32, 48), fps=10.0, source={"file": "synthetic"})
    out = tmp_path / "p.fpv"
    result = compress(clip, FitOptions(model=model, size=40_000, epochs=1), torch.device("cpu"), output=out,
                      show_progress=False, input="synthetic")
    assert isinstance(result, Result) and result.codec.name == model and result.input == "synthetic"
    for key in ("psnr", "psnr_frame_mean", "ms_ssim", "bpp", "psnr_before_quant", "params", "epochs_done"):
        assert key in result.metrics
    assert result.metrics["bpp"] == pytest.approx(result.bytes * 8 / (4 * 32 * 48), rel=1e-4)
    assert not out.exists() and Path(f"{out}.ckpt").exists()
    assert write(result, out) == result.bytes and out.read_bytes() == result.data
    assert not Path(f"{out}.ckpt").exists()
    header = open_container(out).header
    assert (header["codec"], header["codec_version"]) == (model, 2)
    assert ("side_info" in header) == (model == "hnerv")
    from fieldpress.video.fit import quality

    decoded = open_video(out).decode()
    assert quality(clip.frames, decoded)["psnr"] == result.metrics["psnr"]
    assert np.array_equal(decoded[1:3], open_video(out).decode(1, 3))


def test_the_same_seed_gives_the_same_bytes() -> None:
    clip = VideoClip(tiny_clip(3, 32, 48), fps=10.0, source={})
    opts = FitOptions(model="nerv", size=40_000, epochs=1, seed=3)
    first, again = (compress(clip, opts, torch.device("cpu"), show_progress=False) for _ in range(2))
    assert first.data == again.data

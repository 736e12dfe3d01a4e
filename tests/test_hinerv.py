"""fit-video --model hinerv: patches equal the full frame on the same weights, the file decodes to the
encoder's reconstruction bit for bit, random access by frame, the patch source, bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_video_models import tiny_clip

from fieldpress.cli import run_command
from fieldpress.codec.container import open_container
from fieldpress.video.cli import fit_video_command
from fieldpress.video.codec import open_video
from fieldpress.video.data import ClipSource
from fieldpress.video.fit import FitOptions
from fieldpress.video.io import VideoClip, write_video
from fieldpress.video.models import ModulationSpec, build_model, config_for
from fieldpress.video.models.hinerv import PatchSource, patch_starts, source_span, upsample_axis
from fieldpress.video.pipeline import compress, render_all
from tests.helpers.refusals import assert_refused


@pytest.mark.parametrize("cam", [False, True])
def test_patches_equal_the_full_frame_on_the_same_weights(cam: bool) -> None:
    torch.manual_seed(0)
    mod = ModulationSpec("cam", 4) if cam else ModulationSpec()
    cfg = config_for("hinerv", 30, 45, 3, 8000, modulation=mod, patch=16)
    model = build_model("hinerv", cfg).double().eval()
    source = ClipSource(tiny_clip(3, 30, 45))
    patches = model.training_source(source)
    with torch.no_grad():
        full = model({"index": torch.arange(3), "t": torch.arange(3) / 3.0})
        batch = patches.batch(torch.arange(len(patches)))
        batch["t"] = batch["t"].double()
        got = model(batch)
    want = torch.stack([full[f, :, y0:y1, x0:x1]
                        for f, (y0, y1, x0, x1) in zip(batch["index"].tolist(), batch["patch"].tolist())])
    assert full.shape == (3, 3, 30, 45) and got.shape == (len(patches), 3, 16, 16)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_the_patch_source_covers_every_pixel_with_equal_overlapping_patches() -> None:
    frames = tiny_clip(2, 30, 45)
    src = PatchSource(ClipSource(frames), 16)
    assert patch_starts(45, 16) == [0, 14, 29] and patch_starts(30, 16) == [0, 14]
    assert len(src) == 2 * 6
    batch = src.batch(torch.arange(len(src)))
    seen = np.zeros((2, 30, 45), bool)
    for f, crop, (y0, y1, x0, x1) in zip(batch["index"].tolist(), batch["frames"], batch["patch"].tolist()):
        assert np.array_equal(crop.permute(1, 2, 0).numpy(), frames[f, y0:y1, x0:x1])
        seen[f, y0:y1, x0:x1] = True
    assert seen.all()


def test_the_upsampling_reads_only_its_source_span_and_matches_bilinear() -> None:
    x = torch.randn(1, 2, 7, 5, dtype=torch.float64)
    full = upsample_axis(upsample_axis(x, 2, (0, 7), (0, 21), 3, 7), 3, (0, 5), (0, 15), 3, 5)
    ref = torch.nn.functional.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, ref)
    for out in [(0, 4), (5, 11), (17, 21)]:
        lo, hi = source_span(out, 3, 7)
        part = upsample_axis(x[:, :, lo:hi], 2, (lo, hi), out, 3, 7)
        torch.testing.assert_close(part, upsample_axis(x, 2, (0, 7), (0, 21), 3, 7)[:, :, out[0]:out[1]])


@pytest.fixture(scope="module")
def fitted():  # noqa: ANN201
    clip = VideoClip(tiny_clip(4, 32, 32), fps=10.0, source={"file": "synthetic"})
    opts = FitOptions(model="hinerv", size=12_000, epochs=2, bits=8, patch=16, batch_size=4)
    return clip, compress(clip, opts, torch.device("cpu"), show_progress=False)


def test_the_file_decodes_to_the_encoders_reconstruction_bit_for_bit(fitted) -> None:  # noqa: ANN001
    clip, res = fitted
    decoded = open_video(res.data).decode()
    assert decoded.shape == (4, 32, 32, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, render_all(res.model, ClipSource(clip.frames), torch.device("cpu")))
    header = open_container(res.data).header
    assert header["codec"] == "hinerv" and header["config"]["patch"] == 16
    assert res.metrics["bpp"] == pytest.approx(len(res.data) * 8 / (4 * 32 * 32), abs=1e-5)
    assert res.metrics["steps"] == 2 * 4  # 2 epochs of 4 frames x 4 patches, batch 4


def test_random_access_by_frame_equals_the_full_decode(fitted) -> None:  # noqa: ANN001
    _, res = fitted
    full = open_video(res.data).decode()
    for start in range(3):
        assert np.array_equal(open_video(res.data).decode(start, start + 2), full[start:start + 2])


def test_a_header_with_mismatched_depths_cannot_be_built() -> None:
    cfg = config_for("hinerv", 32, 32, 4, 12_000)
    with pytest.raises(ValueError, match="depth"):
        build_model("hinerv", type(cfg)(**{**cfg.__dict__, "depths": (1, 1)}))


@pytest.mark.parametrize("flags", [["--patch", "-1"], ["--model", "hnerv", "--patch", "16"],
                                   ["--size", "100"], ["--lambda", "0"]])
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        flags: list[str]) -> None:
    src = tmp_path / "in.mp4"
    write_video(tiny_clip(2, 16, 16), src, 10.0, lossless=True)
    out = tmp_path / "out.fpv"
    argv = [str(src), "-o", str(out), "--model", "hinerv", "--epochs", "1", *flags]
    assert_refused(fit_video_command, argv, src, out, capsys)


def test_the_hinerv_preview_preset_fits_at_the_clips_size(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.mp4"
    write_video(tiny_clip(2, 24, 40), src, 10.0, lossless=True)
    out = tmp_path / "out.fpv"
    argv = [str(src), "-o", str(out), "--preset", "hinerv-preview", "--size", "9k", "--epochs", "1", "--json"]
    assert run_command(fit_video_command, argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["codec"] == "hinerv" and summary["size"] == "40x24"
    assert summary["bytes"] == out.stat().st_size

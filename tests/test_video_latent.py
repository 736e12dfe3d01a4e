"""fit-video --model latent: the latent-grid video codec (group-by-group latents, previous-frame context):
file round trip, random access by group, reported bytes vs the file, bad flags, and the context's
frame-by-frame evaluation agreeing with the batched one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_video_models import tiny_clip

from fieldpress.cli import run_command
from fieldpress.codec.container import open_container, read_info
from fieldpress.fields.latent import context as image_context
from fieldpress.video.cli import fit_video_command
from fieldpress.video.codec import open_video
from fieldpress.video.fit import FitOptions
from fieldpress.video.io import VideoClip, write_video
from fieldpress.video.latent import context
from fieldpress.video.latent.config import VideoLatentConfig
from fieldpress.video.latent.method import compress_latent
from tests.helpers.reads import record_reads
from tests.helpers.refusals import assert_refused

CONFIG = VideoLatentConfig(n_levels=4, group=3, time_stride=2, arm_hidden=8, synth_hidden=8)
KEY_CONFIG = replace(CONFIG, reference="key", p_first_level=1)  # key frame + warped later frames


@pytest.fixture(scope="module", params=[CONFIG, KEY_CONFIG], ids=["no-reference", "key-frame"])
def result(request):  # noqa: ANN001, ANN201
    clip = VideoClip(tiny_clip(5, 20, 24), fps=10.0, source={"file": "synthetic"})
    opts = FitOptions(model="latent", epochs=12, quality=5, size=None)
    return clip, compress_latent(clip, opts, torch.device("cpu"), show_progress=False, config=request.param)


def test_the_file_decodes_to_the_encoders_reconstruction_bit_for_bit(result) -> None:  # noqa: ANN001
    clip, res = result
    decoded = open_video(res.data).decode()
    assert decoded.shape == (5, 20, 24, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, res.reconstruction)
    assert res.metrics["groups"] == 2 and res.metrics["steps_per_group"] == [12, 12]
    header = open_container(res.data).header
    assert [g["frames"] for g in header["groups"]] == [3, 2] and header["config"]["time_stride"] == 2


def test_random_access_by_group_equals_the_full_decode_and_reads_only_its_group(result) -> None:  # noqa: ANN001
    _, res = result
    full = open_video(res.data).decode()
    for start, end in [(0, 1), (1, 4), (3, 5), (4, 5), (2, 3)]:
        dec = open_video(res.data)
        reads = record_reads(dec.container)
        part = dec.decode(start, end)
        assert np.array_equal(part, full[start:end])
        touched = {name.split("/")[0] for name in reads}
        assert touched == {f"g{g:06d}" for g in range(start // 3, (end - 1) // 3 + 1)}


def test_reported_bits_match_the_file(result, tmp_path: Path) -> None:  # noqa: ANN001
    clip, res = result
    assert res.metrics["bpp"] == pytest.approx(len(res.data) * 8 / (5 * 20 * 24), abs=1e-5)
    header = open_container(res.data).header
    (tmp_path / "f.fpv").write_bytes(res.data)
    lengths = {s.name: s.length for s in read_info(tmp_path / "f.fpv").streams}
    for g, entry in enumerate(header["groups"]):
        assert entry["latent_bytes"] == lengths[f"g{g:06d}/latents"]
        assert entry["weight_bytes"] == lengths[f"g{g:06d}/weights"]
        words = open_container(res.data).array(f"g{g:06d}/latents")
        # the range coder spends what the integer tables say, plus at most two words of flushing
        assert entry["latent_bits"] <= words.size * 32 <= entry["latent_bits"] + 64 + 32
    assert res.metrics["latent_bytes"] + res.metrics["weight_bytes"] < len(res.data)


def test_the_frame_by_frame_context_is_the_batched_context() -> None:
    g = torch.Generator().manual_seed(0)
    vol = torch.randint(-5, 6, (4, 9, 11), generator=g).double()
    parent = torch.randint(-5, 6, (4, 5, 6), generator=g).double()
    for anchors in (True, False):
        batched = context.pass_inputs(vol, parent, anchors)
        n = batched.shape[0] // 4
        for t in range(4):
            rows = batched[t * n:(t + 1) * n]
            assert torch.equal(rows, context.frame_inputs(vol, parent, t, anchors))
            spatial = image_context.pass_inputs(vol[t], parent[t], anchors)
            assert torch.equal(rows[:, :spatial.shape[1]], spatial)
            prev = vol[t - 1] if t else torch.zeros_like(vol[0])
            assert torch.equal(rows[:, spatial.shape[1]], context.gather(prev[None], anchors))


@pytest.mark.parametrize("flags", [["--lambda", "0"], ["--lambda", "-1"], ["--quality", "9"],
                                   ["--quality", "2", "--lambda", "0.01"], ["--minutes", "0"],
                                   ["--target-bpp", "-1"]])
def test_bad_rate_flags_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             flags: list[str]) -> None:
    src = tmp_path / "in.mp4"
    write_video(tiny_clip(2, 16, 16), src, 10.0, lossless=True)
    out = tmp_path / "out.fpv"
    argv = [str(src), "-o", str(out), "--model", "latent", "--epochs", "2", *flags]
    assert_refused(fit_video_command, argv, src, out, capsys)


def test_a_bad_lambda_is_refused_for_a_weight_model(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # weight models train the rate too since #14 (tests/test_video_rd.py); a bad lambda is still refused
    src = tmp_path / "in.mp4"
    write_video(tiny_clip(2, 16, 16), src, 10.0, lossless=True)
    argv = [str(src), "-o", str(tmp_path / "o.fpv"), "--model", "hnerv", "--lambda", "0"]
    assert run_command(fit_video_command, argv) == 2
    assert "lambda" in capsys.readouterr().err and not (tmp_path / "o.fpv").exists()


def test_fit_video_writes_a_latent_file_that_info_summarizes(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.mp4"
    write_video(tiny_clip(3, 16, 24), src, 10.0, lossless=True)
    out = tmp_path / "out.fpv"
    argv = [str(src), "-o", str(out), "--model", "latent", "--epochs", "3", "--lambda", "0.01", "--json"]
    assert run_command(fit_video_command, argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["codec"] == "latent" and summary["bytes"] == out.stat().st_size
    assert summary["lambda"] == 0.01
    from fieldpress.video.latent.declaration import summarize

    facts = summarize(open_container(out).header)
    assert facts["groups"].startswith("1 of 32") and facts["rate split"].startswith("latents ")
    assert facts["frames from"].startswith("the key frame")


def test_latent_frames_blend_linearly_in_time() -> None:
    from fieldpress.video.latent.model import LatentGroupModel

    model = LatentGroupModel(VideoLatentConfig(n_levels=2, group=8, time_stride=4), 7, 4, 4)
    planes = [torch.stack([torch.zeros(*p.shape[1:]), torch.ones(*p.shape[1:])]) for p in model.latents]
    per_frame = model.in_time(planes)[0][:, 0, 0]
    # latent frames sit at times 1.5 and 5.5; frames 0, 1 copy the first, 6 the second
    assert per_frame.tolist() == pytest.approx([0, 0, 0.125, 0.375, 0.625, 0.875, 1.0])


def test_a_step_on_some_frames_synthesizes_those_and_keeps_bits_per_pixel() -> None:
    """A training step may synthesize a subset of the group's frames: those frames exactly as the whole
    group's synthesis gives them, and the bits scaled by the subset's share (bits per synthesized pixel
    stay the group's); the fit draws the subsets from its seed."""
    from fieldpress.fields.latent.fit import FitConfig
    from fieldpress.video.latent.fit import fit_group
    from fieldpress.video.latent.model import LatentGroupModel

    config = VideoLatentConfig(n_levels=2, group=8, time_stride=2, arm_hidden=4, synth_hidden=4)
    model = LatentGroupModel(config, 6, 8, 8)
    with torch.no_grad():
        for p in model.latents:
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 2)
        frames, bits = model(None)
        model.subset = torch.tensor([1, 4])
        some, some_bits = model(None)
    assert torch.allclose(some, frames[[1, 4]], atol=1e-6)
    assert float(some_bits) == pytest.approx(float(bits) * 2 / 6, rel=1e-6)
    target = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    runs = []
    for k in (2, 2, None):
        torch.manual_seed(0)  # the networks' initial weights (fit_clip seeds it once per clip)
        runs.append(fit_group(target, config, 0.01, steps=5, fit=FitConfig(seed=3), frames_per_step=k))
    assert all(r[0].subset is None for r in runs)
    assert torch.equal(runs[0][0].latents[0], runs[1][0].latents[0])
    assert not torch.equal(runs[0][0].latents[0], runs[2][0].latents[0])


def test_a_budget_too_short_for_a_useful_picture_says_so() -> None:
    from fieldpress.video.io import VideoWarning

    clip = VideoClip(tiny_clip(5, 20, 24), fps=10.0, source={"file": "synthetic"})
    opts = FitOptions(model="latent", minutes=0.0005, quality=5, size=None)
    with pytest.warns(VideoWarning, match=r"bought only \d+ steps for the first of 2 group\(s\)"):
        res = compress_latent(clip, opts, torch.device("cpu"), show_progress=False, config=CONFIG)
    assert np.array_equal(open_video(res.data).decode(), res.reconstruction)


def test_the_warp_synthesis_moves_the_key_frame_by_its_flow() -> None:
    """A later frame is the key frame sampled at (x + flow_x, y + flow_y) in pixels, times the mask,
    plus the residual; the borders repeat."""
    from fieldpress.video.latent.model import FLOW_SCALE, WarpSynthesis

    warp = WarpSynthesis(2, 4, 1)
    key = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for layer in warp.head:
            layer.weight.zero_()
        warp.blocks[1].weight.zero_()
        warp.blocks[1].bias.zero_()
        warp.head[1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0 / FLOW_SCALE, 0.0, 50.0]))
        moved = warp(torch.zeros(2, 2, 6, 7), key)
        assert torch.allclose(moved[:, :, :, :-1], key[:, :, :, 1:].expand(2, -1, -1, -1), atol=1e-6)
        assert torch.allclose(moved[:, :, :, -1], key[:, :, :, -1].expand(2, -1, -1), atol=1e-6)
        warp.head[1].bias.copy_(torch.tensor([0.25, 0.0, 0.0, 0.0, 0.0, -50.0]))  # mask 0: residual only
        assert torch.allclose(warp(torch.zeros(1, 2, 6, 7), key)[:, 0], torch.full((1, 6, 7), 0.25))


def test_a_key_frame_group_codes_its_fine_levels_once_and_draws_the_key_in_every_step() -> None:
    from fieldpress.video.latent.model import KEY_FIRST_SHARE, LatentGroupModel

    config = VideoLatentConfig(n_levels=3, group=8, time_stride=2, arm_hidden=4, synth_hidden=4,
                               reference="key", p_first_level=1)
    assert config.latent_frames(7) == 4 and config.latent_frames(1) == 1
    model = LatentGroupModel(config, 7, 8, 8)
    assert [p.shape[0] for p in model.latents] == [1, 4, 4]
    with torch.no_grad():
        for p in model.latents:
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 2)
        frames, bits = model(None)
        for subset in ([0, 2, 5], [3, 6]):
            model.subset = torch.tensor(subset)
            some, some_bits = model(None)
            assert torch.allclose(some, frames[subset], atol=1e-6)
            assert float(some_bits) == pytest.approx(float(bits) * len(subset) / 7, rel=1e-6)
        model.subset = torch.tensor([0])  # the key frame alone: only its latent frames' bits train
        key, key_bits = model(None)
        alone = model.rate_bits([p[:1] for p in model.quantized_planes(None)])
        assert torch.allclose(key, frames[:1], atol=1e-6)
        assert float(key_bits) == pytest.approx(float(alone) / 7, rel=1e-6)
        assert float(alone) < float(bits)
    draw = torch.Generator().manual_seed(0)
    assert model.training_frames(draw, 3, KEY_FIRST_SHARE / 2).tolist() == [0]
    later = model.training_frames(draw, 3, 0.5).tolist()
    assert later[0] == 0 and len(set(later)) == 3 and later == sorted(later) and max(later) < 7
    assert model.training_frames(draw, None, 0.5) is None and model.training_frames(draw, 7, 0.5) is None


def test_a_header_without_a_reference_decodes_as_before_and_bad_references_are_refused() -> None:
    from fieldpress.errors import FormatError, InputError

    old = {k: v for k, v in KEY_CONFIG.to_dict().items() if k not in ("reference", "p_first_level")}
    assert VideoLatentConfig.from_dict(old) == CONFIG
    with pytest.raises(InputError, match="reference"):
        VideoLatentConfig(reference="previous")
    with pytest.raises(InputError, match="p_first_level"):
        VideoLatentConfig(n_levels=3, p_first_level=3, reference="key")
    with pytest.raises(FormatError):
        VideoLatentConfig.from_dict({**KEY_CONFIG.to_dict(), "p_first_level": 9})

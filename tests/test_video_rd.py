"""Rate-distortion training of the frame-wise video INRs (`fieldpress.video.rd`, codec version 3): the
file decodes to exactly what the fit evaluated, its coded bits match the rate model's, frames decode
alone as in a run, lambda buys fewer bits, and the RD flags' bad values exit 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_video_models import (
    _one_thread_when_busy,  # noqa: F401
    tiny_clip,
)

from fieldpress.cli import run_command
from fieldpress.codec.container import encode_container, open_container
from fieldpress.errors import FormatError
from fieldpress.video.cli import fit_video_command
from fieldpress.video.codec import open_video
from fieldpress.video.data import ClipSource, to_uint8
from fieldpress.video.fit import FitOptions
from fieldpress.video.io import VideoClip
from fieldpress.video.pipeline import build_model_for, compress, fit_model
from fieldpress.video.rd import RdVideoModel
from tests.helpers.refusals import assert_refused

H, W, T = 37, 53, 10  # sides that are not multiples of any stride product; 2 embedding chunks


def _clip() -> VideoClip:
    return VideoClip(tiny_clip(T, H, W), fps=10.0, source={"file": "synthetic"})


def _opts(model: str, **kw: object) -> FitOptions:
    return FitOptions(**{"model": model, "size": 40_000, "epochs": 2, "rd_epochs": 3, "quality": 4, **kw})


@pytest.fixture(scope="module", params=["hnerv", "nerv", "nervpp", "hinerv"])
def rd_result(request: pytest.FixtureRequest):  # noqa: ANN201
    return compress(_clip(), _opts(request.param), torch.device("cpu"), show_progress=False)


def test_rd_file_is_version_3_and_coded_bits_match_the_rate_model(rd_result) -> None:  # noqa: ANN001
    m = rd_result.metrics
    header = open_container(rd_result.data).header
    assert header["codec_version"] == 3 and header["weights"]["coder"] == "laplace"
    # what training counted (continuous Laplace on the stored integers) vs the range coder's words
    assert abs(m["payload_bits"] - m["rate_model_bits"]) <= 0.01 * m["rate_model_bits"], m
    assert m["payload_bits"] <= len(rd_result.data) * 8
    assert m["bpp"] == pytest.approx(len(rd_result.data) * 8 / (T * H * W), rel=1e-5)


def test_rd_frames_decode_alone_as_in_a_run(rd_result) -> None:  # noqa: ANN001
    dec = open_video(rd_result.data)
    whole = dec.decode()
    assert whole.shape == (T, H, W, 3)
    assert np.array_equal(open_video(rd_result.data).decode(8, 10), whole[8:10])
    assert np.array_equal(open_video(rd_result.data).decode(3, 4), whole[3:4])


def test_rd_file_decodes_to_what_the_fit_evaluated() -> None:
    clip, opts, device = _clip(), _opts("hnerv"), torch.device("cpu")
    inr = build_model_for(clip, opts)
    wrapper = RdVideoModel(inr, T * H * W, opts.bits, opts.embed_bits)
    source = ClipSource(clip.frames)
    fitted, _ = fit_model(wrapper, source, opts, device, output=None, show_progress=False)
    wrapper = fitted.model.eval()
    assert wrapper.quantizing
    with torch.no_grad():
        expected = np.stack([to_uint8(wrapper(source.batch(torch.tensor([i])))[0]).permute(1, 2, 0).numpy()
                             for i in range(T)])
    result = compress(clip, opts, device, show_progress=False)  # the same seed: the same fit
    assert np.array_equal(open_video(result.data).decode(), expected)


def test_a_larger_lambda_buys_fewer_bits() -> None:
    clip, device = _clip(), torch.device("cpu")
    low = compress(clip, _opts("hnerv", quality=None, lmbda=1e-5, rd_epochs=12), device, show_progress=False)
    high = compress(clip, _opts("hnerv", quality=None, lmbda=1.0, rd_epochs=12), device, show_progress=False)
    assert high.metrics["payload_bits"] < 0.9 * low.metrics["payload_bits"], (low.metrics, high.metrics)


def test_without_rd_flags_the_file_keeps_version_2() -> None:
    result = compress(_clip(), FitOptions(model="nerv", size=40_000, epochs=1), torch.device("cpu"),
                      show_progress=False)
    header = open_container(result.data).header
    assert header["codec_version"] == 2 and "coder" not in header["weights"]


def _rebuilt(data: bytes, drop: str) -> bytes:
    c = open_container(data)
    streams = {n: c.array(n) for n in c.names if n != drop}
    return encode_container("video", c.header, streams)


def test_damaged_rd_files_are_format_errors(rd_result) -> None:  # noqa: ANN001
    for drop in ("w/words", "w/rows"):
        with pytest.raises(FormatError):
            open_video(_rebuilt(rd_result.data, drop)).decode()
    c = open_container(rd_result.data)
    header = json.loads(json.dumps(c.header))
    header["weights"]["tensors"][0][2] = -1.0
    bad = encode_container("video", header, {n: c.array(n) for n in c.names})
    with pytest.raises(FormatError):
        open_video(bad)


def test_rd_side_information_chunks_are_checked() -> None:
    result = compress(_clip(), _opts("hnerv", rd_epochs=1, epochs=1), torch.device("cpu"),
                      show_progress=False)
    with pytest.raises(FormatError):
        open_video(_rebuilt(result.data, "embedding/000001")).decode(8, 9)
    with pytest.raises(FormatError):
        open_video(_rebuilt(result.data, "embedding/rows"))


def test_rd_flags_bad_values_exit_2_with_one_line(tmp_path: Path, small_mp4: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    base = [str(small_mp4), "--model", "hnerv", "--epochs", "1"]
    cases = [
        ["--lambda", "0"], ["--lambda", "-0.5"], ["--lambda", "nan"], ["--quality", "9"],
        ["--target-bpp", "0.0001", "--quality", "3"], ["--target-bpp", "0"], ["--target-bpp", "-1"],
        ["--rd-epochs", "2"], ["--quality", "3", "--rd-epochs", "0"], ["--quality", "3", "--qat-epochs", "1"],
        ["--target-bpp", "0.1", "--size", "40k"],
    ]
    for i, extra in enumerate(cases):
        out = tmp_path / f"o{i}.fpv"
        capsys.readouterr()
        err = assert_refused(fit_video_command, [*base, *extra, "-o", str(out)], small_mp4, out, capsys)
        assert err.startswith("error:") and not Path(f"{out}.ckpt").exists(), (extra, err)


def test_fit_video_with_quality_writes_an_rd_file(tmp_path: Path, small_mp4: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rd.fpv"
    argv = [str(small_mp4), "--model", "nerv", "--size", "40k", "--epochs", "1", "--quality", "2",
            "--rd-epochs", "1", "-o", str(out), "--json"]
    assert run_command(fit_video_command, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["bytes"] == out.stat().st_size and summary["rd_lambda"] == pytest.approx(0.02)
    from fieldpress.codec.container import read_info
    from fieldpress.codec.verify import verify_container

    assert "lambda 0.02" in read_info(out).to_dict()["summary"]["rate trained"]
    verify_container(open_container(out))


def test_rd_with_a_target_bpp_steers_lambda_and_keeps_the_size(tmp_path: Path, small_mp4: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """--rd --target-bpp: the model keeps --size (the target no longer sizes it), lambda starts at the
    ladder's smallest and is steered (a target far below the plain rate raises it); the file says so."""
    out = tmp_path / "steered.fpv"
    argv = [str(small_mp4), "--model", "nerv", "--size", "40k", "--epochs", "1", "--rd", "--target-bpp",
            "0.5", "--rd-epochs", "3", "-o", str(out), "--json"]
    assert run_command(fit_video_command, argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from fieldpress.codec.container import read_info
    from fieldpress.codec.rate_control import QUALITY_LAMBDAS

    assert summary["params"] == pytest.approx(40_000, rel=0.1)
    assert summary["rd_target_bpp"] == 0.5 and summary["rd_lambda"] > min(QUALITY_LAMBDAS.values())
    assert "steered to 0.5 bpp" in read_info(out).to_dict()["summary"]["rate trained"]
    for bad in (["--model", "hnerv", "--rd", "--qat-epochs", "1"],
                ["--model", "latent", "--rd", "--rd-epochs", "2"]):
        bad_out = tmp_path / "bad.fpv"
        err = assert_refused(fit_video_command, [str(small_mp4), "--epochs", "1", *bad, "-o", str(bad_out)],
                             small_mp4, bad_out, capsys)
        assert err.startswith("error:"), (bad, err)


def test_resume_inside_the_rd_stage_reproduces_the_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the 3rd rd step (after the steps and scales were set), then --resume: the same bytes as
    an uninterrupted fit."""
    import signal

    import fieldpress.video.rd as rd

    clip, opts, device = _clip(), _opts("hnerv", epochs=1, rd_epochs=2), torch.device("cpu")
    reference = compress(clip, opts, device, show_progress=False)
    real = rd.rd_loss

    def interrupting(name: str):  # noqa: ANN202
        inner, infos = real(name), []

        def loss_fn(model: torch.nn.Module, batch: dict, info: object) -> tuple:
            infos.append(info)
            if len(infos) == 8:  # 5 fit steps (10 frames, batch 2), then the 3rd rd step
                signal.raise_signal(signal.SIGINT)
            return inner(model, batch, info)

        return loss_fn

    out = tmp_path / "r.fpv"
    monkeypatch.setattr(rd, "rd_loss", interrupting)
    with pytest.raises(KeyboardInterrupt):
        compress(clip, opts, device, output=out, show_progress=False)
    monkeypatch.setattr(rd, "rd_loss", real)
    resumed = compress(clip, opts, device, output=out, resume=True, show_progress=False)
    assert resumed.data == reference.data


def test_prune_then_rd_stores_the_pruned_weights_as_zeros() -> None:
    result = compress(_clip(), _opts("nerv", prune=0.5, prune_epochs=1, rd_epochs=1), torch.device("cpu"),
                      show_progress=False)
    assert result.metrics["epochs_planned"] == {"fit": 2, "prune": 1, "rd": 1}
    state = open_video(result.data).model.state_dict()
    conv = state["blocks.1.conv.weight"]
    assert (conv == 0).float().mean() >= 0.3  # global magnitude pruning: this layer lost a share


def test_a_budget_too_short_for_a_useful_picture_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """--minutes that buy fewer than MIN_USEFUL_EPOCHS fit epochs: a one-line warning with the minutes
    that would buy twice that, and the fit still runs to a file."""
    from fieldpress.engine import probe
    from fieldpress.video.io import VideoWarning

    # a probed step of 0.5 s: the plan's floor of one second buys one epoch whatever this machine's speed
    # (a warm process probed fast enough here for 15 epochs of this tiny clip, and nothing warned)
    monkeypatch.setattr(probe, "seconds_per_step", lambda *a, **k: 0.5)
    opts = FitOptions(model="nerv", size=40_000, epochs=300, minutes=0.001)
    with pytest.warns(VideoWarning, match=r"buys only \d+ fit epoch\(s\) of nerv .* minutes buy 30"):
        result = compress(_clip(), opts, torch.device("cpu"), show_progress=False)
    assert open_video(result.data).decode().shape == (T, H, W, 3)


def test_a_steered_fit_off_its_target_says_so() -> None:
    import warnings

    from fieldpress.video.io import VideoWarning
    from fieldpress.video.pipeline import _warn_if_target_missed

    opts = FitOptions(model="hnerv", rate_trained=True, target_bpp=0.2)
    with pytest.warns(VideoWarning, match=r"file is 0.3 bpp \(lambda ended at 0.01\).*--rd-epochs"):
        _warn_if_target_missed({"bpp": 0.3, "rd_lambda": 0.01}, opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_target_missed({"bpp": 0.21, "rd_lambda": 0.01}, opts)

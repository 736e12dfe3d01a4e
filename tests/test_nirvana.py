"""NIRVANA (fit-video --model nirvana): groups and cuts, random access bit for bit, determinism, resume,
the flags' checks and what `fieldpress info` shows. Tiny synthetic clips (8 frames, 32x32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldpress.cli import info_command, run_command
from fieldpress.codec.container import open_container
from fieldpress.errors import FormatError, InputError
from fieldpress.video.codec import open_video
from fieldpress.video.fit import FitOptions
from fieldpress.video.io import VideoClip
from fieldpress.video.nirvana import method as nirvana_method
from fieldpress.video.nirvana.grouping import plan_groups, scene_cuts

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def synthetic(frames: int = 8, size: int = 32, cut: int | None = None) -> np.ndarray:
    """Smooth moving gradients; from `cut` on, a different scene (checkerboard-like colours)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    a = np.stack([(x * 6 + t * 3) % 256, (y * 5 + t * 2) % 256, ((x + y) * 3) % 256], -1)
    b = np.stack([((x // 4 + y // 4) % 2) * 200 + t, (x * 7) % 256, 255 - (y * 7) % 256], -1)
    if cut is not None:
        a[cut:] = b[cut:]
    return a.astype(np.uint8)


def options(**kw: object) -> FitOptions:
    base = {"model": "nirvana", "epochs": 3, "bits": 8, "group_size": 2, "key_every": 2, "lmbda": 0.01}
    return FitOptions(**{**base, **kw})


def fit(frames: np.ndarray, **kw: object) -> bytes:
    clip = VideoClip(frames, fps=10.0, source={"file": "synthetic"})
    return nirvana_method.compress(clip, options(**kw), CPU, show_progress=False).data


def test_fixed_groups_and_key_interval() -> None:
    groups = plan_groups(10, 3, 2)
    assert [(g.start, g.length, g.key) for g in groups] == [(0, 3, True), (3, 3, False), (6, 3, True),
                                                            (9, 1, False)]


def test_adaptive_grouping_puts_a_boundary_at_a_cut() -> None:
    frames = synthetic(8, cut=5)
    assert scene_cuts(frames) == [5]
    assert scene_cuts(synthetic(8)) == []
    groups = plan_groups(8, 4, 8, scene_cuts(frames))
    assert [(g.start, g.length, g.key, g.reason) for g in groups] == [
        (0, 4, True, "first"), (4, 1, False, ""), (5, 3, True, "cut")]
    data = fit(frames, group_size=4, key_every=8)
    header = open_container(data).header
    assert [5, 3, 1] in header["groups"] and header["fit"]["cuts"] == [5]


def test_random_access_equals_the_full_decode_bit_for_bit() -> None:
    data = fit(synthetic(8), group_size=2, key_every=3)
    full = open_video(data).decode()
    assert full.shape == (8, 32, 32, 3) and full.dtype == np.uint8
    for k in (0, 1, 3, 4):
        assert np.array_equal(open_video(data).decode(k, k + 4), full[k:k + 4])
    dec = open_video(data)
    assert (dec.name, dec.frames, dec.width, dec.height, dec.fps) == ("nirvana", 8, 32, 32, 10.0)


def test_the_same_seed_gives_the_same_file_and_another_seed_another() -> None:
    frames = synthetic(6)
    assert fit(frames, seed=1) == fit(frames, seed=1)
    assert fit(frames, seed=1) != fit(frames, seed=2)


def test_resume_after_an_interruption_writes_the_same_file(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    clip = VideoClip(synthetic(8), fps=10.0, source={})
    whole = nirvana_method.compress(clip, options(), CPU, show_progress=False).data
    out = tmp_path / "c.fpv"
    real, calls = nirvana_method.fit_group, []

    def dying(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(nirvana_method, "fit_group", dying)
    with pytest.raises(KeyboardInterrupt):
        nirvana_method.compress(clip, options(), CPU, output=out, show_progress=False)
    monkeypatch.setattr(nirvana_method, "fit_group", real)
    resumed = nirvana_method.compress(clip, options(), CPU, output=out, resume=True, show_progress=False)
    assert resumed.data == whole
    with pytest.raises(InputError):  # other flags: refused
        nirvana_method.compress(clip, options(lmbda=0.02), CPU, output=out, resume=True, show_progress=False)


@pytest.mark.parametrize("flags, message", [
    (["--group-size", "16"], "larger than the clip"),
    (["--group-size", "0"], "--group-size"),
    (["--key-every", "0"], "--key-every"),
    (["--lambda", "-1"], "lambda"),
    (["--quality", "9"], "quality"),
    (["--bits", "12"], "--bits"),
    (["--minutes", "0"], "--minutes"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                        message: str) -> None:
    from fieldpress.video.cli import fit_video_command
    from fieldpress.video.io import write_video

    src = tmp_path / "clip.mp4"
    write_video(synthetic(6), src, 10.0, lossless=True)
    out = tmp_path / "o.fpv"
    code = run_command(fit_video_command, [str(src), "-o", str(out), "--model", "nirvana", "--epochs", "1",
                                           *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists() and src.stat().st_size > 0


def test_fit_video_writes_a_file_and_info_shows_the_groups(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from fieldpress.video.cli import fit_video_command
    from fieldpress.video.io import write_video

    src = tmp_path / "clip.mp4"
    write_video(synthetic(6), src, 10.0, lossless=True)
    out = tmp_path / "o.fpv"
    assert run_command(fit_video_command, [str(src), "-o", str(out), "--model", "nirvana", "--epochs", "2",
                                           "--group-size", "2", "--key-every", "2", "--quality", "3",
                                           "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bytes"] == out.stat().st_size and summary["groups"] == 3
    assert run_command(info_command, [str(out), "--json", "--verify"]) == 0
    shown = json.loads(capsys.readouterr().out)["summary"]
    assert shown["groups"] == 3 and shown["key groups"] == 2 and shown["key group first frames"] == [0, 4]
    assert set(shown["rate split"]) == {"key_bytes", "residual_bytes"}
    assert shown["steps per group"] == 2 and "steps planned from" not in shown


def test_damaged_headers_are_format_errors() -> None:
    from fieldpress.codec.container import encode_container
    from fieldpress.video.nirvana.codec import NirvanaDecoder

    c = open_container(fit(synthetic(4)))
    streams = c.arrays()
    for change in ({"groups": [[0, 2, 0], [2, 2, 0]]}, {"groups": [[0, 3, 1]]}, {"config": {"height": -1}},
                   {"frames": 0}):
        bad = open_container(encode_container("video", {**c.header, **change}, streams))
        with pytest.raises(FormatError):
            NirvanaDecoder(bad).decode(0, 1)


def test_minutes_plans_the_steps_per_group_within_the_cpu_budget(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fieldpress.engine.budget import stored_budget
    from fieldpress.video.nirvana.fit import MIN_STEPS

    clip = VideoClip(synthetic(8), fps=10.0, source={})
    minutes = 0.1  # 6 CPU-seconds for the whole encode (about 3 are the probe and the reserve)
    result = nirvana_method.compress(clip, options(minutes=minutes, epochs=1), CPU, show_progress=False)
    fit_info = open_container(result.data).header["fit"]
    steps = result.metrics["steps_per_group"]
    assert steps == fit_info["steps"] >= MIN_STEPS and steps != 1  # the budget, not --epochs, set them
    assert fit_info["budget"]["cpu_minutes"] == minutes and fit_info["budget"]["seconds_per_step"] > 0
    # probe, planned fit and coding stay inside the budget (this process's CPU time)
    assert result.metrics["encode_cpu_seconds"] <= minutes * 60, result.metrics
    # an interrupted --minutes fit resumes with the plan its checkpoint holds (no new probe)
    out = tmp_path / "m.fpv"
    real, calls = nirvana_method.fit_group, []

    def dying(*args: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 3:  # after two groups (the probe calls fit.fit_group, not this one)
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(nirvana_method, "fit_group", dying)
    with pytest.raises(KeyboardInterrupt):
        nirvana_method.compress(clip, options(minutes=minutes), CPU, output=out, show_progress=False)
    monkeypatch.setattr(nirvana_method, "fit_group", real)
    plan = stored_budget(out)
    assert plan is not None
    resumed = nirvana_method.compress(clip, options(minutes=minutes), CPU, output=out, resume=True,
                                      show_progress=False)
    assert resumed.metrics["steps_per_group"] == plan.epochs["fit"]

"""`fit-image --model latent --resume`: the checkpointed latent fit writes the same file, byte for byte,
as the code that wrote the golden file (no checkpoints then), whether it checkpoints, resumes from the
middle, or is SIGKILLed and resumed; a `--minutes` budget is planned after the probe, corrected at
three points from the measured speed, and a resume keeps the plan and the corrections made before it."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.engine.checkpoint import checkpoint_dir
from fieldpress.fields.cli import fit_image_command
from fieldpress.fields.latent import fit as latent_fit
from tests.helpers.cli_fit import checkpoint_step, start_fit_image

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "codecs" / "v1-latent" / "latent.fpi"
# the recipe of tests/golden/make_codec_golden.py's latent file (written before checkpoints existed)
GOLDEN_FLAGS = ["--model", "latent", "--steps", "30", "--quality", "5", "--seed", "1", "--threads", "1"]


def _golden_image(path: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "golden"))
    try:
        from make_codec_golden import image_pixels
    finally:
        sys.path.pop(0)
    Image.fromarray(image_pixels()).save(path)
    return path


def _keep_checkpoint_at(monkeypatch: pytest.MonkeyPatch, step: int, copy: Path) -> None:
    """Copy the checkpoint written after `step` steps to `copy` (a kill right after it, in effect)."""
    save = latent_fit._save

    def spy(ck, signature, model, opt, loop, elapsed):  # noqa: ANN001, ANN202
        save(ck, signature, model, opt, loop, elapsed)
        if loop.step == step:
            shutil.copytree(ck.directory, copy)

    monkeypatch.setattr(latent_fit, "_save", spy)


def test_checkpointed_and_resumed_fits_write_the_golden_bytes(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    image = _golden_image(tmp_path / "in.png")
    out, mid = tmp_path / "a.fpi", tmp_path / "mid.ckpt"
    _keep_checkpoint_at(monkeypatch, 14, mid)
    argv = [str(image), "-o", str(out), *GOLDEN_FLAGS, "--checkpoint-every", "7"]
    assert run_command(fit_image_command, argv) == 0
    assert out.read_bytes() == GOLDEN.read_bytes()  # checkpointing changes nothing
    assert json.loads((mid / "meta.json").read_text())["global_step"] == 14
    out.unlink()
    shutil.rmtree(checkpoint_dir(out))
    shutil.copytree(mid, checkpoint_dir(out))
    assert run_command(fit_image_command, [*argv, "--resume"]) == 0
    assert out.read_bytes() == GOLDEN.read_bytes()  # resumed from step 14 of 30


def test_a_minutes_budget_is_planned_corrected_and_kept_by_a_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _golden_image(tmp_path / "in.png")
    out, mid = tmp_path / "m.fpi", tmp_path / "mid.ckpt"
    _keep_checkpoint_at(monkeypatch, 9, mid)  # after the plan (step 8), before any correction
    argv = [str(image), "-o", str(out), "--model", "latent", "--minutes", "0.03", "--threads", "1",
            "--checkpoint-every", "3", "--json"]
    assert run_command(fit_image_command, argv) == 0
    meta = json.loads((mid / "meta.json").read_text())
    plan = meta["budget"]
    assert plan["minutes"] == pytest.approx(0.03) and meta["total"] == plan["epochs"]["fit"] > 9
    assert meta["replans"] == 0 and meta["mark"][0] == 8 and meta["anchor"] == [0, 0.0]
    done = json.loads((checkpoint_dir(out) / "meta.json").read_text())
    assert 1 <= done["replans"] <= len(latent_fit.REPLAN_AT) and done["global_step"] == done["total"]
    out.unlink()
    shutil.rmtree(checkpoint_dir(out))
    shutil.copytree(mid, checkpoint_dir(out))
    assert run_command(fit_image_command, [*argv, "--resume"]) == 0
    final = json.loads((checkpoint_dir(out) / "meta.json").read_text())
    # the resume kept the plan (no new probe) and went on correcting it from the step it resumed at
    assert final["budget"] == plan and 1 <= final["replans"] <= len(latent_fit.REPLAN_AT)
    assert final["global_step"] == final["total"] and final["history"][:9] == meta["history"]
    assert final["anchor"][0] > 9 and 0.0 < final["anchor"][1] < 1.0


def test_a_correction_keeps_the_schedule_continuous_and_fits_the_time_left() -> None:
    loop = latent_fit._Loop(step=40, total=100, history=[], mark=(8, 4.0))
    before = loop.progress()
    assert before == 0.4
    latent_fit.replan(loop, elapsed=20.0, seconds=50.0)  # 0.5 s a step since step 8; 30 s left
    assert loop.total == 40 + 60 and loop.progress() == pytest.approx(before)
    loop.step = 70
    assert loop.progress() == pytest.approx(0.4 + 0.5 * 0.6)
    latent_fit.replan(loop, elapsed=50.0, seconds=50.0)  # over budget: one last step
    assert loop.total == 71 and loop.replans == 2 and loop.mark == (70, 50.0)
    loop.step = 71
    assert loop.progress() == pytest.approx(1.0)


def test_resume_refuses_other_flags_another_image_and_no_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _golden_image(tmp_path / "in.png")
    out = tmp_path / "x.fpi"
    flags = ["--model", "latent", "--steps", "6", "--threads", "1"]
    assert run_command(fit_image_command, [str(image), "-o", str(out), *flags]) == 0
    capsys.readouterr()
    assert run_command(fit_image_command, [str(image), "-o", str(out), *flags, "--quality", "2",
                                           "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(image)
    assert run_command(fit_image_command, [str(image), "-o", str(out), *flags, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "image_sha256" in err and err.count("\n") == 1
    none = tmp_path / "none.fpi"
    assert run_command(fit_image_command, [str(image), "-o", str(none), *flags, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err and not none.exists()


LATENT_FLAGS = ["--model", "latent", "--steps", "300", "--quality", "4", "--seed", "3", "--threads", "1",
                "--checkpoint-every", "20", "--json"]


def _fit(image: Path, out: Path, *extra: str) -> subprocess.Popen:
    return start_fit_image(image, out, [*LATENT_FLAGS, *extra])


@pytest.mark.slow  # three CLI runs of a 300-step fit of a 56x40 image: about a minute on the shared CPU
def test_sigkill_then_resume_writes_the_same_file(tmp_path: Path) -> None:
    y, x = np.mgrid[0:40, 0:56]
    rng = np.random.default_rng(5)
    pixels = np.stack([x * 4 + rng.integers(0, 30, x.shape), y * 6, (x * y) % 200], -1)
    image = tmp_path / "in.png"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(image)
    reference = _fit(image, tmp_path / "ref.fpi")
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()
    out = tmp_path / "killed.fpi"
    killed = _fit(image, out)
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None and checkpoint_step(out) < 100:
        time.sleep(0.02)
    assert killed.poll() is None, "the fit ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert not out.exists() and 100 <= checkpoint_step(out) < 300
    resumed = _fit(image, out, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    assert out.read_bytes() == (tmp_path / "ref.fpi").read_bytes()
    assert json.loads(resumed.stdout.read())["steps"] == 300

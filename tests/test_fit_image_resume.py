"""`fit-image --resume`: a fit SIGKILLed halfway and resumed writes the same .fpi, byte for byte, as
an uninterrupted run (CPU, one thread); a resume with other flags or another image is refused."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.fields.cli import fit_image_command
from tests.helpers.cli_fit import checkpoint_step, start_fit_image

FLAGS = ["--model", "cam-ffn", "--params", "9k", "--steps", "400", "--checkpoint-every", "40",
         "--seed", "3", "--threads", "1", "--json"]


def _image(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:20, 0:28]
    pixels = np.stack([x * 9, y * 12, (x + y) * 5], axis=-1) + rng.integers(0, 20, (20, 28, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def _fit(image: Path, out: Path, *extra: str) -> subprocess.Popen:
    return start_fit_image(image, out, [*FLAGS, *extra])


@pytest.mark.slow  # four CLI runs of a 400-step fit: about 40 s on the shared CPU
def test_sigkill_then_resume_writes_the_same_file(tmp_path: Path) -> None:
    image = _image(tmp_path / "in.png")
    reference = _fit(image, tmp_path / "ref.fpi")
    out = tmp_path / "killed.fpi"
    killed = _fit(image, out)
    deadline = time.time() + 240
    while time.time() < deadline and killed.poll() is None and checkpoint_step(out) < 120:
        time.sleep(0.02)
    assert killed.poll() is None, "the fit ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert not out.exists() and 120 <= checkpoint_step(out) < 400
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    resumed = _fit(image, out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert out.read_bytes() == (tmp_path / "ref.fpi").read_bytes()
    log = [json.loads(line) for line in (tmp_path / "killed.fpi.log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r.get("event") == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_resume_refuses_other_flags_and_another_image(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    image = _image(tmp_path / "in.png")
    out = tmp_path / "x.fpi"
    flags = ["--model", "cam-ffn", "--params", "9k", "--steps", "20", "--checkpoint-every", "5",
             "--threads", "1"]
    assert run_command(fit_image_command, [str(image), "-o", str(out), *flags]) == 0
    assert run_command(fit_image_command, [str(image), "-o", str(out), *flags, "--resume"]) == 0
    capsys.readouterr()
    args = [str(image), "-o", str(out), *flags]
    assert run_command(fit_image_command, [*args, "--bits", "8", "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    _image(image, seed=1)
    assert run_command(fit_image_command, [str(image), "-o", str(out), *flags, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "image_sha256" in err and err.count("\n") == 1
    none = tmp_path / "none.fpi"
    assert run_command(fit_image_command, [str(image), "-o", str(none), *flags, "--resume"]) == 2

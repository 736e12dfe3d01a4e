"""`compress-splat --preset max --resume`: the recovery fine-tune and the SH distillation checkpoint
beside the output; a run SIGKILLed inside a fine-tune and resumed writes the same .fpg, byte for byte,
as an uninterrupted run (CPU, one thread); --resume without a checkpoint or with other flags is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fieldpress.cli import run_command
from fieldpress.engine.checkpoint import checkpoint_dir
from fieldpress.scenes import save_scene
from fieldpress.scenes.lightgaussian.cli import compress_splat_command
from fieldpress.scenes.synthetic import synthetic_scene

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "max", "--finetune-steps", "16", "--checkpoint-every", "2", "--no-eval", "--json"]


def _scene(tmp_path: Path) -> Path:
    path = tmp_path / "in.ply"
    save_scene(synthetic_scene(200, sh_degree=2, seed=0), path)
    return path


def _run(scene: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fieldpress", "compress-splat", str(scene), "-o", str(out),
                             *FLAGS, *extra], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _step(out: Path, stage: str) -> int:
    try:
        meta = checkpoint_dir(Path(f"{out}.{stage}")) / "meta.json"
        return int(json.loads(meta.read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow  # four CLI runs with two fine-tunes each: a minute or more on the shared CPU
def test_sigkill_inside_the_fine_tune_then_resume_writes_the_same_file(tmp_path: Path) -> None:
    scene = _scene(tmp_path)
    reference = _run(scene, tmp_path / "ref.fpg")
    out = tmp_path / "killed.fpg"
    killed = _run(scene, out)
    deadline = time.time() + 400
    while time.time() < deadline and killed.poll() is None and _step(out, "recover") < 6:
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert not out.exists() and 6 <= _step(out, "recover") < 16
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()
    resumed = _run(scene, out, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    assert out.read_bytes() == (tmp_path / "ref.fpg").read_bytes()


@pytest.mark.slow  # three in-process max-preset runs: about 90 s on the shared CPU
def test_resume_without_checkpoint_or_with_other_flags_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = _scene(tmp_path)
    out = tmp_path / "x.fpg"
    flags = ["--preset", "max", "--finetune-steps", "2", "--no-eval"]
    assert run_command(compress_splat_command, [str(scene), "-o", str(out), *flags, "--resume"]) == 2
    assert "no fine-tune checkpoint" in capsys.readouterr().err
    assert run_command(compress_splat_command, [str(scene), "-o", str(out), *flags]) == 0
    assert checkpoint_dir(Path(f"{out}.recover")).is_dir()
    assert run_command(compress_splat_command, [str(scene), "-o", str(out), *flags, "--resume"]) == 0
    capsys.readouterr()
    assert run_command(compress_splat_command, [str(scene), "-o", str(out), *flags, "--seed", "1",
                                                "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and err.count("\n") == 1

"""Checkpoints and exact resume: SIGKILL halfway then resume equals an uninterrupted run bit for bit
on the CPU; Ctrl-C checkpoints then raises; resume refuses changed flags and damaged checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fieldpress.engine import FitConfig, Fitter, PruneOptions, QatOptions, Stage
from fieldpress.engine.checkpoint import checkpoint_dir, load_checkpoint
from fieldpress.errors import ResumeError
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture
from tests.helpers.tiny_fit import Points, make_loss, make_model, run

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "tiny_fit.py"


def _helper(output: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HELPER), str(output), *extra], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max {float((a[k] - b[k]).abs().max()):.3g})"


def test_sigkill_then_resume_is_bitwise_equal(tmp_path: Path) -> None:
    reference = run(tmp_path / "full.fpi").state_dict()  # uninterrupted, in this process (one thread too)

    out = tmp_path / "killed.fpi"
    proc = _helper(out, "--sleep", "0.02")
    meta_path = checkpoint_dir(out) / "meta.json"
    deadline = time.time() + 120
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if meta_path.is_file():
            try:
                step = json.loads(meta_path.read_text())["global_step"]
            except (json.JSONDecodeError, KeyError, OSError):
                step = 0
            if step >= 20:  # of 64 steps: killed well before the end
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the fit ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.fpi.weights.safetensors").exists()

    resumed = _helper(out, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()
    _assert_same(reference, load_file(str(tmp_path / "killed.fpi.weights.safetensors")))
    log = [json.loads(line) for line in (tmp_path / "killed.fpi.log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["event"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) == 8  # one line per epoch, no repeats


def test_ctrl_c_checkpoints_then_raises_and_resumes_exactly(tmp_path: Path) -> None:
    reference = run(tmp_path / "ref.fpi").state_dict()

    calls = {"n": 0}
    plain = make_loss()

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == 13:
            signal.raise_signal(signal.SIGINT)  # as a Ctrl-C in the middle of a step
        return plain(model, batch)

    out = tmp_path / "int.fpi"
    model = make_model(dropout=0.1)
    config = FitConfig(batch_size=8, seed=7, checkpoint_every_s=3600, checkpoint_every_steps=5, grad_clip=1.0)
    stages = [Stage("fit", 6, 1e-2, warmup=0.2), Stage("fit", 2, 2e-3, schedule="constant")]
    with pytest.raises(KeyboardInterrupt):
        Fitter(model, Points(), loss_fn, config, stages, output=out, signature={"epochs": 6, "batch": 8},
               show_progress=False).run()
    _, meta = load_checkpoint(checkpoint_dir(out))
    assert meta["global_step"] == 13  # the step in flight finished, then the checkpoint was written
    resumed = run(out, resume=True).state_dict()
    _assert_same(reference, resumed)


def test_resume_refuses_changed_flags(tmp_path: Path) -> None:
    out = tmp_path / "a.fpi"
    run(out, epochs=1)
    with pytest.raises(ResumeError, match="epochs"):
        run(out, epochs=2, resume=True)


def test_resume_refuses_missing_and_damaged_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "b.fpi"
    with pytest.raises(ResumeError, match="no checkpoint"):
        run(out, epochs=1, resume=True)
    run(out, epochs=1)
    state = checkpoint_dir(out) / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(ResumeError, match="damaged"):
        run(out, epochs=1, resume=True)
    (checkpoint_dir(out) / "meta.json").write_text("{not json")
    with pytest.raises(ResumeError, match="damaged"):
        run(out, epochs=1, resume=True)


def test_resume_of_a_finished_fit_returns_the_same_weights(tmp_path: Path) -> None:
    out = tmp_path / "c.fpi"
    first = run(out, epochs=1).state_dict()
    again = run(out, epochs=1, resume=True).state_dict()
    _assert_same(first, again)


def test_checkpoint_holds_no_pickle(tmp_path: Path) -> None:
    out = tmp_path / "d.fpi"
    run(out, epochs=1)
    names = sorted(p.name for p in checkpoint_dir(out).iterdir())
    assert names == ["meta.json", "state.safetensors"]
    tensors = load_file(str(checkpoint_dir(out) / "state.safetensors"))
    assert any(k.startswith("rng.") and v.dtype == torch.uint8 for k, v in tensors.items())
    json.loads((checkpoint_dir(out) / "meta.json").read_text())


PQ_STAGES = [Stage("fit", 2, 1e-2), Stage("prune", 2, 2e-3, options=PruneOptions(0.4)),
             Stage("qat", 2, 1e-3, options=QatOptions(bits=6))]


@pytest.mark.parametrize("at_call", [20, 36])  # 16 steps per stage pair: 20 is in prune, 36 in QAT
def test_resume_inside_prune_and_qat_stages_is_exact(tmp_path: Path, at_call: int) -> None:
    reference = run(tmp_path / "ref.fpi", stages=PQ_STAGES, every_steps=None).state_dict()
    calls = {"n": 0}
    plain = make_loss()

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            signal.raise_signal(signal.SIGINT)
        return plain(model, batch)

    out = tmp_path / "pq.fpi"
    config = FitConfig(batch_size=8, seed=7, checkpoint_every_s=3600, grad_clip=1.0)
    with pytest.raises(KeyboardInterrupt):
        Fitter(make_model(dropout=0.1), Points(), loss_fn, config, PQ_STAGES, output=out,
               signature={"epochs": 6, "batch": 8}, show_progress=False).run()
    _, meta = load_checkpoint(checkpoint_dir(out))
    assert meta["position"]["stage"] == (1 if at_call == 20 else 2) and meta["position"]["begun"]
    resumed = run(out, resume=True, stages=PQ_STAGES, every_steps=None).state_dict()
    _assert_same(reference, resumed)


def test_checkpoint_swap_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    from fieldpress.engine.checkpoint import find_checkpoint, save_checkpoint

    ck = tmp_path / "x.fpi.ckpt"
    save_checkpoint(ck, {"a": torch.arange(3)}, {"step": 1})
    save_checkpoint(ck, {"a": torch.arange(4)}, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fpi.ckpt"]
    ck.rename(tmp_path / "x.fpi.ckpt.old")  # as if killed between the two renames
    (tmp_path / ".x.fpi.ckpt.abc.tmp").mkdir()  # and a half-written temporary folder
    assert find_checkpoint(ck) == tmp_path / "x.fpi.ckpt.old"
    tensors, meta = load_checkpoint(ck)
    assert meta["step"] == 2 and torch.equal(tensors["a"], torch.arange(4))
    # killed again, now while the next checkpoint is being renamed into place: `.old` must survive
    real_replace = os.replace

    def killed_at_the_final_rename(src: object, dst: object) -> None:
        if Path(dst) == ck:
            raise KeyboardInterrupt
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", killed_at_the_final_rename)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(ck, {"a": torch.arange(5)}, {"step": 3})
    assert load_checkpoint(ck)[1]["step"] == 2
    save_checkpoint(ck, {"a": torch.arange(5)}, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.fpi.ckpt"]
    assert load_checkpoint(ck)[1]["step"] == 3


RD_STAGES = [Stage("fit", 2, 1e-2), Stage.rd(3, 3e-3, 1e-2, lambda_warmup=0.5)]


def test_resume_inside_an_rd_stage_is_exact(tmp_path: Path) -> None:
    """Ctrl-C during the rd stage's lambda warm-up, then resume: the same weights as an uninterrupted
    run (the rate term, the warm-up and the StepInfo all follow from the checkpointed position)."""
    reference = run(tmp_path / "ref.fpi", stages=RD_STAGES, every_steps=None, rated=True).state_dict()
    infos = []
    plain = make_loss()

    def loss_fn(model, batch, info):  # the three-argument form, interrupted mid-stage
        infos.append(info)
        if len(infos) == 22:  # 16 fit steps, then the 6th of 24 rd steps (lambda at 5/12 of full)
            signal.raise_signal(signal.SIGINT)
        return plain(model, batch)

    out = tmp_path / "rd.fpi"
    config = FitConfig(batch_size=8, seed=7, checkpoint_every_s=3600, grad_clip=1.0)
    with pytest.raises(KeyboardInterrupt):
        Fitter(make_model(dropout=0.1, rated=True), Points(), loss_fn, config, RD_STAGES, output=out,
               signature={"epochs": 6, "batch": 8}, show_progress=False).run()
    assert (infos[-1].kind, infos[-1].stage_step, infos[-1].progress) == ("rd", 5, 5 / 24)
    _, meta = load_checkpoint(checkpoint_dir(out))
    assert meta["position"] == {**meta["position"], "stage": 1, "epoch": 0, "step": 6, "begun": True}
    resumed = run(out, resume=True, stages=RD_STAGES, every_steps=None, rated=True).state_dict()
    _assert_same(reference, resumed)


def test_resumed_fit_reuses_the_budget_plan_without_probing(tmp_path: Path) -> None:
    from fieldpress.engine import plan_budget

    out = tmp_path / "budget.fpi"
    # 30 s usable of the minute; 8 epochs of 8 steps at 0.78125 s take 50 s: scaled by 0.6
    plan = plan_budget(1.0, 0.78125, epochs={"fit": 6, "tune": 2}, steps_per_epoch=8, margin=0.5)
    assert plan.epochs == {"fit": 3, "tune": 1}
    stages = [Stage("fit", plan.epochs["fit"], 1e-2), Stage("fit", plan.epochs["tune"], 1e-3)]
    calls = {"n": 0}
    plain = make_loss()

    def loss_fn(model, batch):
        calls["n"] += 1
        if calls["n"] == 10:
            signal.raise_signal(signal.SIGINT)
        return plain(model, batch)

    config = FitConfig(batch_size=8, seed=7, checkpoint_every_s=3600)
    with pytest.raises(KeyboardInterrupt):
        Fitter(make_model(), Points(), loss_fn, config, stages, output=out, show_progress=False,
               budget=plan).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["budget.fpi.ckpt", "budget.fpi.log.jsonl"]

    def probe() -> float:
        raise AssertionError("resume must reuse the stored plan")

    again = plan_budget(1.0, probe, epochs={"fit": 6, "tune": 2}, steps_per_epoch=8, margin=0.5,
                        resume_from=out)
    assert again == plan
    result = Fitter(make_model(), Points(), make_loss(), config, stages, output=out, show_progress=False,
                    budget=again).run(resume=True)
    assert result.steps == 4 * 8


def test_video_minutes_plan_is_kept_in_the_checkpoint_not_a_sidecar(tmp_path: Path, monkeypatch) -> None:
    """fit_clip --minutes: the planned epochs live in the checkpoint's meta; --resume reuses them
    without probing and rewrites the same file."""
    import fieldpress.engine.probe as probe
    from fieldpress.video.fit import FitOptions
    from fieldpress.video.io import VideoClip
    from fieldpress.video.pipeline import fit_clip
    from tests.test_video_models import tiny_clip

    monkeypatch.setattr(probe, "seconds_per_step", lambda *a, **k: 2.0)  # a slow machine: plan < 3 epochs
    clip = VideoClip(tiny_clip(4, 32, 48), fps=10.0, source={})
    opts = FitOptions(model="nerv", size=40_000, epochs=3, minutes=0.2)
    out = tmp_path / "m.fpv"
    first = fit_clip(clip, out, opts, torch.device("cpu"), show_progress=False, keep_checkpoint=True)
    _, meta = load_checkpoint(checkpoint_dir(out))
    assert meta["budget"]["seconds_per_step"] == 2.0 and meta["budget"]["requested"] == {"fit": 3}
    assert first.metrics["epochs_planned"] == meta["budget"]["epochs"] and meta["budget"]["epochs"]["fit"] < 3
    assert not list(tmp_path.glob("*.plan.json"))
    data = out.read_bytes()

    def no_probe(*args, **kwargs) -> float:
        raise AssertionError("a resumed fit must reuse the stored plan")

    monkeypatch.setattr(probe, "seconds_per_step", no_probe)
    again = fit_clip(clip, out, opts, torch.device("cpu"), resume=True, show_progress=False)
    assert again.metrics["epochs_planned"] == first.metrics["epochs_planned"] and out.read_bytes() == data

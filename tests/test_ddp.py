"""Data parallelism: `torchrun --nproc_per_node=2` on the CPU (gloo) with the same global batch and
step count as one process ends within DDP_TOLERANCE of it (only the gradient summation order differs),
and both ranks hold identical weights."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fieldpress.engine.distributed import DistInfo, from_env
from fieldpress.errors import InputError
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture
from tests.helpers.tiny_fit import make_model, run

REPO = Path(__file__).resolve().parents[1]
DDP_TOLERANCE = 1e-4  # max |w_ddp - w_single| after 2 x 11 + 2 x 11 Adam steps on the tiny MLP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_matches_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.fpi"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(REPO / "tests" / "helpers" / "tiny_fit.py"), str(out), "--epochs", "2", "--dropout", "0",
           "--batch", "6"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = load_file(str(out) + ".weights.safetensors")
    rank1 = load_file(str(out) + ".weights.rank1.safetensors")
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    assert (Path(str(out) + ".ckpt") / "meta.json").is_file()
    assert not Path(str(out) + ".weights.rank1.ckpt").exists()

    torch.set_num_threads(1)
    single = run(tmp_path / "single.fpi", epochs=2, batch=6, dropout=0.0).state_dict()
    worst = max(float((rank0[k] - single[k]).abs().max()) for k in single)
    assert worst < DDP_TOLERANCE, worst
    start = make_model(dropout=0.0).state_dict()
    moved = max(float((rank0[k] - start[k]).abs().max()) for k in start)
    assert moved > 100 * DDP_TOLERANCE  # the fit really moved the weights; the agreement is not trivial
    print(f"max |ddp - single| = {worst:.3g}, max |fit - init| = {moved:.3g}")


def test_env_detection(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert from_env() == (2, 4, 0)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    assert from_env() == (0, 1, 0)
    assert not DistInfo().enabled and DistInfo().is_main
    for env in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "2", "RANK": "-1"}):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            with pytest.raises(InputError):
                from_env()


def test_torchrun_two_nodes_rendezvous_matches_one_process(tmp_path: Path) -> None:
    """The multi-node form: two torchrun launchers (--nnodes=2, one process each) meet through a c10d
    rendezvous on localhost, as two machines would on a cluster (gloo here; NCCL on GPUs)."""
    out = tmp_path / "nodes.fpi"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=fieldpress-test",
           str(REPO / "tests" / "helpers" / "tiny_fit.py"), str(out), "--epochs", "2", "--dropout", "0",
           "--batch", "6"]
    nodes = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    logs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][1][-2000:] + logs[1][1][-2000:]
    rank0 = load_file(str(out) + ".weights.safetensors")
    rank1 = load_file(str(out) + ".weights.rank1.safetensors")  # the other node's process held rank 1
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    torch.set_num_threads(1)
    single = run(tmp_path / "single.fpi", epochs=2, batch=6, dropout=0.0).state_dict()
    worst = max(float((rank0[k] - single[k]).abs().max()) for k in single)
    assert worst < DDP_TOLERANCE, worst
    print(f"two nodes: max |ddp - single| = {worst:.3g}")


def _wait_for(paths: list[Path], proc: subprocess.Popen, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not all(p.exists() for p in paths):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, "the ranks never started"
        time.sleep(0.1)


@pytest.mark.slow  # ~90 s of wall time per case on the loaded 2-core machine (~25 CPU s)
@pytest.mark.parametrize("how", ["terminal", "one-rank", "twice"])
def test_ctrl_c_under_torchrun_ends_every_rank_with_one_checkpoint_and_130(tmp_path: Path, how: str) -> None:
    """Ctrl-C under torchrun: both ranks stop after the same step, rank 0 writes the one checkpoint,
    both exit 130 without a traceback, and `--resume` finishes the fit from there. `terminal`: SIGINT
    to torchrun and both ranks (torchrun forwards it once more); `one-rank`: to rank 1 only (a Ctrl-C
    on one node of a multi-node job); `twice`: two SIGINTs 20 ms apart to each rank (the terminal's
    and torchrun's, made to land inside one step)."""
    out, status = tmp_path / "int.fpi", tmp_path / "status"
    status.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)

    def torchrun(*extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
                str(REPO / "tests" / "helpers" / "tiny_fit.py"), str(out), "--epochs", "40", "--dropout", "0",
                "--batch", "8", "--every", "0", "--status", str(status), *extra]

    proc = subprocess.Popen(torchrun("--sleep", "0.05"), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        started = [status / "started.rank0", status / "started.rank1"]
        _wait_for(started, proc, 180)
        time.sleep(0.5)
        pids = [int(p.read_text()) for p in started]
        if how == "terminal":
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "one-rank":
            os.kill(pids[1], signal.SIGINT)
        else:
            for pid in pids:
                os.kill(pid, signal.SIGINT)
            time.sleep(0.02)
            for pid in pids:
                os.kill(pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert [(status / f"exit.rank{r}").read_text() for r in (0, 1)] == ["130", "130"], err[-3000:]
    assert err.count("interrupted") == 2 and "KeyboardInterrupt" not in err, err[-3000:]
    meta = json.loads((Path(str(out) + ".ckpt") / "meta.json").read_text())
    assert 0 < meta["global_step"] < 40 * 8  # written at the interrupt (no periodic checkpoints here)
    assert not any(p.name.startswith(out.name) and "rank1" in p.name and "ckpt" in p.name
                   for p in tmp_path.iterdir())
    assert not Path(str(out) + ".weights.safetensors").exists()
    if how != "terminal":
        return
    for p in status.iterdir():
        p.unlink()
    done = subprocess.run(torchrun("--resume"), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = load_file(str(out) + ".weights.safetensors")
    rank1 = load_file(str(out) + ".weights.rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    print(f"interrupted at step {meta['global_step']}; torchrun itself exited {proc.returncode}")


@pytest.mark.slow  # ~1-2 min of wall time on the loaded 2-core machine
def test_fit_video_under_torchrun_writes_and_measures_on_rank_0_only(tmp_path: Path) -> None:
    """Both ranks fit; rank 0 alone quantizes, encodes, measures and writes (one summary printed),
    rank 1 waits at the barrier; both exit 0 and the file decodes."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_video_models import tiny_clip

    from fieldpress.video.io import write_video

    clip, out = tmp_path / "clip.mp4", tmp_path / "out.fpv"
    write_video(tiny_clip(6, 37, 53), clip, 10.0, lossless=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "fieldpress", "fit-video",
           str(clip), "-o", str(out), "--model", "hnerv", "--size", "40k", "--epochs", "2",
           "--batch-size", "2", "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, proc.stdout[-3000:]
    assert summaries[0]["bytes"] == out.stat().st_size and 0 < summaries[0]["ms_ssim"] <= 1
    assert not Path(f"{out}.ckpt").exists()
    from fieldpress.video.codec import open_video

    assert open_video(out.read_bytes()).decode().shape == (6, 37, 53, 3)

"""Data parallelism: `torchrun --nproc_per_node=2` on the CPU (gloo) with the same global batch and
step count as one process ends within DDP_TOLERANCE of it (only the gradient summation order differs),
and both ranks hold identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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

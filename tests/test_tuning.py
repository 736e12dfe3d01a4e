"""The launch-configuration tuner of the Triton kernels: choice, caching, skipped candidates, reset."""

from __future__ import annotations

import pytest
import torch

from fieldpress.cuda._triton import tuning
from fieldpress.cuda._triton.tuning import LaunchConfig

A = LaunchConfig.of(BLOCK=128, num_warps=4)
B = LaunchConfig.of(BLOCK=256, num_warps=8, num_stages=2)
C = LaunchConfig.of(BLOCK=64, num_warps=2)


@pytest.fixture(autouse=True)
def _fresh():
    tuning.clear()
    yield
    tuning.clear()


def test_config_kwargs_and_label():
    assert A.kwargs() == {"BLOCK": 128, "num_warps": 4}
    assert B.kwargs() == {"BLOCK": 256, "num_warps": 8, "num_stages": 2}
    assert B.label() == "BLOCK=256,warps=8,stages=2"
    assert LaunchConfig.of(BLOCK_N=1, BLOCK_K=2) == LaunchConfig.of(BLOCK_K=2, BLOCK_N=1)


def test_untuned_runs_take_the_default(monkeypatch):
    launched = []
    cpu = torch.device("cpu")
    assert not tuning.tuning_enabled(cpu)
    assert tuning.choose("k", (1,), [A, B], launched.append, cpu) == A
    assert launched == []  # nothing timed
    monkeypatch.setenv("FIELDPRESS_TUNE", "0")
    assert not tuning.tuning_enabled(torch.device("cuda"))
    monkeypatch.setenv("FIELDPRESS_TUNE", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not tuning.tuning_enabled(torch.device("cuda"))


def test_tuning_picks_the_fastest_skips_failures_resets_and_caches(monkeypatch):
    pytest.importorskip("triton")
    import triton.testing

    cost = {A: 2.0, B: 0.5}
    runs: list[LaunchConfig] = []

    def launch(cfg):
        runs.append(cfg)
        if cfg == C:
            raise RuntimeError("out of resources")

    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: (fn(), cost[runs[-1]])[1])
    monkeypatch.setattr(tuning, "tuning_enabled", lambda device: True)
    resets = []
    dev = torch.device("cuda")
    assert tuning.choose("kern", (3, "x"), [A, C, B, A], launch, dev, lambda: resets.append(1)) == B
    assert runs == [A, C, B] and resets == [1]
    # cached: no more timing, no reset
    assert tuning.choose("kern", (3, "x"), [A, C, B], launch, dev, lambda: resets.append(1)) == B
    assert runs == [A, C, B] and resets == [1]
    report = tuning.tuning_report()
    assert report == [
        {
            "kernel": "kern",
            "key": ["3", "x"],
            "chosen": B.label(),
            "timings_ms": {A.label(): 2.0, B.label(): 0.5},
        }
    ]


def test_no_candidate_runs_is_an_error(monkeypatch):
    pytest.importorskip("triton")
    import triton.testing

    def launch(cfg):
        raise RuntimeError("out of resources")

    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: fn())
    monkeypatch.setattr(tuning, "tuning_enabled", lambda device: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    with pytest.raises(RuntimeError, match="no launch configuration of kern runs on Test GPU"):
        tuning.choose("kern", (), [A, B], launch, torch.device("cuda"))


def test_every_kernel_lists_its_default_first_and_unique_candidates():
    pytest.importorskip("triton")
    from fieldpress.cuda._triton import hashgrid, vq

    assert hashgrid.CONFIGS[0] == LaunchConfig.of(BLOCK=128, num_warps=4)
    for configs in (hashgrid.CONFIGS, *vq.ASSIGN_CONFIGS.values()):
        assert len(set(configs)) == len(configs)
    assert vq.assign_configs("tf32", 48) is vq.assign_configs("tf32x3", 64)
    assert vq.assign_configs("ieee", 100) is vq.ASSIGN_CONFIGS["ieee", 128]

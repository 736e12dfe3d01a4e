"""Launch configurations and a small per-shape tuner for the Triton kernels.

Each kernel lists candidate `LaunchConfig`s, its default first. On the first CUDA call for a key
(kernel variant and problem-size bucket) every candidate is timed with `triton.testing.do_bench`
and the fastest is kept for the rest of the process. Candidates that fail to build or launch
(too much shared memory on a smaller GPU) are skipped. Under `TRITON_INTERPRET=1` (the CPU
parity tests), on non-CUDA tensors and with `FIELDPRESS_TUNE=0` the default runs untimed.

We keep our own cache instead of `triton.autotune` so that kernels which accumulate into their
outputs (the atomic backward passes) are re-zeroed explicitly after tuning, whatever the Triton
version, and so the choices can be reported (`tuning_report`, written by bench/kernels.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

_CHOSEN: dict[tuple[Any, ...], LaunchConfig] = {}
_TIMINGS: dict[tuple[Any, ...], dict[str, float]] = {}


@dataclass(frozen=True)
class LaunchConfig:
    """Block sizes (the kernel's constexprs) and the warp and pipeline-stage counts of one launch."""

    blocks: tuple[tuple[str, int], ...]
    num_warps: int = 4
    num_stages: int | None = None

    @staticmethod
    def of(num_warps: int = 4, num_stages: int | None = None, **blocks: int) -> LaunchConfig:
        return LaunchConfig(tuple(sorted(blocks.items())), num_warps, num_stages)

    def block(self, name: str) -> int:
        return dict(self.blocks)[name]

    def kwargs(self) -> dict[str, int]:
        """Keyword arguments for `kernel[grid](...)`."""
        out = {**dict(self.blocks), "num_warps": self.num_warps}
        if self.num_stages is not None:
            out["num_stages"] = self.num_stages
        return out

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.blocks] + [f"warps={self.num_warps}"]
        if self.num_stages is not None:
            parts.append(f"stages={self.num_stages}")
        return ",".join(parts)


def tuning_enabled(device: torch.device) -> bool:
    """Whether to time candidates: CUDA tensors, compiled Triton, and FIELDPRESS_TUNE not 0."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    return os.environ.get("FIELDPRESS_TUNE", "1").strip() != "0"


def choose(
    kernel: str,
    key: tuple[Any, ...],
    candidates: Sequence[LaunchConfig],
    launch: Callable[[LaunchConfig], object],
    device: torch.device,
    reset: Callable[[], object] | None = None,
) -> LaunchConfig:
    """The launch configuration for `kernel` at `key`: timed once per process, then cached.

    `launch(config)` runs the kernel on the real arguments; `reset()` restores outputs that the
    kernel accumulates into, and runs after tuning so the caller's real launch starts clean.
    """
    full_key = (kernel, *key)
    chosen = _CHOSEN.get(full_key)
    if chosen is not None:
        return chosen
    unique = list(dict.fromkeys(candidates))
    if len(unique) == 1 or not tuning_enabled(device):
        chosen = unique[0]
    else:
        from triton.testing import do_bench

        timings: dict[LaunchConfig, float] = {}
        for config in unique:
            try:
                timings[config] = float(do_bench(lambda c=config: launch(c), warmup=5, rep=25))
            except Exception:  # out of resources on this GPU, or a compile failure: not a candidate
                continue
        if not timings:
            gpu = torch.cuda.get_device_name(device)
            raise RuntimeError(f"no launch configuration of {kernel} runs on {gpu}")
        chosen = min(timings, key=timings.__getitem__)
        _TIMINGS[full_key] = {c.label(): round(ms, 4) for c, ms in timings.items()}
        if reset is not None:
            reset()
    _CHOSEN[full_key] = chosen
    return chosen


def tuning_report() -> list[dict[str, Any]]:
    """Every choice made in this process: kernel, key, chosen configuration and the timings (ms)."""
    return [
        {
            "kernel": key[0],
            "key": [str(k) for k in key[1:]],
            "chosen": config.label(),
            "timings_ms": _TIMINGS.get(key, {}),
        }
        for key, config in _CHOSEN.items()
    ]


def clear() -> None:
    """Forget every choice (tests)."""
    _CHOSEN.clear()
    _TIMINGS.clear()

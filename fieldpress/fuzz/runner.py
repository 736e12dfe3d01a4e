"""The fuzz loop: hypothesis draws seeds and mutations, each target runs them under a 10 s CPU-time
alarm while the process's peak memory is watched, and every outcome is counted: rejected cleanly (an
InputError, one line), accepted, crashed (anything else escaped: saved with its traceback), hung (over
the time limit), or over the memory bar (peak growth above 4x the input plus 64 MiB).

The hang limit is CPU time (the process's user + system time, ITIMER_PROF), so a loaded machine does
not turn slow inputs into hangs; a wall-clock alarm at WALL_FACTOR times the limit still catches an
input that blocks without using the CPU.

Peak memory is the growth of the resident set's high-water mark over the input (Linux: VmHWM, reset
through /proc/self/clear_refs before each input; so torch's and constriction's allocations count),
or tracemalloc's peak where /proc is not available (Python and numpy allocations only). The bar's
input size is the file's bytes, plus, for a fieldpress container, the decoded bytes its stream table
declares: an entropy coder legitimately turns a few bytes into megabytes (a constant stream), so a
container is held to 4x what it says it holds, never to 4x its compressed size."""

from __future__ import annotations

import hashlib
import os
import signal
import time
import traceback
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from fieldpress.errors import InputError
from fieldpress.fuzz.mutate import mutate_bytes, mutate_container
from fieldpress.fuzz.targets import Target

HANG_SECONDS = 10.0  # CPU seconds
WALL_FACTOR = 6.0  # a call blocked (not computing) for this many times HANG_SECONDS of wall time hangs too
MEMORY_FACTOR, MEMORY_FIXED = 4, 64 << 20
BATCH = 100  # inputs per hypothesis run before the loop moves to the next target


class Hang(BaseException):
    """Raised by the alarm in a target that runs over HANG_SECONDS (BaseException: never swallowed)."""


@dataclass
class TargetStats:
    """Counts for one target."""

    inputs: int = 0
    rejected: int = 0
    accepted: int = 0
    crashes: int = 0
    hangs: int = 0
    over_memory: int = 0
    max_seconds: float = 0.0  # CPU seconds
    max_wall_seconds: float = 0.0
    max_peak_bytes: int = 0
    max_input_bytes: int = 0
    worst_ratio_input_bytes: int = 0  # input size at the largest peak/(4x input + 64 MiB)
    worst_ratio: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FuzzReport:
    """What a run tried and found, per target and in total."""

    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # the process's CPU time
    targets: dict[str, TargetStats] = field(default_factory=dict)
    crash_files: list[str] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(getattr(t, key) for t in self.targets.values())

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "cpu_seconds": round(self.cpu_seconds, 1),
                "inputs": self.total("inputs"),
                "crashes": self.total("crashes"), "hangs": self.total("hangs"),
                "over_memory": self.total("over_memory"),
                "worst_memory_ratio": max((t.worst_ratio for t in self.targets.values()), default=0.0),
                "memory_bar": f"peak growth <= {MEMORY_FACTOR} x input + {MEMORY_FIXED >> 20} MiB",
                "targets": {k: v.to_dict() for k, v in self.targets.items()},
                "crash_files": self.crash_files}


def input_size(data: bytes) -> int:
    """The size the memory bar scales with: file bytes, plus a container's declared decoded bytes."""
    from fieldpress.codec.container import MAGIC, open_container

    if not data.startswith(MAGIC):
        return len(data)
    try:
        container = open_container(data)
    except InputError:
        return len(data)
    return len(data) + sum(s.raw_bytes for s in container.streams.values())


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang()


class PeakMemory:
    """Peak memory growth during one call: the RSS high-water mark on Linux, else tracemalloc's peak."""

    def __init__(self) -> None:
        self.proc = Path("/proc/self/status").is_file() and os.access("/proc/self/clear_refs", os.W_OK)

    def _status(self, key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(text.split(key + ":", 1)[1].split()[0]) * 1024

    def start(self) -> int:
        """Reset the high-water mark; the memory in use now."""
        if self.proc:
            Path("/proc/self/clear_refs").write_text("5")
            return self._status("VmRSS")
        if not tracemalloc.is_tracing():
            tracemalloc.start()
        tracemalloc.reset_peak()
        return tracemalloc.get_traced_memory()[0]

    def peak(self, before: int) -> int:
        """How far memory rose above `before` since start()."""
        top = self._status("VmHWM") if self.proc else tracemalloc.get_traced_memory()[1]
        return max(top - before, 0)


PEAK = PeakMemory()


def run_one(target: Target, data: bytes, stats: TargetStats, report: FuzzReport, out: Path | None) -> None:
    """Run one input, classify the outcome into `stats`, save crashes and hangs under `out`."""
    stats.inputs += 1
    stats.max_input_bytes = max(stats.max_input_bytes, len(data))
    before = PEAK.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    signal.setitimer(signal.ITIMER_PROF, HANG_SECONDS)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS * WALL_FACTOR)
    outcome, detail = "accepted", ""
    try:
        target.run(data)
    except InputError:
        outcome = "rejected"
    except Hang:
        outcome, detail = "hang", f"over {HANG_SECONDS} CPU s (or {HANG_SECONDS * WALL_FACTOR} s blocked)"
    except Exception:  # noqa: BLE001 - anything but InputError escaping a reader is the bug we look for
        outcome, detail = "crash", traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
    elapsed, wall = time.process_time() - cpu_start, time.perf_counter() - start
    peak = PEAK.peak(before)
    stats.max_seconds = max(stats.max_seconds, elapsed)
    stats.max_wall_seconds = max(stats.max_wall_seconds, wall)
    stats.max_peak_bytes = max(stats.max_peak_bytes, peak)
    ratio = peak / (MEMORY_FACTOR * input_size(data) + MEMORY_FIXED)
    if ratio > stats.worst_ratio:
        stats.worst_ratio, stats.worst_ratio_input_bytes = ratio, len(data)
    if ratio > 1:
        stats.over_memory += 1
        _save(out, target, data, f"peak {peak} bytes for a {len(data)}-byte input", report, "memory")
    if outcome == "hang" or elapsed > HANG_SECONDS or wall > HANG_SECONDS * WALL_FACTOR:
        stats.hangs += 1
        _save(out, target, data, detail or f"{elapsed:.1f} CPU s, {wall:.1f} s", report, "hang")
    elif outcome == "crash":
        stats.crashes += 1
        _save(out, target, data, detail, report, "crash")
    else:
        setattr(stats, outcome, getattr(stats, outcome) + 1)


def _save(out: Path | None, target: Target, data: bytes, detail: str, report: FuzzReport, kind: str) -> None:
    """Keep a failing input and what happened (the regression test's material)."""
    name = f"{kind}-{target.name.replace(':', '_').replace('/', '_')}-{hashlib.sha256(data).hexdigest()[:12]}"
    report.crash_files.append(name)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.bin").write_bytes(data)
        (out / f"{name}.txt").write_text(f"{target.name}\n{detail}\n")


def _parts(blob: bytes) -> dict[str, Any] | None:
    """A seed container decoded into kind, header, arrays and stream codecs (None if it does not open)."""
    from fieldpress.codec.container import open_container

    try:
        c = open_container(blob)
        return {"kind": c.kind, "header": c.header, "arrays": c.arrays(),
                "codecs": {n: s.codec for n, s in c.streams.items()}}
    except InputError:
        return None


def _batch(target: Target, parts: list[dict[str, Any] | None], stats: TargetStats, report: FuzzReport,
           out: Path | None, seed: int, examples: int) -> None:
    """One hypothesis run of `examples` inputs for a target."""
    seeds = target.seeds

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(seeds) - 1), "seed")
        if target.container and parts[i] is not None and data.draw(st.integers(0, 3), "layer") > 0:
            blob = mutate_container(data, parts[i])
            if data.draw(st.integers(0, 9), "then bytes") == 0:
                blob = mutate_bytes(data, blob)
        else:
            blob = mutate_bytes(data, seeds[i])
        run_one(target, blob, stats, report, out)

    fuzz()


def warm_up() -> None:
    """Import what library error paths import lazily (torch's symbolic-shape checks pull in sympy):
    an alarm interrupting that first import would leave a half-imported module behind."""
    import importlib
    import sys

    if "torch" in sys.modules:
        torch = importlib.import_module("torch")
        importlib.import_module("torch.fx.experimental.symbolic_shapes")
        with torch.device("meta"):  # the decoders' meta-device model probe imports torch._refs & co.
            torch.nn.Linear(2, 2)
            (1.25 ** torch.arange(4, dtype=torch.float64)).float()


def run_fuzz(targets: Sequence[Target], seconds: float, out: Path | None = None, seed: int = 0,
             batch: int = BATCH, inputs: int | None = None,
             progress: Callable[[FuzzReport], None] | None = None) -> FuzzReport:
    """Fuzz every target round-robin for `seconds` of wall time or, given `inputs`, until that many
    inputs have run, whichever comes first (at least one batch each); crashes land in `out`.
    `progress(report)` is called after every batch (the report's times are filled in so far)."""
    warm_up()
    report = FuzzReport(targets={t.name: TargetStats() for t in targets})
    parts = {t.name: [_parts(b) if t.container else None for b in t.seeds] for t in targets}
    previous = {s: signal.signal(s, _on_alarm) for s in (signal.SIGALRM, signal.SIGPROF)}
    tracing = tracemalloc.is_tracing()
    start, cpu_start, rounds = time.perf_counter(), time.process_time(), 0

    def more() -> bool:
        enough = inputs is not None and report.total("inputs") >= inputs
        return not enough and time.perf_counter() - start < seconds

    try:
        for t in targets:  # every seed once uncounted (first-use imports and caches), then counted
            for blob in t.seeds:
                run_one(t, blob, TargetStats(), FuzzReport(), None)
                run_one(t, blob, report.targets[t.name], report, out)
        while rounds == 0 or more():
            for t in targets:
                if rounds > 0 and not more():
                    break
                _batch(t, parts[t.name], report.targets[t.name], report, out, seed + rounds, batch)
                if progress is not None:
                    report.seconds = time.perf_counter() - start
                    report.cpu_seconds = time.process_time() - cpu_start
                    progress(report)
            rounds += 1
    finally:
        if not tracing and tracemalloc.is_tracing():
            tracemalloc.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    report.seconds = time.perf_counter() - start
    report.cpu_seconds = time.process_time() - cpu_start
    return report

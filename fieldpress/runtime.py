"""Where and how work runs: the device, the CPU thread policy, progress bars and a stopwatch.

Shared by the engine, the codecs' pipelines and the commands; imports nothing of fieldpress but its
errors (torch and rich lazily), so it sits at the bottom of the layers (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from fieldpress.errors import InputError


# ----------------------------------------------------------------------------- device
def resolve_device(name: str | None = "auto") -> Any:
    """'auto' -> cuda when available else cpu; checks that an explicit cuda device exists."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


# ----------------------------------------------------------------------------- CPU threads
def cpu_threads(requested: int | None = None, *, small_batches: bool = False) -> int:
    """Intra-op threads for CPU work: `requested` (the --threads flag) when given; else OMP_NUM_THREADS
    when set; else one thread for `small_batches` work (image fields: several threads on small batches
    mostly add synchronisation, ~9x slower steps measured on a shared 2-core machine); else the idle
    cores (video convs: oversubscribed threads spin and wait, 20x slower per conv at load 12 on 2 cores).
    """
    if requested is not None:
        if requested < 1:
            raise InputError(f"--threads must be positive, got {requested}")
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if small_batches:
        return 1
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops with `n` intra-op threads (n <= 0: unchanged), restoring the count afterwards."""
    import torch

    previous = torch.get_num_threads()
    if n <= 0 or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- progress
def progress_enabled(as_json: bool = False) -> bool:
    """Show progress bars on an interactive stderr, never under --json or FIELDPRESS_PROGRESS=0."""
    if os.environ.get("FIELDPRESS_PROGRESS") == "0":
        return False
    if os.environ.get("FIELDPRESS_PROGRESS") == "1":
        return True
    return not as_json and sys.stderr.isatty()


def make_progress(enabled: bool = True) -> Any:
    """A rich Progress on stderr with a bar, fields, elapsed time and ETA; `disable=True` when off."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


# ----------------------------------------------------------------------------- timing
class Stopwatch:
    """Wall-clock timer: `with Stopwatch() as sw: ...; sw.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

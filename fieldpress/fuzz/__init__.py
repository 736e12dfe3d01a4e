"""The fuzz harness: `python -m fieldpress.fuzz --minutes N` feeds mutated files to the container,
every registered codec's decoder and every scene reader, and reports inputs tried, crashes (must be
0), hangs over 10 s and peak memory against input size. Needs hypothesis (`pip install
fieldpress[fuzz]`)."""

from __future__ import annotations

from fieldpress.fuzz.runner import FuzzReport, run_fuzz
from fieldpress.fuzz.targets import Target, all_targets

__all__ = ["FuzzReport", "Target", "all_targets", "run_fuzz"]

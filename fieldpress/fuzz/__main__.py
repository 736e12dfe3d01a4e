"""`python -m fieldpress.fuzz [--minutes N] [--inputs N] [--out DIR] [--seed S] [--only NAME] [--json]
[--report FILE]`: fuzz every registered codec, scene reader and the container."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; exit 0 when nothing crashed or hung, 1 otherwise (2 on bad flags)."""
    parser = argparse.ArgumentParser(prog="python -m fieldpress.fuzz", description=__doc__)
    parser.add_argument("--minutes", type=float, default=None,
                        help="how long to fuzz, wall-clock minutes (default 1, or no limit with --inputs)")
    parser.add_argument("--inputs", type=int, default=None,
                        help="stop once this many inputs have run (with --minutes: whichever comes first)")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"),
                        help="where crashing/hanging inputs are saved (default ./fuzz-findings)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (a run is reproducible)")
    parser.add_argument("--only", action="append", default=[],
                        help="fuzz only targets whose name contains this (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.inputs is not None and args.inputs <= 0:
        parser.error("--inputs must be positive")
    minutes = args.minutes if args.minutes is not None else (float("inf") if args.inputs else 1.0)
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("error: the fuzz harness needs hypothesis (pip install 'fieldpress[fuzz]')", file=sys.stderr)
        return 2
    from fieldpress.fuzz import all_targets, run_fuzz
    from fieldpress.io import atomic_write_text

    _one_thread()

    with tempfile.TemporaryDirectory(prefix="fieldpress-fuzz-") as work:
        targets = [t for t in all_targets(Path(work)) if not args.only or any(o in t.name for o in args.only)]
        if not targets:
            parser.error("--only matched no target")
        command = "python -m fieldpress.fuzz " + " ".join(sys.argv[1:] if argv is None else argv)
        progress = _progress_writer(args.report, command) if args.report is not None else None
        report = run_fuzz(targets, minutes * 60, out=args.out, seed=args.seed, inputs=args.inputs,
                          progress=progress).to_dict()
    report.update(command=command, finished=True)
    if args.report is not None:
        atomic_write_text(args.report, json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0 if report["crashes"] == 0 and report["hangs"] == 0 else 1


def _progress_writer(path: Path, command: str, every: float = 60.0) -> Callable[[Any], None]:
    """Rewrite the report file (marked unfinished) at most once a `every` seconds: a long run that is
    stopped still leaves its figures so far."""
    from fieldpress.io import atomic_write_text

    last = [time.monotonic()]

    def write(report: Any) -> None:
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            data = report.to_dict()
            data.update(command=command, finished=False)
            atomic_write_text(path, json.dumps(data, indent=1) + "\n")

    return write


def _one_thread() -> None:
    """One torch thread: the hang limit is CPU time, which parallel kernels would inflate."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


def _print(report: dict) -> None:
    """One line per target, then the totals."""
    print(f"{'target':28} {'inputs':>8} {'rejected':>9} {'accepted':>9} {'crashes':>8} {'hangs':>6} "
          f"{'max CPU s':>9} {'peak MiB':>9}")
    for name, t in report["targets"].items():
        print(f"{name:28} {t['inputs']:8d} {t['rejected']:9d} {t['accepted']:9d} {t['crashes']:8d} "
              f"{t['hangs']:6d} {t['max_seconds']:9.2f} {t['max_peak_bytes'] / 2**20:9.1f}")
    print(f"{report['inputs']} inputs in {report['seconds']} s ({report['cpu_seconds']} CPU s): "
          f"{report['crashes']} crashes, "
          f"{report['hangs']} hangs, {report['over_memory']} over the memory bar ({report['memory_bar']}; "
          f"worst {report['worst_memory_ratio']:.2f} of it)")
    for name in report["crash_files"]:
        print(f"  finding: {name}")


if __name__ == "__main__":
    sys.exit(main())

"""`python -m fieldpress.fuzz --minutes N [--out DIR] [--seed S] [--only NAME] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; exit 0 when nothing crashed or hung, 1 otherwise (2 on bad flags)."""
    parser = argparse.ArgumentParser(prog="python -m fieldpress.fuzz", description=__doc__)
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to fuzz (default 1)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"),
                        help="where crashing/hanging inputs are saved (default ./fuzz-findings)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (a run is reproducible)")
    parser.add_argument("--only", action="append", default=[],
                        help="fuzz only targets whose name contains this (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("error: the fuzz harness needs hypothesis (pip install 'fieldpress[fuzz]')", file=sys.stderr)
        return 2
    from fieldpress.fuzz import all_targets, run_fuzz

    with tempfile.TemporaryDirectory(prefix="fieldpress-fuzz-") as work:
        targets = [t for t in all_targets(Path(work)) if not args.only or any(o in t.name for o in args.only)]
        if not targets:
            parser.error("--only matched no target")
        report = run_fuzz(targets, args.minutes * 60, out=args.out, seed=args.seed).to_dict()
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0 if report["crashes"] == 0 and report["hangs"] == 0 else 1


def _print(report: dict) -> None:
    """One line per target, then the totals."""
    print(f"{'target':28} {'inputs':>8} {'rejected':>9} {'accepted':>9} {'crashes':>8} {'hangs':>6} "
          f"{'max s':>6} {'peak MiB':>9}")
    for name, t in report["targets"].items():
        print(f"{name:28} {t['inputs']:8d} {t['rejected']:9d} {t['accepted']:9d} {t['crashes']:8d} "
              f"{t['hangs']:6d} {t['max_seconds']:6.2f} {t['max_peak_bytes'] / 2**20:9.1f}")
    print(f"{report['inputs']} inputs in {report['seconds']} s: {report['crashes']} crashes, "
          f"{report['hangs']} hangs, {report['over_memory']} over the memory bar ({report['memory_bar']}; "
          f"worst {report['worst_memory_ratio']:.2f} of it)")
    for name in report["crash_files"]:
        print(f"  finding: {name}")


if __name__ == "__main__":
    sys.exit(main())

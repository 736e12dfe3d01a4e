"""`fieldpress batch` on N local workers against a plain loop over the same jobs, on the shared data.

The loop runs every job one after the other in one process through the command's own body (what a
script calling compress-splat / fit-video per file does, minus the process starts); the batch runs
`python -m fieldpress batch JOBS.toml --workers N` as a user would. Both write to their own folder,
and the outputs are compared byte for byte. Writes bench/results/batch.json (machine, load, versions,
per-file seconds, wall times, speed-up).

    flock /tmp/fieldpress-heavy.lock python bench/batch.py                  # scenes, 2 workers
    flock /tmp/fieldpress-heavy.lock python bench/batch.py --clips --no-scenes \
        --out bench/results/batch_clips.json                                # the clips, short fits
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FIELDPRESS_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))  # this checkout's fieldpress, as the batch subprocess gets (PYTHONPATH)
SCENE_FLAGS = ["--preset", "fast", "--eval-views", "4", "--eval-width", "256"]
CLIP_FLAGS = ["--preset", "preview", "--frames", "0:16", "--epochs", "3", "--size", "100k"]


def jobs(scenes: bool, clips: bool) -> list[dict[str, Any]]:
    """(command, input, flags) of every shared scene and (short fits) every shared clip."""
    out = [{"command": "compress-splat", "input": str(p), "flags": SCENE_FLAGS}
           for p in sorted((SHARED / "gaussians").glob("*.ply")) if scenes]
    if clips:
        out += [{"command": "fit-video", "input": str(p), "flags": CLIP_FLAGS}
                for p in sorted((SHARED / "video").glob("*.mp4"))]
    return out


def write_toml(entries: list[dict[str, Any]], folder: Path, path: Path) -> None:
    """A JOBS.toml with one [[jobs]] per entry, writing under `folder`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"output_dir = {json.dumps(str(folder))}"]
    for e in entries:
        lines += ["[[jobs]]", f"command = {json.dumps(e['command'])}", f"input = {json.dumps(e['input'])}",
                  f"flags = {json.dumps(e['flags'])}"]
    path.write_text("\n".join(lines) + "\n")


def run_loop(entries: list[dict[str, Any]], folder: Path) -> tuple[float, list[dict[str, Any]]]:
    """Every job in turn in this process, through the same plan and worker function as the batch."""
    from fieldpress.batch.jobs import plan_batch
    from fieldpress.batch.runner import run_job

    toml = folder.parent / "loop.toml"
    write_toml(entries, folder, toml)
    t0 = time.perf_counter()
    records = [run_job(job) for job in plan_batch(toml, None, []).jobs]
    return time.perf_counter() - t0, records


def run_batch(entries: list[dict[str, Any]], folder: Path, workers: int,
              backend: str) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """`python -m fieldpress batch` as a subprocess: (wall seconds, per-file records, summary)."""
    toml = folder.parent / "batch.toml"
    write_toml(entries, folder, toml)
    cmd = [sys.executable, "-c", "import sys; from fieldpress.cli import run_command; "
           "from fieldpress.batch.cli import batch_command; "
           "sys.exit(run_command(batch_command, sys.argv[1:]))",
           str(toml), "--workers", str(workers), "--backend", backend, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0"})
    wall = time.perf_counter() - t0
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines or "summary" not in lines[-1]:
        raise RuntimeError(f"batch failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return wall, lines[:-1], lines[-1]["summary"]


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("input", "status", "seconds", "bytes", "error")}


def _versions() -> dict[str, str]:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import ray

        out["ray"] = ray.__version__
    except ImportError:
        out["ray"] = "not installed"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", default="auto", help="auto, ray or local (passed to fieldpress batch)")
    ap.add_argument("--clips", action="store_true", help="add the shared clips (fit-video, short fits)")
    ap.add_argument("--no-scenes", action="store_true", help="leave the scenes out")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "batch.json"))
    args = ap.parse_args()
    entries = jobs(not args.no_scenes, args.clips)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fp-batch-bench-") as tmp:
        loop_s, loop_records = run_loop(entries, Path(tmp) / "loop" / "out")
        batch_s, batch_records, summary = run_batch(entries, Path(tmp) / "batch" / "out", args.workers,
                                                    args.backend)
        same = {Path(r["input"]).name: (Path(r["output"]).read_bytes()
                                        == (Path(tmp) / "loop" / "out" / Path(r["output"]).name).read_bytes())
                for r in batch_records if r["status"] == "done"}
    doc = {"benchmark": "batch", "machine": platform.platform(), "cores": os.cpu_count(),
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in os.getloadavg()], "versions": _versions(),
           "workers": args.workers, "backend": summary["backend"], "jobs": entries,
           "loop_seconds": round(loop_s, 2), "batch_seconds": round(batch_s, 2),
           "speedup": round(loop_s / batch_s, 3), "outputs_identical": same,
           "loop": [_row(r) for r in loop_records], "batch": [_row(r) for r in batch_records],
           "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"loop {loop_s:.1f} s, batch on {args.workers} workers ({summary['backend']}) {batch_s:.1f} s: "
          f"speed-up {loop_s / batch_s:.2f}x; identical outputs: {sum(same.values())}/{len(same)}")


if __name__ == "__main__":
    main()

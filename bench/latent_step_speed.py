"""CPU time of one training step of the latent-grid image codec, for this checkout and, interleaved
under the same load, for other checkouts (e.g. an older commit in a git worktree).

Each measurement runs in a fresh interpreter with one torch thread: a 768x512 random image, the
default LatentConfig, 2 warm-up steps, then the mean `time.process_time()` of `--steps` steps.
Rounds alternate between the checkouts so that machine load hits them alike. Writes JSON.

    python bench/latent_step_speed.py --compare /work/old-checkout --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "latent_step_speed.json"

PROBE = """
import time, torch
torch.set_num_threads(1)
from fieldpress.fields.latent.config import LatentConfig
from fieldpress.fields.latent.fit import FitConfig, latent_optimizer, _step
from fieldpress.fields.latent.model import LatentImageModel
torch.manual_seed(0)
image = torch.rand(1, 3, {h}, {w})
model = LatentImageModel(LatentConfig(), {h}, {w})
fit = FitConfig()
opt = latent_optimizer(model, fit)
for _ in range(2):
    _step(model, opt, image, 0.005, 0.3, fit)
start = time.process_time()
for _ in range({steps}):
    _step(model, opt, image, 0.005, 0.3, fit)
print((time.process_time() - start) / {steps})
"""


def probe(checkout: Path, height: int, width: int, steps: int) -> float:
    """Seconds of CPU per step with `checkout`'s fieldpress, in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    code = PROBE.format(h=height, w=width, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=checkout, capture_output=True, text=True,
                         check=True)  # cwd too: "-c" puts the working directory first on sys.path
    return float(out.stdout.strip().splitlines()[-1])


def git_rev(checkout: Path) -> str:
    res = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True)
    return res.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", nargs="*", default=[], help="other checkouts to time beside this one")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", default="512x768", help="HxW")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    checkouts = [ROOT, *(Path(c).resolve() for c in args.compare)]
    times: dict[str, list[float]] = {str(c): [] for c in checkouts}
    for r in range(args.rounds):
        for c in checkouts:
            times[str(c)].append(probe(c, h, w, args.steps))
            print(f"round {r + 1}: {c} {times[str(c)][-1]:.3f} CPU-s/step", flush=True)
    rows = [{"checkout": str(c), "commit": git_rev(c), "cpu_s_per_step": times[str(c)],
             "median": statistics.median(times[str(c)])} for c in checkouts]
    load = os.getloadavg()
    result = {"machine": platform.processor() or platform.machine(), "threads": 1, "size": [h, w],
              "steps_per_probe": args.steps, "load_average_at_end": load, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    for row in rows:
        print(f"{row['commit']}: median {row['median']:.3f} CPU-s/step")


if __name__ == "__main__":
    main()

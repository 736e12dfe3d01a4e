"""PSNR vs iterations of the latent-grid image codec: separate fits of fixed step counts.

Each point is its own fit (same seed, `--steps N`, the full schedule compressed into N steps: soft-round
+ noise with a cosine learning rate, then straight-through), written to a real file whose bytes give
the bpp and whose decode gives the PSNR. CPU seconds per fit are `time.process_time()` with
`torch.set_num_threads(1)`, so a loaded machine does not change them. The 5-CPU-minute point is read
off the curve: the iteration count that 300 CPU-s buy at the measured seconds per iteration, with
PSNR and bpp interpolated (log iterations). JPEG (Pillow) at the same bpp is given for reference.
Writes bench/results/image_rd_iterations.json after every fit and a plot beside it.

    nice -n 5 python bench/image_rd_iterations.py --images kodim01,kodim03 --quality 4 \
        --steps 50,100,200,400,800
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fieldpress.codec.rate_control import quality_lambda  # noqa: E402
from fieldpress.fields.latent import pipeline  # noqa: E402
from fieldpress.io import atomic_write_text  # noqa: E402
from fieldpress.metrics import psnr  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "images" / "kodak"
OUT = ROOT / "bench" / "results" / "image_rd_iterations.json"
BUDGET_S = 300.0  # the bench's budget per image: 5 CPU-minutes


def jpeg_psnr_at(rgb: np.ndarray, bpp: float) -> float | None:
    """Pillow JPEG's PSNR at `bpp` (interpolated in log-rate over qualities 5..95; None outside)."""
    pts = []
    for q in range(5, 96, 5):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pts.append((len(buf.getvalue()) * 8 / rgb.shape[0] / rgb.shape[1], psnr(rgb, dec)))
    pts.sort()
    r = np.log([p[0] for p in pts])
    if not r[0] <= np.log(bpp) <= r[-1]:
        return None
    return float(np.interp(np.log(bpp), r, [p[1] for p in pts]))


def one_fit(rgb: np.ndarray, steps: int, lam: float, tmp: Path) -> dict:
    """Fit for `steps`, write the file, decode it; bpp from its bytes, PSNR from its pixels."""
    path = tmp / f"s{steps}.fpi"
    rep = pipeline.compress(rgb, path, lam, steps=steps)
    t0 = time.process_time()
    dec = pipeline.decompress(path)
    out = {"steps": steps, "bytes": rep["bytes"], "bpp": rep["bpp"], "psnr": psnr(rgb, dec),
           "fit_cpu_s": rep["fit_cpu_s"], "cpu_s_per_iteration": rep["fit_cpu_s"] / steps,
           "encode_cpu_s": rep["encode_cpu_s"], "decode_cpu_s": time.process_time() - t0,
           "latent_bytes": rep["latent_bytes"], "weight_bytes": rep["weight_bytes"],
           "train_psnr_last": rep["train_psnr"]}
    out["jpeg_psnr_at_bpp"] = jpeg_psnr_at(rgb, out["bpp"])
    return out


def budget_point(points: list[dict], budget_s: float) -> dict | None:
    """Where `budget_s` CPU seconds fall on the curve: iterations at the median seconds per iteration,
    PSNR and bpp interpolated in log iterations (None before two points exist)."""
    if len(points) < 2:
        return None
    pts = sorted(points, key=lambda p: p["steps"])
    per_it = float(np.median([p["cpu_s_per_iteration"] for p in pts]))
    its = budget_s / per_it
    x = np.log([p["steps"] for p in pts])
    inside = bool(x[0] <= np.log(its) <= x[-1])
    return {"cpu_s": budget_s, "cpu_s_per_iteration": per_it, "iterations": its, "inside_curve": inside,
            "psnr": float(np.interp(np.log(its), x, [p["psnr"] for p in pts])) if inside else None,
            "bpp": float(np.interp(np.log(its), x, [p["bpp"] for p in pts])) if inside else None}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, img in result["images"].items() if img["points"]]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(6 * max(1, len(names)), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        img = result["images"][name]
        pts = sorted(img["points"], key=lambda p: p["steps"])
        steps = [p["steps"] for p in pts]
        ax.semilogx(steps, [p["psnr"] for p in pts], "o-", label="latent codec (file PSNR)")
        jp = [(p["steps"], p["jpeg_psnr_at_bpp"]) for p in pts if p["jpeg_psnr_at_bpp"] is not None]
        if jp:
            ax.semilogx(*zip(*jp), "s--", color="gray", label="JPEG at the same bpp")
        for p in pts:
            ax.annotate(f"{p['bpp']:.2f} bpp", (p["steps"], p["psnr"]), textcoords="offset points",
                        xytext=(4, -12), fontsize=7)
        b = img.get("budget_5min")
        if b:
            label = f"5 CPU-min = {b['iterations']:.0f} it ({b['cpu_s_per_iteration']:.2f} CPU-s/it)"
            ax.axvline(b["iterations"], color="red", lw=0.8, label=label)
        ax.set_xlabel("iterations (separate fits)")
        ax.set_ylabel("PSNR (dB, RGB)")
        ax.set_title(f"{name}, quality {result['quality']} (lambda {result['lambda']:g})")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="kodim01")
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("--steps", default="50,100,200,400,800")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(1)
    lam = quality_lambda(args.quality)
    out = Path(args.out)
    result = {"bench": "image_rd_iterations", "quality": args.quality, "lambda": lam,
              "time": "CPU seconds (time.process_time, torch.set_num_threads(1)); wall time not used",
              "budget_cpu_s": BUDGET_S, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "images": {}}
    with tempfile.TemporaryDirectory() as td:
        for name in args.images.split(","):
            rgb = np.asarray(Image.open(KODAK / f"{name}.png").convert("RGB"))
            img = result["images"].setdefault(name, {"size": f"{rgb.shape[1]}x{rgb.shape[0]}", "points": []})
            for steps in (int(s) for s in args.steps.split(",")):
                p = one_fit(rgb, steps, lam, Path(td))
                img["points"].append(p)
                img["budget_5min"] = budget_point(img["points"], BUDGET_S)
                print(f"{name} {steps:4d} it: {p['bpp']:.4f} bpp {p['psnr']:.2f} dB (JPEG "
                      f"{p['jpeg_psnr_at_bpp']}) fit {p['fit_cpu_s']:.0f} CPU-s, decode "
                      f"{p['decode_cpu_s']:.2f} CPU-s", flush=True)
                atomic_write_text(out, json.dumps(result, indent=1) + "\n")
                plot(result, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

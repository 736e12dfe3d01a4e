"""Scene codecs side by side: fieldpress (LightGaussian, each preset) against SPZ, PlayCanvas
compressed PLY (our writers) and the plain INRIA PLY, on the same scenes and the same views.

For each scene: file bytes, bytes per input Gaussian, render PSNR / SSIM of the decoded scene against
the input's own renders on the evaluation views, encode and decode seconds. Writes
bench/results/scene_codecs.json and a size-vs-PSNR plot bench/results/scene_codecs.png.

    python bench/scene_codecs.py ../shared/data/gaussians/guitar.compressed.ply ... [--views 16 --width 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
PSNR_CAP = 70.0  # lossless rows (inf) are drawn at the cap
PEERS = (("ply", ".ply"), ("compressed.ply", ".compressed.ply"), ("spz", ".spz"))


def _versions() -> dict[str, str]:
    import fieldpress

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "fieldpress": getattr(fieldpress, "__version__", "?")}
    try:
        import constriction

        out["constriction"] = getattr(constriction, "__version__", "?")
    except ImportError:
        pass
    return out


def _row(method: str, path: Path, n_in: int, enc_s: float, dec_s: float, reference: np.ndarray,
         decoded: Any, cams: list[Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from fieldpress.scenes.lightgaussian.pipeline import evaluate

    size = path.stat().st_size
    row = {"method": method, "bytes": size, "bytes_per_gaussian": round(size / n_in, 3),
           "gaussians_out": decoded.n, "sh_degree_out": decoded.sh_degree,
           "encode_s": round(enc_s, 3), "decode_s": round(dec_s, 3)}
    row.update(evaluate(reference, decoded, cams))
    row.update(extra or {})
    print(f"  {method:>22}: {size:>10,} B  {row['bytes_per_gaussian']:7.2f} B/G  "
          f"PSNR {row['render_psnr']:6.2f}  SSIM {row['render_ssim']:.4f}  "
          f"enc {enc_s:6.2f}s dec {dec_s:6.2f}s", flush=True)
    return row


def bench_scene(path: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from fieldpress.scenes.formats import formats, load_scene, save_scene
    from fieldpress.scenes.lightgaussian.codec import read_fpg
    from fieldpress.scenes.lightgaussian.pipeline import CompressOptions, compress, eval_cameras, render_views

    scene = load_scene(path)
    print(f"{path.name}: {scene.n:,} Gaussians, SH degree {scene.sh_degree}", flush=True)
    cams = eval_cameras(scene, None, args.views, args.width)
    t = time.perf_counter()
    reference = render_views(scene, cams)
    ref_s = time.perf_counter() - t
    rows: list[dict[str, Any]] = []
    writable = {name for name, f in formats().items() if f.write}
    for name, suffix in PEERS:
        fmt = next((f for f in formats().values() if f.write and suffix in f.suffixes), None)
        if fmt is None or fmt.name not in writable:
            rows.append({"method": name, "skipped": "no writer registered"})
            print(f"  {name:>22}: skipped (no writer registered)", flush=True)
            continue
        out = work / f"{path.stem}{suffix}"
        t = time.perf_counter()
        save_scene(scene, out, fmt.name)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        decoded = load_scene(out)
        dec = time.perf_counter() - t
        rows.append(_row(name, out, scene.n, enc, dec, reference, decoded, cams))
    for preset in args.presets:
        options = CompressOptions(preset=preset, seed=0, significance_views=args.sig_views,
                                  significance_width=args.sig_width, train_width=args.train_width,
                                  finetune_steps=args.finetune_steps if preset == "max" else None,
                                  evaluate=False)  # evaluated below, on the same views as the peers
        out = work / f"{path.stem}.{preset}.fpg"
        t = time.perf_counter()
        result = compress(scene, options, source={"name": path.name, "bytes": path.stat().st_size})
        result.write(out)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        decoded = read_fpg(out)
        dec = time.perf_counter() - t
        extra = {"prune": result.metrics["prune"], "stage_seconds": result.metrics["stage_seconds"],
                 "options": {k: v for k, v in dataclasses.asdict(options).items() if v is not None}}
        rows.append(_row(f"fieldpress-{preset}", out, scene.n, enc, dec, reference, decoded, cams, extra))
    return {"scene": path.name, "input_bytes": path.stat().st_size, "gaussians": scene.n,
            "sh_degree": scene.sh_degree, "reference_render_s": round(ref_s, 3), "rows": rows}


def plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        for row in res["rows"]:
            if "bytes" not in row:
                continue
            psnr = min(float(row["render_psnr"]), PSNR_CAP)
            marker = "o" if row["method"].startswith("fieldpress") else "s"
            ax.scatter(row["bytes_per_gaussian"], psnr, marker=marker, label=row["method"])
            ax.annotate(row["method"].replace("fieldpress-", "fp-"), (row["bytes_per_gaussian"], psnr),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("bytes per input Gaussian (log)")
        ax.set_ylabel(f"render PSNR vs input, dB (capped at {PSNR_CAP:.0f})")
        ax.set_title(f"{res['scene']} ({res['gaussians']:,} G, SH{res['sh_degree']})", fontsize=9)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenes", nargs="*", type=Path)
    p.add_argument("--views", type=int, default=16, help="orbit evaluation views (16)")
    p.add_argument("--width", type=int, default=512, help="evaluation width (512)")
    p.add_argument("--presets", nargs="+", default=["fast", "balanced", "max"])
    p.add_argument("--sig-views", type=int, default=16)
    p.add_argument("--sig-width", type=int, default=256)
    p.add_argument("--train-width", type=int, default=256)
    p.add_argument("--finetune-steps", type=int, default=None, help="max preset steps (default: preset's)")
    p.add_argument("--name", default="scene_codecs")
    p.add_argument("--replot", type=Path, help="only redraw the plot of an earlier JSON result")
    args = p.parse_args(argv)
    if args.replot:
        plot(json.loads(args.replot.read_text())["scenes"], args.replot.with_suffix(".png"))
        return 0
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.scenes:
            results.append(bench_scene(path, args, Path(tmp)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "scene_codecs", "machine": platform.platform(), "processor": platform.processor(),
           "device": "cpu", "cuda": torch.cuda.is_available(), "versions": _versions(),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if k != "scenes"},
           "seconds": round(time.perf_counter() - started, 1), "scenes": results}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=str))
    plot(results, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / (args.name + '.json')} and .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

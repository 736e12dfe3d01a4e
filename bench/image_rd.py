"""Latent-grid image codec vs JPEG, WebP, AVIF, HEVC-intra (x265) and VVC-intra (VVenC) on Kodak.

For each image: our codec at each `--qualities` (a fixed lambda ladder), each fit capped at
`--minutes` of this process's CPU time; the baselines swept over their quality knobs. Every bpp comes
from real file bytes, every PSNR from 8-bit RGB decoded back. BD-rate (Bjontegaard, log-rate cubic
fit over the overlapping PSNR range) against each baseline, per image and over the mean curves.
Writes bench/results/image_rd.json after every point and image_rd.png at the end.

    python bench/image_rd.py --images kodim01,kodim02 --minutes 5 --qualities 2,3,4,5 --threads 1
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fieldpress.codec.rate_control import quality_lambda  # noqa: E402
from fieldpress.fields.latent import pipeline  # noqa: E402
from fieldpress.fields.latent.config import LatentConfig  # noqa: E402
from fieldpress.io import atomic_write_text  # noqa: E402
from fieldpress.metrics import bd_rate as metrics_bd_rate  # noqa: E402
from fieldpress.metrics import psnr  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "images" / "kodak"
OUT = ROOT / "bench" / "results" / "image_rd.json"
BASELINES = ("jpeg", "webp", "avif", "x265", "vvenc")
BAR_BPP = 0.5  # the "dB over JPEG at equal bpp" is read at this rate (images whose curves span it)
STEP_OVERRUN_S = 1.0  # a budgeted fit stops after the step that spends its budget: one step (0.3-0.5 s) over


def pillow_points(rgb: np.ndarray, fmt: str, qualities: list[int]) -> list[dict]:
    """Encode with Pillow at each quality; bpp from the bytes, PSNR after decoding."""
    pts = []
    for q in qualities:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, quality=q)
        data = buf.getvalue()
        dec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        pts.append({"q": q, "bytes": len(data), "bpp": len(data) * 8 / rgb.shape[0] / rgb.shape[1],
                    "psnr": psnr(rgb, dec)})
    return pts


def ffmpeg_points(rgb: np.ndarray, codec: str, qps: list[int], tmp: Path) -> list[dict]:
    """Single-frame intra coding through the ffmpeg in imageio-ffmpeg; raw bitstream bytes."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    src = tmp / "src.png"
    Image.fromarray(rgb).save(src)
    pts = []
    for qp in qps:
        if codec == "x265":
            out, args = tmp / "a.hevc", ["-c:v", "libx265", "-pix_fmt", "yuv444p", "-preset", "medium",
                                         "-x265-params", f"qp={qp}:keyint=1:log-level=error", "-f", "hevc"]
        else:
            out, args = tmp / "a.266", ["-c:v", "libvvenc", "-pix_fmt", "yuv420p10le", "-qp", str(qp),
                                        "-preset", "medium", "-f", "vvc"]
        enc = [exe, "-y", "-loglevel", "error", "-i", str(src), "-frames:v", "1", *args, str(out)]
        if subprocess.run(enc, capture_output=True).returncode != 0:
            return pts
        back = tmp / "back.png"
        dec = [exe, "-y", "-loglevel", "error", "-i", str(out), "-frames:v", "1", "-pix_fmt", "rgb24",
               str(back)]
        if subprocess.run(dec, capture_output=True).returncode != 0:
            return pts
        n = out.stat().st_size
        rec = np.asarray(Image.open(back).convert("RGB"))
        pts.append({"qp": qp, "bytes": n, "bpp": n * 8 / rgb.shape[0] / rgb.shape[1], "psnr": psnr(rgb, rec)})
    return pts


def bd_rate(anchor: list[dict], test: list[dict]) -> float | None:
    """Bjontegaard delta rate (%) of `test` against `anchor` (negative: fewer bits at equal PSNR)."""
    return metrics_bd_rate([p["bpp"] for p in anchor], [p["psnr"] for p in anchor],
                           [p["bpp"] for p in test], [p["psnr"] for p in test])


def psnr_at(points: list[dict], bpp: float) -> float | None:
    """PSNR of a baseline at `bpp` (linear interpolation in log-rate; None outside its range)."""
    pts = sorted(points, key=lambda p: p["bpp"])
    r = np.log([p["bpp"] for p in pts])
    if not pts or not r[0] <= np.log(bpp) <= r[-1]:
        return None
    return float(np.interp(np.log(bpp), r, [p["psnr"] for p in pts]))


CURVE_POINTS = 25  # training-curve samples kept per fit (every step made the JSON megabytes)


def thin_curve(curve: list[dict], points: int = CURVE_POINTS) -> list[dict]:
    """About `points` evenly spaced samples of a per-step training curve, the last step always kept."""
    if len(curve) <= points:
        return curve
    stride = -(-len(curve) // points)
    return curve[::stride] + ([curve[-1]] if (len(curve) - 1) % stride else [])


def ours(rgb: np.ndarray, qualities: list[int], minutes: float, tmp: Path, config: LatentConfig,
         log) -> list[dict]:
    pts = []
    for q in qualities:
        lam = quality_lambda(q)
        path = tmp / f"q{q}.fpi"
        rep = pipeline.compress(rgb, path, lam, seconds=minutes * 60, config=config)
        t0 = time.perf_counter()
        dec = pipeline.decompress(path)
        rep["decode_s"] = time.perf_counter() - t0
        rep["psnr"] = psnr(rgb, dec)
        rep["quality"] = q
        hist = rep.pop("history")
        keys = ("step", "seconds", "psnr", "bpp")
        rep["curve"] = thin_curve([{k: round(h[k], 5) for k in keys} for h in hist])
        pts.append(rep)
        log(f"  ours q{q} lambda {lam:g}: {rep['bpp']:.4f} bpp, {rep['psnr']:.3f} dB, {rep['steps']} steps, "
            f"{rep['fit_cpu_s']:.0f} CPU-s fit, decode {rep['decode_s']:.2f} s")
    return pts


def summarize(result: dict) -> None:
    names = list(BASELINES)
    for img in result["images"].values():
        o = img.get("ours", [])
        img["bd_rate"] = {n: bd_rate(img[n], o) for n in names if img.get(n)}
        img["vs_jpeg_equal_bpp"] = [
            {"bpp": p["bpp"], "ours": p["psnr"], "jpeg": psnr_at(img.get("jpeg") or [], p["bpp"])} for p in o]
        ours_at, jpeg_at = psnr_at(o, BAR_BPP), psnr_at(img.get("jpeg") or [], BAR_BPP)
        img["db_over_jpeg_at_bar_bpp"] = None if ours_at is None or jpeg_at is None else ours_at - jpeg_at
    done = [i for i in result["images"].values() if len(i.get("ours", [])) >= 4]
    result["mean_bd_rate"] = {}
    for n in names:
        vals = [i["bd_rate"][n] for i in done if i["bd_rate"].get(n) is not None]
        if vals:
            result["mean_bd_rate"][n] = float(np.mean(vals))
    gains = [i["db_over_jpeg_at_bar_bpp"] for i in done if i.get("db_over_jpeg_at_bar_bpp") is not None]
    seconds = [p["fit_cpu_s"] for i in done for p in i["ours"]]
    jpeg_bd = result["mean_bd_rate"].get("jpeg")
    kodak = [result["images"].get(f"kodim{i:02d}", {}) for i in range(1, 13)]
    all_twelve = all(len(img.get("ours", [])) >= 4 for img in kodak)
    result["bars"] = {  # issue 13: >= +1 dB over JPEG at 0.5 bpp, BD-rate vs JPEG <= -30%, <= 5 CPU-min
        "images": len(done), "bar_bpp": BAR_BPP,
        "mean_db_over_jpeg_at_bar_bpp": float(np.mean(gains)) if gains else None,
        "images_covering_bar_bpp": len(gains), "mean_bd_rate_vs_jpeg": jpeg_bd,
        "max_fit_cpu_s": max(seconds) if seconds else None,
        "overrun_allowed_s": STEP_OVERRUN_S, "all_of_kodim01_12": all_twelve,
        "met": all_twelve and bool(gains) and jpeg_bd is not None and float(np.mean(gains)) >= 1.0
        and jpeg_bd <= -30.0 and max(seconds) <= 60 * result["budget_cpu_minutes_per_fit"] + STEP_OVERRUN_S}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = list(result["images"].items())
    fig, axes = plt.subplots(1, len(imgs) + 1, figsize=(5 * (len(imgs) + 1), 4))
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, imgs):
        for key, style in [("jpeg", "s-"), ("webp", "^-"), ("avif", "v-"), ("x265", "d-"), ("vvenc", "x-"),
                           ("ours", "o-")]:
            pts = sorted(img.get(key) or [], key=lambda p: p["bpp"])
            if pts:
                ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], style, label=key)
        ax.set(title=name, xlabel="bpp (file bytes)", ylabel="RGB PSNR (dB)", xlim=(0, 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[-1]
    for name, img in imgs:
        for p in img.get("ours", []):
            c = p["curve"]
            ax.plot([h["step"] for h in c], [h["psnr"] for h in c], lw=0.8, label=f"{name} q{p['quality']}")
    ax.set(title="training PSNR (proxy) vs iterations", xlabel="iteration", ylabel="dB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def merge(paths: list[str], out: Path) -> None:
    """Combine runs made in parallel (one image each) into one result file and plot."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    result = runs[0]
    for r in runs[1:]:
        result["images"].update(r["images"])
    for img in result["images"].values():
        for p in img.get("ours", []):
            p["curve"] = thin_curve(p.get("curve", []))
    summarize(result)
    atomic_write_text(out, json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(f"mean BD-rate over images: {result['mean_bd_rate']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=",".join(f"kodim{i:02d}" for i in range(1, 13)))
    ap.add_argument("--minutes", type=float, default=5.0, help="CPU minutes per fit (this process)")
    ap.add_argument("--qualities", default="2,3,4,5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--first-level", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--baselines-from", help="copy each image's baseline points from this earlier result "
                    "JSON instead of encoding them again (the encoders are deterministic)")
    ap.add_argument("--kodak", default=str(KODAK), help="folder of kodimNN.png")
    ap.add_argument("--merge", nargs="+", help="merge these result JSONs into --out (and plot); no fitting")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge, Path(args.out))
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    qualities = [int(q) for q in args.qualities.split(",")]
    config = LatentConfig(first_level=args.first_level)
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": __import__("os").cpu_count(), "torch_threads": args.threads},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": np.__version__, "pillow": Image.__version__},
              "budget_cpu_minutes_per_fit": args.minutes, "qualities": qualities,
              "lambdas": {q: quality_lambda(q) for q in qualities}, "config": config.to_dict(),
              "notes": ["bpp from file bytes; PSNR on 8-bit RGB; x265 yuv444p, VVenC yuv420p10 (libvvenc "
                        "has no 4:4:4 here)", "curve = training PSNR/bpp under the quantization proxy"],
              "images": {}}
    if not features.check("avif"):
        result["notes"].append("AVIF skipped: Pillow lacks AVIF support")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    reused = json.loads(Path(args.baselines_from).read_text())["images"] if args.baselines_from else {}
    if args.baselines_from:
        source = Path(args.baselines_from).name
        result["notes"].append(f"baseline points copied from {source} (same encoders)")
    print(f"CPU budget: {args.minutes} CPU-minutes per fit, {len(qualities)} fits per image", flush=True)
    save = lambda: atomic_write_text(out, json.dumps(result, indent=1))  # noqa: E731
    for name in args.images.split(","):
        path = Path(args.kodak) / f"{name}.png"
        if not path.is_file():
            log(f"skip {name}: {path} not found")
            continue
        rgb = np.asarray(Image.open(path).convert("RGB"))
        img = result["images"][name] = {"width": rgb.shape[1], "height": rgb.shape[0]}
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            earlier = reused.get(name, {})
            if args.baselines_from and all(k in earlier for k in BASELINES if k != "avif"):
                img.update({k: earlier[k] for k in BASELINES if k in earlier})
                save()
            elif not args.no_baselines:
                img["jpeg"] = pillow_points(rgb, "JPEG", list(range(5, 96, 5)))
                img["webp"] = pillow_points(rgb, "WEBP", list(range(0, 101, 10)))
                if features.check("avif"):
                    img["avif"] = pillow_points(rgb, "AVIF", list(range(10, 91, 10)))
                img["x265"] = ffmpeg_points(rgb, "x265", [22, 27, 32, 37, 42], tmp)
                img["vvenc"] = ffmpeg_points(rgb, "vvenc", [22, 27, 32, 37, 42], tmp)
                save()
            log(f"{name}: baselines done")
            img["ours"] = ours(rgb, qualities, args.minutes, tmp, config, log)
        summarize(result)
        save()
        bd = {k: round(v, 1) for k, v in img["bd_rate"].items() if v is not None}
        log(f"{name}: BD-rate {json.dumps(bd)}")
    summarize(result)
    save()
    plot(result, out.with_suffix(".png"))
    log(f"mean BD-rate over images: {result['mean_bd_rate']}")


if __name__ == "__main__":
    main()

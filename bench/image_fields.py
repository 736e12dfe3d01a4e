"""Image fields on Kodak: each model with and without CAM at equal parameter counts, against JPEG/WebP.

For every image and model: PSNR against optimizer steps and against fit time (float model, every
``--eval-every`` steps), then the real coded file (quantized weights in a container, at each of
``--bits``) with its bytes, bpp and decoded PSNR; JPEG and WebP (Pillow) are swept over quality
and also matched to each field's bpp. Writes bench/results/<name>.json and <name>_*.png.

    python bench/image_fields.py --images kodim01,kodim03,kodim05 --size 384x256 --params 20k --steps 1200

CPU runs downscale the images (LANCZOS) so the whole run fits in minutes; the JSON says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fieldpress.cli import parse_count, parse_wxh
from fieldpress.fields.image import render
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.pipeline import FitHooks, ImageOptions, SourceImage, code, fit, image_psnr, model_names

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "images" / "kodak"
CAM_PAIRS = {"cam-ffn": "ffn", "cam-hashgrid": "hashgrid"}


def load(name: str, size: tuple[int, int] | None) -> np.ndarray:
    im = Image.open(KODAK / f"{name}.png").convert("RGB")
    if size is not None:
        w, h = size
        if (im.width < im.height) != (w < h):  # portrait Kodak images keep their orientation
            w, h = h, w
        im = im.resize((w, h), Image.LANCZOS)
    return np.array(im)


def pillow_point(arr: np.ndarray, fmt: str, quality: int) -> dict[str, float]:
    buf = io.BytesIO()
    kwargs = {"quality": quality}
    if fmt == "WEBP":
        kwargs["method"] = 6
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    data = buf.getvalue()
    dec = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    h, w = arr.shape[:2]
    return {
        "quality": quality,
        "bytes": len(data),
        "bpp": len(data) * 8 / (w * h),
        "psnr": image_psnr(arr, dec, 8),
    }


def pillow_curve(arr: np.ndarray, fmt: str) -> list[dict[str, float]]:
    return [pillow_point(arr, fmt, q) for q in (1, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)]


def match_bpp(arr: np.ndarray, fmt: str, bpp: float) -> dict[str, float]:
    """The quality whose file is closest in bpp to the field's (bisection on quality 1..100)."""
    best = None
    lo, hi = 1, 100
    while lo <= hi:
        q = (lo + hi) // 2
        p = pillow_point(arr, fmt, q)
        if best is None or abs(p["bpp"] - bpp) < abs(best["bpp"] - bpp):
            best = p
        if p["bpp"] > bpp:
            hi = q - 1
        else:
            lo = q + 1
    assert best is not None
    return best


def run_model(arr: np.ndarray, name: str, args: argparse.Namespace) -> dict:
    """Fit one model through the image pipeline, then code that fit at each of --bits (real file
    bytes, decoded and measured by the pipeline, as fit-image does)."""
    h, w = arr.shape[:2]
    image = SourceImage(arr, RasterInfo(w, h, "RGB", 8))
    options = ImageOptions(model=name, params=args.params, steps=args.steps, seed=args.seed,
                           threads=args.threads, bits=args.bits[0])
    curve: list[dict[str, float]] = []
    clock = {"eval": 0.0, "t0": 0.0, "step": 0}

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        t = time.perf_counter()
        clock["step"] = min(clock["step"] + args.eval_every, args.steps)  # the last call is the stage end
        psnr = image_psnr(arr, render(model, image.info), 8)
        curve.append(
            {
                "step": clock["step"],
                "seconds": round(t - clock["t0"] - clock["eval"], 3),
                "psnr": round(psnr, 3),
            }
        )
        clock["eval"] += time.perf_counter() - t
        return {"psnr_full": psnr}

    clock["t0"] = time.perf_counter()
    hooks = FitHooks(evaluate=evaluate, eval_every=args.eval_every)
    fitted = fit(image, options, torch.device(args.device), hooks)
    fit_seconds = time.perf_counter() - clock["t0"] - clock["eval"]
    coded = []
    for bits in args.bits:
        result = code(fitted, image, dataclasses.replace(options, bits=bits), args.device)
        m = result.metrics
        coded.append({"bits": bits, "bytes": result.bytes, "bpp": result.bytes * 8 / (w * h),
                      "psnr": m["psnr"], "ms_ssim": m["ms_ssim"]})
    plan = fitted.plan
    return {
        "model": name,
        "params": plan.n_params,
        "width": plan.network["n_neurons"],
        "encoding": plan.encoding,
        "lr": plan.lr,
        "batch_size": plan.batch_size,
        "steps": fitted.steps,
        "fit_seconds": round(fit_seconds, 2),
        "float_psnr": image_psnr(arr, fitted.preview(), 8),
        "curve": curve,
        "coded": coded,
    }


def plot(results: dict, out_prefix: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    images = results["images"]
    fig, axes = plt.subplots(len(images), 3, figsize=(16, 4.2 * len(images)), squeeze=False)
    for row, img in enumerate(images):
        ax_s, ax_t, ax_rd = axes[row]
        for m in img["models"]:
            style = "-" if m["model"].startswith("cam-") else "--"
            steps = [c["step"] for c in m["curve"]]
            ax_s.plot(steps, [c["psnr"] for c in m["curve"]], style, label=m["model"])
            ax_t.plot(
                [c["seconds"] for c in m["curve"]], [c["psnr"] for c in m["curve"]], style, label=m["model"]
            )
            ax_rd.plot(
                [c["bpp"] for c in m["coded"]],
                [c["psnr"] for c in m["coded"]],
                "o" + style,
                label=f"{m['model']} ({m['params']} params)",
            )
        for fmt in ("jpeg", "webp"):
            pts = [
                p
                for p in img[fmt]
                if p["bpp"] <= 4 * max(c["bpp"] for m in img["models"] for c in m["coded"])
            ]
            ax_rd.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], ":", label=fmt.upper())
        ax_s.set(title=f"{img['name']} {img['size']}: PSNR vs steps", xlabel="step", ylabel="PSNR (dB)")
        ax_t.set(title="PSNR vs fit time (CPU)", xlabel="seconds", ylabel="PSNR (dB)")
        ax_rd.set(title="rate-distortion (decoded files)", xlabel="bpp", ylabel="PSNR (dB)")
        for ax in (ax_s, ax_t, ax_rd):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_prefix.with_name(out_prefix.name + ".png")
    fig.savefig(path, dpi=90)
    written.append(str(path))
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="kodim01,kodim03,kodim05")
    p.add_argument("--size", default="384x256", help="downscale to WxH (Kodak is 768x512); 'full' keeps it")
    p.add_argument("--models", default="siren,ffn,cam-ffn,hashgrid,cam-hashgrid")
    p.add_argument("--params", default="20k")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--bits", default="8,6", help="quantization bits of the coded files (RD points)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription)")
    p.add_argument("--name", default="image_fields")
    args = p.parse_args(argv)
    args.params = parse_count(args.params)
    args.bits = [int(b) for b in args.bits.split(",")]
    args.models = args.models.split(",")
    for m in args.models:
        if m not in model_names():
            p.error(f"unknown model {m}")
    return args


def header(args: argparse.Namespace) -> dict:
    return {
        "bench": "image_fields",
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "device": args.device,
            "threads": args.threads,
            "cuda": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        },
        "settings": {
            "images": args.images,
            "size": args.size,
            "models": args.models,
            "params": args.params,
            "steps": args.steps,
            "eval_every": args.eval_every,
            "bits": args.bits,
            "seed": args.seed,
            "note": "Kodak downscaled with LANCZOS to --size; PSNR on 8-bit RGB; bpp from real file bytes",
        },
        "images": [],
    }


def run_image(name: str, args: argparse.Namespace) -> dict:
    """Every model on one image, each coded file beside JPEG and WebP at its bpp."""
    arr = load(name, None if args.size == "full" else parse_wxh(args.size))
    h, w = arr.shape[:2]
    entry = {
        "name": name,
        "size": f"{w}x{h}",
        "models": [],
        "jpeg": pillow_curve(arr, "JPEG"),
        "webp": pillow_curve(arr, "WEBP"),
    }
    for m in args.models:
        t = time.perf_counter()
        res = run_model(arr, m, args)
        for c in res["coded"]:
            c["jpeg_at_bpp"] = match_bpp(arr, "JPEG", c["bpp"])
            c["webp_at_bpp"] = match_bpp(arr, "WEBP", c["bpp"])
        entry["models"].append(res)
        best = res["coded"][0]
        print(
            f"{name} {m:13s} params {res['params']:6d} float {res['float_psnr']:.2f} dB  "
            f"{best['bits']}-bit {best['psnr']:.2f} dB at {best['bpp']:.3f} bpp "
            f"(JPEG {best['jpeg_at_bpp']['psnr']:.2f}, WebP {best['webp_at_bpp']['psnr']:.2f})  "
            f"{time.perf_counter() - t:.0f}s",
            flush=True,
        )
    return entry


def cam_gains(images: list[dict]) -> dict:
    """What CAM adds to each base model, per image and on average (float fit and first coded file)."""
    gains = {}
    for cam, base in CAM_PAIRS.items():
        diffs = []
        for img in images:
            by = {m["model"]: m for m in img["models"]}
            if cam in by and base in by:
                diffs.append(
                    {
                        "image": img["name"],
                        "float_db": by[cam]["float_psnr"] - by[base]["float_psnr"],
                        "coded_db": by[cam]["coded"][0]["psnr"] - by[base]["coded"][0]["psnr"],
                        "coded_bpp_ratio": by[cam]["coded"][0]["bpp"] / by[base]["coded"][0]["bpp"],
                    }
                )
        if diffs:
            gains[f"{cam} - {base}"] = {
                "per_image": diffs,
                "mean_float_db": float(np.mean([d["float_db"] for d in diffs])),
                "mean_coded_db": float(np.mean([d["coded_db"] for d in diffs])),
            }
    return gains


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    results = header(args)
    warm = SourceImage(np.zeros((8, 8, 3), np.uint8), RasterInfo(8, 8, "RGB", 8))
    for m in args.models:  # pay one-time costs (lazy imports, allocator) before timing
        options = ImageOptions(model=m, params=args.params, steps=3, threads=args.threads)
        fit(warm, options, torch.device(args.device))
    for name in args.images.split(","):
        results["images"].append(run_image(name, args))
    results["cam_gain"] = gains = cam_gains(results["images"])
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    out = ROOT / "bench" / "results" / args.name
    out.parent.mkdir(parents=True, exist_ok=True)
    results["plots"] = [Path(p).name for p in plot(results, out)]
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(gains, indent=1))
    print(f"wrote {out.with_suffix('.json')} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

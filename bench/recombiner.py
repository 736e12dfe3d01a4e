"""RECOMBINER on 256x256 Kodak crops beside JPEG, WebP (Pillow) and our latent-grid codec.

Each crop is the central 256x256 of a Kodak image: the region `train_prior --exclude-center 256` kept
out of the shipped prior's training patches, so these pixels are held out (the rest of each image was
in the training set; kodim13-24 are not in ../shared/data). RECOMBINER runs at each `--rates` KL budget
(bits per pixel of REC indices) with `--steps` posterior steps; the latent codec at each
`--latent-qualities` capped at `--latent-minutes` CPU minutes; JPEG and WebP over their quality knobs.
Every bpp is from the real file's bytes, every PSNR from 8-bit RGB decoded back; times are this
process's CPU seconds (one torch thread). Each RECOMBINER point also records the KL its blocks spent
(each block's KL when REC coded it) beside the index bits written. The paper's Kodak numbers sit beside
ours. Writes bench/results/recombiner.json after every point and recombiner.png after every image.

The run reported in the README (12 crops, 3 KL budgets, 1,200 posterior steps; at most 247 CPU-seconds
of RECOMBINER per crop), then the baselines and summary recomputed without refitting:

    python bench/recombiner.py --images kodim01,kodim02,kodim03,kodim04,kodim05,kodim06,kodim07,kodim08,\\
kodim09,kodim10,kodim11,kodim12 --rates 0.25,0.5,0.75 --steps 1200 --latent-qualities 2,4 --latent-minutes 1
    python bench/recombiner.py --resummarize
    python bench/recombiner.py --add-fields --fields cam-ffn:9k,cam-ffn:14k --field-steps 1000
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fieldpress.codec.container import open_container  # noqa: E402
from fieldpress.fields.image_io import RasterInfo  # noqa: E402
from fieldpress.fields.pipeline import ImageOptions, SourceImage, compress_image  # noqa: E402
from fieldpress.fields.recombiner.model import load_prior  # noqa: E402
from fieldpress.io import atomic_write_text  # noqa: E402
from fieldpress.metrics import psnr  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import image_rd  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "images" / "kodak"
OUT = ROOT / "bench" / "results" / "recombiner.json"
# He et al., ICLR 2024, Kodak (full 768x512 images, GPU-scale prior and encoder), RGB PSNR; the values
# read from the C3 repository's baselines file (../shared/notes/overfitted-codecs.md)
PAPER_KODAK = [{"bpp": 0.25, "psnr": 29.69}, {"bpp": 0.5, "psnr": 32.04}, {"bpp": 0.75, "psnr": 33.56}]
JPEG_KODAK = [{"bpp": 0.25, "psnr": 24.66}, {"bpp": 0.5, "psnr": 28.95}, {"bpp": 0.75, "psnr": 31.06}]


def crop(name: str, size: int = 256) -> np.ndarray:
    """The central size x size crop of a Kodak image."""
    rgb = np.asarray(Image.open(KODAK / f"{name}.png").convert("RGB"))
    h, w = rgb.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(rgb[y : y + size, x : x + size])


def pillow_points(rgb: np.ndarray, fmt: str, qualities: list[int]) -> list[dict]:
    """Pillow JPEG/WebP at each quality: bpp from the bytes, PSNR decoded back."""
    pts = []
    for q in qualities:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pts.append(
            {
                "q": q,
                "bytes": len(buf.getvalue()),
                "bpp": len(buf.getvalue()) * 8 / rgb.shape[0] / rgb.shape[1],
                "psnr": round(psnr(rgb, dec), 3),
            }
        )
    return pts


def psnr_at(points: list[dict], bpp: float) -> float | None:
    """A baseline's PSNR at ``bpp`` (`image_rd.psnr_at`: linear in log-rate; None outside its range),
    rounded to 0.001 dB as the JSON stores it."""
    value = image_rd.psnr_at(points, bpp)
    return None if value is None else round(value, 3)


def run_codec(rgb: np.ndarray, name: str, options: ImageOptions) -> dict:
    """One fieldpress codec point through the image pipeline, with its CPU seconds."""
    image = SourceImage(rgb, RasterInfo(rgb.shape[1], rgb.shape[0], "RGB", 8), name)
    t0 = time.process_time()
    result = compress_image(image, options, torch.device("cpu"))
    keep = (
        "psnr",
        "bpp",
        "ms_ssim",
        "psnr_before_quant",
        "index_bits",
        "index_bpp",
        "blocks",
        "block_bits",
        "kl_budget",
        "kl_bits_before_coding",
        "kl_spent_bits",
        "kl_spent_over_index_bits",
        "blocks_over_budget",
        "block_kl_bits_max",
        "steps",
        "lambda",
    )
    point = {
        "bytes": result.bytes,
        "cpu_seconds": round(time.process_time() - t0, 1),
        **{k: result.metrics[k] for k in keep if k in result.metrics},
    }
    if options.model == "recombiner":  # the KL spent is the index bits, and the stream is exactly them
        stream = len(open_container(result.data).payload("indices"))
        point["index_stream_bytes"], point["header_and_table_bytes"] = stream, result.bytes - stream
        point["stream_is_index_bits"] = stream == (point["index_bits"] + 7) // 8
    return point


def plot(result: dict, path: Path) -> None:
    """The mean RD curves over the crops beside the paper's full-Kodak numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"recombiner": "o-", "latent": "d-", "fields": "v-", "jpeg": "s--", "webp": "^--"}
    for key, style in styles.items():
        curves = [img[key] for img in result["images"].values() if img.get(key)]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        pts = [sorted(c, key=lambda p: p["bpp"])[:n] for c in curves]
        ax.plot(
            [np.mean([c[i]["bpp"] for c in pts]) for i in range(n)],
            [np.mean([c[i]["psnr"] for c in pts]) for i in range(n)],
            style,
            label=f"{key} (ours, crops)" if key in ("recombiner", "latent", "fields") else key,
        )
    for pts, label, style in [
        (PAPER_KODAK, "RECOMBINER paper (full Kodak, GPU)", "k:"),
        (JPEG_KODAK, "JPEG (full Kodak, C3 baselines)", "c:"),
    ]:
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], style, label=label)
    ax.set(
        title=f"RECOMBINER on {len(result['images'])} Kodak 256x256 crops (mean)",
        xlabel="bpp (file bytes)",
        ylabel="RGB PSNR (dB)",
        xlim=(0, 1.6),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


JPEG_QUALITIES = [1, 2, 3, 5, 10, 20, 30, 50, 70, 85, 95]  # 1-3 reach under 0.3 bpp on textured crops
WEBP_QUALITIES = [0, 2, 5, 20, 40, 60, 80, 95]


def baselines(img: dict, rgb: np.ndarray) -> None:
    """JPEG and WebP points of a crop, and each RECOMBINER point's baseline PSNRs at its bpp."""
    img["jpeg"] = pillow_points(rgb, "JPEG", JPEG_QUALITIES)
    img["webp"] = pillow_points(rgb, "WEBP", WEBP_QUALITIES)
    for pt in img.get("recombiner", []):
        pt["jpeg_at_bpp"] = psnr_at(img["jpeg"], pt["bpp"])
        pt["webp_at_bpp"] = psnr_at(img["webp"], pt["bpp"])


def summarize(result: dict) -> dict:
    """Per KL budget over the crops: mean bpp and PSNR, the mean dB over JPEG where JPEG's curve spans
    the point, the KL-spent / index-bits range; and the most CPU a crop's RECOMBINER encodes took."""
    by_rate: dict[float, list[dict]] = {}
    for img in result["images"].values():
        for pt in img.get("recombiner", []):
            by_rate.setdefault(pt["kl_budget"], []).append(pt)
    rows = []
    for rate, pts in sorted(by_rate.items()):
        over = [p["psnr"] - p["jpeg_at_bpp"] for p in pts if p.get("jpeg_at_bpp") is not None]
        ratios = [p["kl_spent_over_index_bits"] for p in pts]
        mean = {k: round(float(np.mean([p[k] for p in pts])), 4) for k in ("bpp", "psnr")}
        rows.append({"kl_budget": rate, "crops": len(pts), **mean, "jpeg_spans": len(over),
                     "db_over_jpeg": round(float(np.mean(over)), 3) if over else None,
                     "kl_spent_over_index_bits": [min(ratios), max(ratios)],
                     "blocks_over_budget": sum(p["blocks_over_budget"] for p in pts)})
    per_crop = [sum(p["cpu_seconds"] for p in img.get("recombiner", [])) for img in result["images"].values()]
    points = [p["cpu_seconds"] for v in by_rate.values() for p in v]
    return {"rates": rows, "max_crop_cpu_seconds": round(max(per_crop, default=0.0), 1),
            "max_point_cpu_seconds": max(points, default=0.0)}


def field_points(result: dict, fields: list[str], steps: int, save) -> None:  # noqa: ANN001
    """Our quantized neural fields (MODEL:PARAMS, 6-bit weights, `steps` steps) on every crop of `result`."""
    from fieldpress.cli import parse_count

    for name, img in result["images"].items():
        rgb = crop(name)
        img["fields"] = []
        for spec in fields:
            model, params = spec.split(":")
            opts = ImageOptions(model=model, params=parse_count(params), steps=steps, bits=6)
            pt = run_codec(rgb, name, opts)
            img["fields"].append({"model": model, "params": params, "steps": steps, **pt})
            print(f"{name} {spec}: {pt}", flush=True)
            save()


def resummarize(path: Path) -> None:
    """Recompute the baselines (deterministic) and the summary of a finished run, without refitting."""
    result = json.loads(path.read_text())
    for name, img in result["images"].items():
        baselines(img, crop(name))
    result["summary"] = summarize(result)
    atomic_write_text(path, json.dumps(result, indent=1))
    plot(result, path.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=1))


def main() -> None:
    """Run the bench (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default="kodim01,kodim05")
    p.add_argument("--rates", default="0.25,0.5,1.0", help="RECOMBINER KL budgets, bits per pixel")
    p.add_argument("--steps", type=int, default=300, help="posterior steps before coding")
    p.add_argument("--latent-qualities", default="2,4,6")
    p.add_argument("--latent-minutes", type=float, default=0.5, help="CPU minutes per latent fit")
    p.add_argument("--prior", help="prior file (default: the shipped one)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--resummarize", action="store_true",
                   help="recompute the baselines and summary of --out's finished run (no fitting)")
    p.add_argument("--fields", default="", help="our quantized fields too: MODEL:PARAMS,... (cam-ffn:6k)")
    p.add_argument("--field-steps", type=int, default=1000)
    p.add_argument("--add-fields", action="store_true", help="only add --fields to --out's finished run")
    args = p.parse_args()
    fields = [f for f in args.fields.split(",") if f]
    if args.add_fields:
        path = Path(args.out)
        result = json.loads(path.read_text())
        result["fields_command"] = "python " + " ".join(sys.argv)
        field_points(result, fields, args.field_steps,
                     lambda: atomic_write_text(path, json.dumps(result, indent=1)))
        plot(result, path.with_suffix(".png"))
        return
    if args.resummarize:
        resummarize(Path(args.out))
        return
    torch.set_num_threads(1)
    out = Path(args.out)
    prior = load_prior(args.prior)
    result = {
        "bench": "recombiner",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": "cpu, 1 thread",
        "time": "CPU seconds (time.process_time)",
        "command": "python " + " ".join(sys.argv),
        "prior": {"fingerprint": prior.fingerprint(), **prior.meta},
        "held_out": "central 256x256 crops: no prior training patch overlaps them (--exclude-center 256); "
        "the rest of each image was in the prior's training set",
        "paper_kodak": PAPER_KODAK,
        "jpeg_kodak_full": JPEG_KODAK,
        "images": {},
    }
    for name in args.images.split(","):
        rgb = crop(name)
        img = result["images"].setdefault(name, {"crop": "central 256x256"})
        baselines(img, rgb)
        for rate in [float(r) for r in args.rates.split(",")]:
            opts = ImageOptions(model="recombiner", kl_budget=rate, steps=args.steps, prior=args.prior)
            pt = run_codec(rgb, name, opts)
            pt["jpeg_at_bpp"], pt["webp_at_bpp"] = (
                psnr_at(img["jpeg"], pt["bpp"]),
                psnr_at(img["webp"], pt["bpp"]),
            )
            img.setdefault("recombiner", []).append(pt)
            print(f"{name} recombiner {rate}: {pt}", flush=True)
            atomic_write_text(out, json.dumps(result, indent=1))
        for q in [int(q) for q in args.latent_qualities.split(",") if q]:
            pt = run_codec(rgb, name, ImageOptions(model="latent", quality=q, minutes=args.latent_minutes))
            img.setdefault("latent", []).append({"quality": q, **pt})
            print(f"{name} latent q{q}: {pt}", flush=True)
            atomic_write_text(out, json.dumps(result, indent=1))
        if fields:
            field_points({"images": {name: img}}, fields, args.field_steps,
                         lambda: atomic_write_text(out, json.dumps(result, indent=1)))
        result["summary"] = summarize(result)
        plot(result, out.with_suffix(".png"))  # after every image, so a cut-short run keeps its plot
    atomic_write_text(out, json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))


if __name__ == "__main__":
    main()

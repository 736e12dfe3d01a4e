"""HNeRV with and without rate-distortion training (``fit-video --lambda``) on a short clip, next to x265.

    python bench/video_rd_inr.py ../shared/data/video/carphone.mp4 --frames 0:32 --epochs 20 \\
        --sizes 60k 90k 130k --rd-size 90k --lambdas 0.001 0.004 0.016 --rd-epochs 6

Every fieldpress point is a real ``.fpv`` from ``fieldpress.video.pipeline.compress`` (the fit-video
pipeline) decoded back from its bytes: bpp = file bytes x 8 / (frames x W x H), PSNR pooled over all
frames. Without RD: ``--epochs`` fit epochs, weights at ``--bits`` per channel (ANS), embeddings at 6 bits
(the pre-RD pipeline). With RD: ``--epochs - --rd-epochs`` fit epochs, then ``--rd-epochs`` of the rd stage
(loss + lambda x bpp), so both take the same number of steps. Time is CPU time
(``time.process_time()``, one torch thread), since the box is shared. x265 (medium, CRF ladder) on the
same frames, through the ffmpeg of imageio-ffmpeg, for reference. Writes
``bench/results/video_rd_inr_<clip>.json`` after every point and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from video_rd import BASELINES, decode_baseline, encode_baseline, ffmpeg_exe, machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("--frames", default="0:32")
    ap.add_argument("--model", default="hnerv")
    ap.add_argument("--sizes", nargs="*", default=["60k", "90k", "130k"], help="sizes without RD")
    ap.add_argument("--rd-size", default="90k", help="size of the RD fits")
    ap.add_argument("--lambdas", nargs="*", type=float, default=[0.001, 0.004, 0.016])
    ap.add_argument("--targets", nargs="*", type=float, default=[],
                    help="RD fits at --rd-size with lambda steered to each bpp (--rd --target-bpp)")
    ap.add_argument("--epochs", type=int, default=20, help="total epochs of every fit")
    ap.add_argument("--rd-epochs", type=int, default=6, help="of which rd epochs (RD fits)")
    ap.add_argument("--bits", type=int, default=6)
    ap.add_argument("--no-cam", dest="cam", action="store_false")
    ap.add_argument("--x265", nargs="*", type=int, default=[25, 30, 35, 40, 45], help="x265 CRF ladder")
    ap.add_argument("--out", default=None)
    ap.add_argument("--append", action="store_true",
                    help="add this run's points to an existing JSON (same clip and frames; x265 kept)")
    return ap.parse_args(argv)


def _fit_point(clip, size: int, args: argparse.Namespace, lmbda: float | None,  # noqa: ANN001
               target: float | None = None) -> dict:
    """One fit through the fit-video pipeline, its CPU seconds, and the measurements of its bytes
    (rate-trained at `lmbda`, or with lambda steered to `target` bpp)."""
    import torch

    from fieldpress.video.fit import FitOptions
    from fieldpress.video.pipeline import compress

    rd = lmbda is not None or target is not None
    opts = FitOptions(model=args.model, size=size, epochs=args.epochs - (args.rd_epochs if rd else 0),
                      bits=args.bits, cam=args.cam, lmbda=lmbda, rd_epochs=args.rd_epochs if rd else None,
                      rate_trained=target is not None, target_bpp=target)
    t0 = time.process_time()
    res = compress(clip, opts, torch.device("cpu"), show_progress=False)
    cpu = time.process_time() - t0
    m = res.metrics
    keep = ("bpp", "psnr", "psnr_frame_mean", "ms_ssim", "psnr_before_quant", "steps", "rd_lambda",
            "rate_model_bits", "payload_bits", "header_and_table_bytes")
    return {"codec": f"fieldpress-{args.model}" + ("-rd" if rd else ""), "size": size, "params": m["params"],
            "epochs": args.epochs, "rd_epochs": args.rd_epochs if rd else 0, "bytes": res.bytes,
            **{k: m[k] for k in keep if k in m}, **({"target_bpp": target} if target is not None else {}),
            "cpu_seconds": round(cpu, 1)}


def _x265_points(clip, args: argparse.Namespace, work: Path) -> list[dict]:  # noqa: ANN001
    from fieldpress.metrics import bpp as bpp_of
    from fieldpress.video.fit import quality

    exe = ffmpeg_exe()
    enc_args, qflag, _, ext = BASELINES["x265"]
    out = []
    for q in args.x265:
        path = work / f"x265_{q}.{ext}"
        encode_baseline(exe, clip.frames, clip.fps, enc_args, qflag, q, path)
        dec, _ = decode_baseline(exe, path, clip.frames.shape)
        n = path.stat().st_size
        out.append({"codec": "x265", "quality": q, "bytes": n,
                    "bpp": bpp_of(n, clip.count, clip.width, clip.height), **quality(clip.frames, dec)})
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    groups: dict[str, list[dict]] = {}
    for p in result["points"]:
        label = p["codec"] if "epochs" not in p else f"{p['codec']} {p['epochs']} ep"
        label += f" {p['size'] // 1000}k" if p["codec"].endswith("-rd") else ""
        groups.setdefault(label, []).append(p)
    for name, pts in sorted(groups.items()):
        pts = sorted(pts, key=lambda p: p["bpp"])
        style = "s--" if name == "x265" else "o-"
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], style, label=name)
        for p in pts:
            if "rd_lambda" in p:
                ax.annotate(f"λ={p['rd_lambda']:g}", (p["bpp"], p["psnr"]), fontsize=7, xytext=(3, -9),
                            textcoords="offset points")
    c = result["clip"]
    ax.set_xlabel("bits per pixel (file bytes)")
    ax.set_ylabel("PSNR (dB, RGB, pooled)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{c['file']} frames {c['frames']}, {c['width']}x{c['height']}, CPU fits", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import torch

    from fieldpress.cli import parse_count, parse_frames
    from fieldpress.io import atomic_write_text
    from fieldpress.video.io import read_video

    args = _args(argv)
    torch.set_num_threads(1)
    clip_path = Path(args.clip)
    clip = read_video(clip_path, frames=parse_frames(args.frames))
    out = Path(args.out) if args.out else RESULTS / f"video_rd_inr_{clip_path.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"clip": {"file": clip_path.name, "frames": args.frames, "width": clip.width,
                       "height": clip.height},
              "machine": {**machine(), "threads": 1},
              "protocol": {"bpp": "file bytes * 8 / (frames * W * H)", "psnr": "RGB 8-bit, pooled MSE",
                           "cpu_seconds": "time.process_time() of the whole compress (fit, encode, decode "
                                          "back, measure), torch at 1 thread, shared loaded machine"},
              "settings": {k: v for k, v in vars(args).items() if k not in ("clip", "out", "append")},
              "points": [], "complete": False}
    if args.append and out.exists():
        old = json.loads(out.read_text())
        if old["clip"] != result["clip"]:
            raise SystemExit(f"{out} holds another clip or frame range")
        result["points"], result["runs"] = old["points"], [*old.get("runs", [old["settings"]])]
        result["runs"].append(result["settings"])

    def save() -> None:
        atomic_write_text(out, json.dumps(result, indent=1) + "\n")

    if not any(p["codec"] == "x265" for p in result["points"]):
        with tempfile.TemporaryDirectory() as tmp:
            result["points"] += _x265_points(clip, args, Path(tmp))
            save()
    jobs = [(parse_count(s), None, None) for s in args.sizes]
    jobs += [(parse_count(args.rd_size), lam, None) for lam in args.lambdas]
    jobs += [(parse_count(args.rd_size), None, target) for target in args.targets]
    for size, lam, target in jobs:
        point = _fit_point(clip, size, args, lam, target)
        result["points"].append(point)
        print(json.dumps(point), flush=True)
        save()
    result["complete"] = True
    save()
    plot(result, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

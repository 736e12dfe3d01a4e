"""Rate-distortion of fieldpress's video INRs against x264, x265, SVT-AV1 and VVC on one clip.

Each fieldpress fit gets ``--minutes`` (5 by default; a weight model's budget is wall time, the latent
codec's CPU time of one thread). The CPU run of the issue's protocol, on both clips (3 minutes a fit):

    OMP_NUM_THREADS=1 python bench/video_rd.py ../shared/data/video/carphone.mp4 --minutes 3 \
        --models hnerv nervpp --sizes 80k 120k 180k 280k --rd-lambda 0.02 --latent-qualities 3 4 5 6
    OMP_NUM_THREADS=1 python bench/video_rd.py ../shared/data/video/cockatoo.mp4 --frames 0:40 \
        --crop 320x240 --minutes 3 ...   # the same flags: a 320x240 centre crop, as many pixels

On a CUDA GPU (HiNeRV at the hinerv-paper preset's settings: bf16, 300 epochs, 15% pruning, 30 epochs
of 8-bit QAT; nothing here was run on a GPU yet):

    python bench/video_rd.py ../shared/data/video/carphone.mp4 --device cuda --precision bf16 \
        --models hinerv hnerv --sizes 40k 80k 160k 320k --epochs 300 --minutes 0 --prune 0.15 \
        --qat-epochs 30 --bits 8 \
        --rd-targets 0.05 0.1 0.2 0.3 --rd-size 320k --out bench/results/video_rd_carphone_cuda.json

Every codec sees the same frames (``--frames``). fieldpress points are real ``.fpv`` files made by
``fieldpress.video.pipeline.compress`` (the fit-video pipeline); the baselines are encoded by the ffmpeg
inside imageio-ffmpeg from the clip's rgb24 frames (piped raw) at quality ladders that bracket the same
bpp range, and decoded back to rgb24 by the same binary. bpp = file bytes x 8 / (frames x W x H);
PSNR (pooled and mean per frame) and MS-SSIM by ``fieldpress.metrics`` for everyone. Writes
``bench/results/video_rd_<clip>.json`` as it goes (so a cut-short run still reports) and a PNG plot,
and prints each model's BD-rate against x265 (negative = fewer bits than x265 at equal PSNR).
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

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

# (label, ffmpeg encoder args before the quality flag, quality flag, ladder). "medium" presets as the
# issue asks; SVT-AV1 at preset 8 and VVenC at "fast" to keep a CPU run short (stated in the JSON).
BASELINES: dict[str, tuple[list[str], str, list[int], str]] = {
    "x264": (
        ["-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p"],
        "-crf",
        [10, 15, 20, 25, 30, 35, 40, 45],
        "mp4",
    ),
    "x265": (
        ["-c:v", "libx265", "-preset", "medium", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error"],
        "-crf",
        [10, 15, 20, 25, 30, 35, 40, 45],
        "mp4",
    ),
    "svt-av1": (
        ["-c:v", "libsvtav1", "-preset", "8", "-pix_fmt", "yuv420p"],
        "-crf",
        [10, 18, 25, 32, 39, 46, 53, 60],
        "mp4",
    ),
    "vvc": (
        ["-c:v", "libvvenc", "-preset", "fast", "-pix_fmt", "yuv420p10le"],
        "-qp",
        [12, 17, 22, 27, 32, 37, 42, 47],
        "mp4",
    ),
}


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encoders(exe: str) -> set[str]:
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return {line.split()[1] for line in out.splitlines()[10:] if len(line.split()) > 1}


def encode_baseline(
    exe: str, frames: np.ndarray, fps: float, args: list[str], qflag: str, q: int, out: Path
) -> float:
    """Encode raw rgb24 frames; returns encode seconds."""
    t, h, w, _ = frames.shape
    cmd = [
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        f"{fps}",
        "-i",
        "-",
        *args,
        qflag,
        str(q),
        "-an",
        str(out),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace")[-400:])
    return time.perf_counter() - t0


def decode_baseline(exe: str, path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    t, h, w, _ = shape
    cmd = [
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        str(path),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    t0 = time.perf_counter()
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    seconds = time.perf_counter() - t0
    frames = np.frombuffer(raw, np.uint8)
    if frames.size != t * h * w * 3:
        raise RuntimeError(f"{path.name}: decoded {frames.size // (h * w * 3)} frames, expected {t}")
    return frames.reshape(t, h, w, 3), seconds


def machine(device: str = "cpu") -> dict:
    import av
    import torch

    import fieldpress

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyav": av.__version__,
        "fieldpress": fieldpress.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "threads": torch.get_num_threads(),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[str, list[dict]] = {}
    for p in result["points"]:
        groups.setdefault(p["codec"], []).append(p)
    for name, pts in groups.items():
        pts = sorted(pts, key=lambda p: p["bpp"])
        style = "o-" if name.startswith("fieldpress") else "s--"
        for ax, key in zip(axes, ("psnr", "ms_ssim")):
            ax.plot([p["bpp"] for p in pts], [p[key] for p in pts], style, label=name, ms=4)
    for ax, label in zip(axes, ("PSNR (dB, RGB, pooled)", "MS-SSIM")):
        ax.set_xlabel("bits per pixel (real file bytes)")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{result['clip']['file']}: {result['clip']['frames']} frames "
        f"{result['clip']['width']}x{result['clip']['height']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("--models", nargs="*", default=["hnerv"])
    ap.add_argument("--sizes", nargs="+", default=["40k", "80k", "160k", "320k"])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--minutes", type=float, default=5.0,
                    help="budget of each fieldpress fit (0: none, --epochs alone); a weight model's is wall "
                    "time, the latent codec's CPU time")
    ap.add_argument("--frames", default=None)
    ap.add_argument("--resize", default=None, help="WxH, before --crop (every codec sees the same frames)")
    ap.add_argument("--crop", default=None, help="WxH[+X+Y], centred without +X+Y")
    ap.add_argument("--latent-qualities", type=int, nargs="*", default=[],
                    help="also the latent-grid codec (always rate-trained) at these --quality levels")
    ap.add_argument("--codecs", nargs="*", default=list(BASELINES), help="baselines (none: skip them)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (fieldpress fits and decodes)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--bits", type=int, default=8, help="weight bits")
    ap.add_argument("--prune", type=float, default=0.0)
    ap.add_argument("--qat-epochs", type=int, default=0)
    ap.add_argument("--cam", action="store_true", help="CAM in the blocks")
    ap.add_argument("--patch", type=int, default=None, help="hinerv: training patch side")
    ap.add_argument("--rd-targets", type=float, nargs="*", default=[],
                    help="also fit each model with its rate trained (--rd), steered to each bpp")
    ap.add_argument("--rd-size", default="160k", help="size of the steered rate-trained fits")
    ap.add_argument("--rd-lambda", type=float, default=None,
                    help="also fit every --sizes size with its rate trained at this fixed lambda (--lambda)")
    ap.add_argument("--rd-epochs", type=int, default=None, help="rd stage epochs (default epochs / 3)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/video_rd_<clip>.json)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. what was cut)")
    ap.add_argument("--resummarize", action="store_true",
                    help="fit nothing: recompute the BD-rates, ratios and plot of the existing JSON")
    return ap.parse_args(argv)


def _skeleton(args: argparse.Namespace, clip, clip_path: Path) -> dict:  # noqa: ANN001
    """The JSON's fixed part: clip, machine, protocol, settings; points filled as the run goes."""
    t_frames, h, w = clip.count, clip.height, clip.width
    return {
        "clip": {"file": clip_path.name, "frames": t_frames, "width": w, "height": h, "fps": clip.fps,
                 "frame_range": args.frames or f"0:{t_frames}", "resize": args.resize, "crop": args.crop},
        "machine": machine(args.device),
        "protocol": {
            "bpp": "file bytes * 8 / (frames * W * H)",
            "psnr": "RGB 8-bit, MSE pooled over all frames",
            "psnr_frame_mean": "mean of per-frame PSNR (papers' protocol)",
            "ms_ssim": "fieldpress.metrics.ms_ssim (pytorch-msssim's arithmetic)",
            "decode_fps": "fieldpress: frames / decode seconds from the file, one frame at a time, "
            "model load excluded; baselines: ffmpeg subprocess to rgb24 incl. start-up",
        },
        "settings": {
            "models": args.models, "sizes": args.sizes, "epochs": args.epochs, "minutes": args.minutes,
            "device": args.device, "precision": args.precision, "bits": args.bits, "prune": args.prune,
            "qat_epochs": args.qat_epochs, "cam": args.cam, "patch": args.patch,
            "rd_targets": args.rd_targets, "rd_size": args.rd_size, "rd_epochs": args.rd_epochs,
            "rd_lambda": args.rd_lambda,
            "latent_qualities": args.latent_qualities,
            "baselines": {k: {"args": v[0], "quality_flag": v[1], "ladder": v[2]}
                          for k, v in BASELINES.items() if k in args.codecs},
        },
        "note": args.note,
        "points": [],
        "bd_rate_vs_x265": {},
        "skipped": {},
        "bd_points_used": {},  # here from the start, so that an earlier run's in the same file is not kept
    }


def _baseline_points(args: argparse.Namespace, clip, result: dict, save, work: Path) -> None:  # noqa: ANN001
    """Encode and decode the clip with each available ffmpeg codec over its quality ladder."""
    from fieldpress.metrics import bpp as bpp_of
    from fieldpress.video.fit import quality

    exe = ffmpeg_exe()
    available = encoders(exe)
    for name in args.codecs:
        enc_args, qflag, ladder, ext = BASELINES[name]
        encoder = enc_args[enc_args.index("-c:v") + 1]
        if encoder not in available:
            result["skipped"][name] = f"{encoder} is not in {Path(exe).name}"
            print(f"{name}: skipped ({encoder} not available)", flush=True)
            continue
        for q in ladder:
            path = work / f"{name}_{q}.{ext}"
            try:
                enc_s = encode_baseline(exe, clip.frames, clip.fps, enc_args, qflag, q, path)
                dec, dec_s = decode_baseline(exe, path, clip.frames.shape)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                result["skipped"][f"{name}@{q}"] = str(exc)[-300:]
                print(f"{name} {q}: failed {exc}", flush=True)
                continue
            nbytes = path.stat().st_size
            point = {"codec": name, "quality": q, "bytes": nbytes,
                     "bpp": bpp_of(nbytes, clip.count, clip.width, clip.height), **quality(clip.frames, dec),
                     "encode_seconds": round(enc_s, 3), "decode_fps": round(clip.count / dec_s, 1)}
            result["points"].append(point)
            print(f"{name:8s} q={q:3d} bpp={point['bpp']:.4f} psnr={point['psnr']:.2f} "
                  f"ms-ssim={point['ms_ssim']:.4f} enc={enc_s:.1f}s", flush=True)
            save()


def _timed_decode(path: Path, device_name: str, frames: int) -> dict:
    """Decode a .fpv from its file, one frame at a time (model load excluded): frames per wall second and
    the decode's CPU seconds."""
    import torch

    from fieldpress.runtime import cpu_threads, torch_threads
    from fieldpress.video.codec import open_video

    device = torch.device(device_name)
    with torch_threads(cpu_threads() if device.type == "cpu" else 0):
        dec = open_video(path, device=device)
        t0, c0 = time.perf_counter(), time.process_time()
        dec.decode()
        if device.type == "cuda":
            torch.cuda.synchronize()
        dec_s, dec_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"decode_fps": round(frames / dec_s, 1), "decode_cpu_seconds": round(dec_cpu, 2)}


def _latent_point(clip, quality: int, args: argparse.Namespace, work: Path) -> dict:  # noqa: ANN001
    """One point of the latent-grid codec (fit-video --model latent --quality Q) on the CPU, its budget
    --minutes of CPU time."""
    import torch

    from fieldpress.video.fit import FitOptions
    from fieldpress.video.pipeline import compress, write

    out = work / f"latent_q{quality}.fpv"
    opts = FitOptions(model="latent", quality=quality, minutes=args.minutes or None)
    res = compress(clip, opts, torch.device("cpu"), output=out, show_progress=False)
    write(res, out)
    m = res.metrics
    keep = ("bpp", "psnr", "psnr_frame_mean", "ms_ssim", "lambda", "steps_per_group", "fit_cpu_seconds")
    return {"codec": "fieldpress-latent", "quality": quality, "bytes": res.bytes,
            **{k: m[k] for k in keep if k in m}, **_timed_decode(out, "cpu", clip.count), "device": "cpu"}


def _fieldpress_point(clip, model: str, size: int, args: argparse.Namespace, work: Path,  # noqa: ANN001
                      rd_target: float | None = None, rd_lambda: float | None = None) -> dict:
    """One fieldpress point: the fit-video pipeline (compress, write), then a timed decode of the file;
    with `rd_target`, the rate trained (--rd) and lambda steered to that bpp; with `rd_lambda`, the rate
    trained at that fixed lambda (--lambda)."""
    import torch

    from fieldpress.video.fit import FitOptions
    from fieldpress.video.pipeline import compress, write

    out = work / f"{model}_{size}_{rd_target}_{rd_lambda}.fpv"
    device = torch.device(args.device)
    rd: dict = {}
    if rd_target is not None:
        rd = {"rate_trained": True, "target_bpp": rd_target, "qat_epochs": 0, "rd_epochs": args.rd_epochs}
    elif rd_lambda is not None:
        rd = {"lmbda": rd_lambda, "qat_epochs": 0, "rd_epochs": args.rd_epochs}
    opts = FitOptions(**{"model": model, "size": size, "epochs": args.epochs, "minutes": args.minutes or None,
                         "bits": args.bits, "prune": args.prune, "qat_epochs": args.qat_epochs,
                         "precision": args.precision, "cam": args.cam,
                         "patch": args.patch if model == "hinerv" else None, **rd})
    res = compress(clip, opts, device, output=out, show_progress=False)
    write(res, out)
    m = res.metrics
    keep = ("bpp", "psnr", "psnr_frame_mean", "ms_ssim", "psnr_before_quant", "fit_seconds", "epochs_done")
    rd_facts = {} if not rd else {"rd_target_bpp": rd_target, "rd_lambda": m.get("rd_lambda", rd_lambda)}
    kind = "" if not rd else "-rd-target" if rd_target is not None else "-rd"  # steered rows: their own curve
    return {"codec": f"fieldpress-{model}{kind}", "size": size,
            "params": m["params"], "bytes": res.bytes, **{k: m[k] for k in keep}, **rd_facts,
            **_timed_decode(out, args.device, clip.count), "device": str(device), "strides": m["strides"]}


def monotonic(points: list[dict]) -> list[dict]:
    """The points sorted by rate, keeping each only if its PSNR beats every cheaper kept point (a BD-rate
    fits no curve through crossings)."""
    out: list[dict] = []
    for p in sorted(points, key=lambda p: p["bpp"]):
        if not out or p["psnr"] > out[-1]["psnr"]:
            out.append(p)
    return out


def x265_bits_ratio(point: dict, ref: list[dict]) -> float | None:
    """The point's bpp over x265's at the point's PSNR (x265's rate interpolated linearly in log-rate
    between its two monotonic points around that PSNR; None outside x265's range). Unlike a BD-rate it
    needs no curve: one number per point, for codecs with fewer than 4 monotonic points."""
    psnrs = [r["psnr"] for r in ref]  # increasing: `ref` is monotonic in rate
    if not ref or not psnrs[0] <= point["psnr"] <= psnrs[-1]:
        return None
    x265_bpp = float(np.exp(np.interp(point["psnr"], psnrs, np.log([r["bpp"] for r in ref]))))
    return round(point["bpp"] / x265_bpp, 2)


def set_x265_bits_ratios(points: list[dict]) -> list[dict]:
    """Sets every fieldpress point's ``x265_bits_ratio``; returns x265's points monotonic in rate, the
    reference both that ratio and the BD-rates are taken against."""
    ref = monotonic([p for p in points if p["codec"] == "x265"])
    for p in points:
        if p["codec"].startswith("fieldpress"):
            p["x265_bits_ratio"] = x265_bits_ratio(p, ref)
    return ref


def bd_rates_vs_x265(points: list[dict], ref: list[dict]) -> list[tuple[str, list[dict], float | None]]:
    """(codec, its points monotonic in rate, its BD-rate in % or None) for every codec but x265, against
    x265's monotonic points `ref` (PSNR; `fieldpress.metrics.bd_rate`)."""
    from fieldpress.metrics import bd_rate

    out = []
    for codec in sorted({p["codec"] for p in points} - {"x265"}):
        pts = monotonic([p for p in points if p["codec"] == codec])
        out.append((codec, pts, bd_rate([p["bpp"] for p in ref], [p["psnr"] for p in ref],
                                        [p["bpp"] for p in pts], [p["psnr"] for p in pts])))
    return out


def _bd_rates(result: dict) -> None:
    """BD-rate (PSNR) of every codec against x265, each over its points that are monotonic in rate, and
    each fieldpress point's bits ratio to x265 at its PSNR."""
    ref = set_x265_bits_ratios(result["points"])
    for p in result["points"]:  # some x265 point gives at least this PSNR for no more bits
        if p["codec"].startswith("fieldpress"):
            p["x265_dominates"] = any(r["bpp"] <= p["bpp"] and r["psnr"] >= p["psnr"] for r in ref)
    for codec, pts, value in bd_rates_vs_x265(result["points"], ref):
        result.setdefault("bd_points_used", {})[codec] = [round(p["bpp"], 5) for p in pts]
        result["bd_rate_vs_x265"][codec] = None if value is None else round(value, 2)
        shown = "n/a (needs 4 points each and overlapping PSNR)" if value is None else f"{value:+.1f}%"
        print(f"BD-rate vs x265 (PSNR): {codec}: {shown}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from fieldpress.cli import parse_count, parse_crop, parse_frames, parse_wxh
    from fieldpress.io import atomic_write_text
    from fieldpress.video.io import read_video
    from fieldpress.video.models import config_for

    args = _args(argv)
    clip_path = Path(args.clip)
    cut = "".join(f"_{k}{v.split('+')[0]}" for k, v in (("resize", args.resize), ("crop", args.crop)) if v)
    out_json = Path(args.out) if args.out else RESULTS / f"video_rd_{clip_path.stem}{cut}.json"
    if args.resummarize:
        result = json.loads(out_json.read_text())
        _bd_rates(result)
        atomic_write_text(out_json, json.dumps(result, indent=1))
        plot(result, out_json.with_suffix(".png"))
        return 0
    out_json.parent.mkdir(parents=True, exist_ok=True)
    clip = read_video(clip_path, frames=parse_frames(args.frames) if args.frames else None,
                      resize=parse_wxh(args.resize) if args.resize else None,
                      crop=parse_crop(args.crop) if args.crop else None)
    result = _skeleton(args, clip, clip_path)
    # other benches' keys in the same file (bench/video_latent.py's "latent") are kept
    others = {k: v for k, v in json.loads(out_json.read_text()).items() if k not in result} \
        if out_json.exists() else {}

    def save() -> None:
        atomic_write_text(out_json, json.dumps({**result, **others}, indent=1))

    for model in args.models:  # fail before spending time on the baselines
        for size_text in [*args.sizes, *([args.rd_size] if args.rd_targets else [])]:
            config_for(model, clip.height, clip.width, clip.count, parse_count(size_text))
    work = Path(tempfile.mkdtemp(prefix="video_rd_"))
    _baseline_points(args, clip, result, save, work)
    for model in args.models:
        for size_text in args.sizes:
            point = _fieldpress_point(clip, model, parse_count(size_text), args, work)
            result["points"].append(point)
            print(f"fieldpress-{model} {size_text}: bpp={point['bpp']:.4f} psnr={point['psnr']:.2f} "
                  f"ms-ssim={point['ms_ssim']:.4f} fit={point['fit_seconds']:.0f}s "
                  f"epochs={point['epochs_done']}", flush=True)
            save()
        if args.rd_lambda is not None:
            for size_text in args.sizes:
                point = _fieldpress_point(clip, model, parse_count(size_text), args, work,
                                          rd_lambda=args.rd_lambda)
                result["points"].append(point)
                print(f"fieldpress-{model}-rd {size_text} lambda={args.rd_lambda}: bpp={point['bpp']:.4f} "
                      f"psnr={point['psnr']:.2f} fit={point['fit_seconds']:.0f}s", flush=True)
                save()
        for target in args.rd_targets:
            point = _fieldpress_point(clip, model, parse_count(args.rd_size), args, work, rd_target=target)
            result["points"].append(point)
            print(f"fieldpress-{model}-rd-target {args.rd_size} -> {target} bpp: bpp={point['bpp']:.4f} "
                  f"psnr={point['psnr']:.2f} lambda={point['rd_lambda']} fit={point['fit_seconds']:.0f}s",
                  flush=True)
            save()
    for quality in args.latent_qualities:
        point = _latent_point(clip, quality, args, work)
        result["points"].append(point)
        print(f"fieldpress-latent q{quality}: bpp={point['bpp']:.4f} psnr={point['psnr']:.2f} "
              f"steps/group={point.get('steps_per_group')}", flush=True)
        save()
    _bd_rates(result)
    save()
    plot(result, out_json.with_suffix(".png"))
    print(f"wrote {out_json} and {out_json.with_suffix('.png')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

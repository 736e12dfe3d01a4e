"""HiNeRV beside HNeRV on the CPU at equal stored size and about equal CPU time, with x265 on the same frames.

    OMP_NUM_THREADS=1 nice -n 10 python bench/hinerv.py --frames 0:32 --size 150k --cpu-seconds 240

Each model is first fitted for one and for three epochs (probes: their difference is the CPU cost of
an epoch, the rest the fixed cost of building, quantizing and measuring), then for as many epochs as
make its whole compress take ``--cpu-seconds``. Every number is measured on a real file:
bpp = file bytes x 8 / (frames x W x H), PSNR (pooled, RGB 8-bit) of the file decoded back. Times are
CPU seconds (`time.process_time()`, one torch thread), not wall time: the machine is shared. Decode fps
= frames / CPU seconds of a full decode from the file. x265 (medium, CRF ladder) encodes the same rgb24
frames through the ffmpeg in imageio-ffmpeg. Writes bench/results/hinerv_carphone.json after every row,
and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import video_rd  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"
MODELS = {  # the CPU preview settings of each: HNeRV's `preview`, HiNeRV's `hinerv-preview`
    "hinerv": {"cam": False, "bits": 6},
    "hnerv": {"cam": True, "bits": 6},
}


def fit_point(clip, model: str, size: int, epochs: int, work: Path) -> dict:  # noqa: ANN001
    """Fit, write and decode one file; CPU seconds of each part."""
    from fieldpress.video.codec import open_video
    from fieldpress.video.fit import FitOptions
    from fieldpress.video.pipeline import compress, write

    out = work / f"{model}_{size}_{epochs}.fpv"
    opts = FitOptions(model=model, size=size, epochs=epochs, **MODELS[model])
    c0 = time.process_time()
    res = compress(clip, opts, torch.device("cpu"), output=out, show_progress=False)
    total = time.process_time() - c0
    write(res, out)
    dec = open_video(out)
    c1 = time.process_time()
    dec.decode()
    dec_cpu = time.process_time() - c1
    m = res.metrics
    keep = ("params", "bpp", "psnr", "psnr_frame_mean", "ms_ssim", "psnr_before_quant", "steps", "strides")
    return {"codec": f"fieldpress-{model}", "size": size, "epochs": epochs, "bytes": res.bytes,
            **{k: m[k] for k in keep}, "compress_cpu_seconds": round(total, 1),
            "decode_cpu_seconds": round(dec_cpu, 2), "decode_fps_cpu": round(clip.count / dec_cpu, 1),
            "cam": opts.cam, "bits": opts.bits}


def x265_points(clip, work: Path, ladder: list[int]) -> list[dict]:  # noqa: ANN001
    from fieldpress.metrics import bpp
    from fieldpress.video.fit import quality

    exe = video_rd.ffmpeg_exe()
    args, qflag, _, ext = video_rd.BASELINES["x265"]
    out = []
    for q in ladder:
        path = work / f"x265_{q}.{ext}"
        video_rd.encode_baseline(exe, clip.frames, clip.fps, args, qflag, q, path)
        dec, dec_s = video_rd.decode_baseline(exe, path, clip.frames.shape)
        n = path.stat().st_size
        out.append({"codec": "x265", "crf": q, "bytes": n, "bpp": bpp(n, clip.count, clip.width, clip.height),
                    **quality(clip.frames, dec), "decode_fps_wall": round(clip.count / dec_s, 1)})
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name in sorted({p["codec"] for p in result["points"]}):
        pts = sorted((p for p in result["points"] if p["codec"] == name and not p.get("probe")),
                     key=lambda p: p["bpp"])
        style = "s--" if name == "x265" else "o"
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], style, label=name)
    ax.set_xlabel("bits per pixel (file bytes)")
    ax.set_ylabel("PSNR (dB, RGB, pooled)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    clip = result["clip"]
    ax.set_title(f"{clip['file']} {clip['frames']} frames, fits of {result['cpu_seconds']} CPU s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from fieldpress.cli import parse_count, parse_frames
    from fieldpress.io import atomic_write_text
    from fieldpress.video.io import read_video

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", default=str(DATA / "carphone.mp4"))
    ap.add_argument("--frames", default="0:32")
    ap.add_argument("--size", default="150k")
    ap.add_argument("--cpu-seconds", type=float, default=240.0, help="fit budget per model (CPU seconds)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--x265", nargs="*", type=int, default=[20, 25, 30, 35])
    ap.add_argument("--out", default=str(RESULTS / "hinerv_carphone.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clip = read_video(Path(args.clip), frames=parse_frames(args.frames))
    size = parse_count(args.size)
    out = Path(args.out)
    result = {"clip": {"file": Path(args.clip).name, "frames": clip.count, "range": args.frames,
                       "width": clip.width, "height": clip.height},
              "machine": video_rd.machine(), "load_average_at_start": list(os.getloadavg()),
              "cpu_seconds": args.cpu_seconds, "size": size, "points": []}

    def save() -> None:
        atomic_write_text(out, json.dumps(result, indent=1))

    work = Path(tempfile.mkdtemp(prefix="hinerv_bench_"))
    result["points"] += x265_points(clip, work, args.x265)
    save()
    for model in args.models:
        probes = [fit_point(clip, model, size, n, work) for n in (1, 3)]
        result["points"] += [{**p, "probe": True} for p in probes]
        save()
        # per epoch from the difference of two probes: model building, quantizing and measuring cost the
        # same in both (one probe alone counted them as fitting and gave fits of a third to a half the budget)
        per_epoch = max((probes[1]["compress_cpu_seconds"] - probes[0]["compress_cpu_seconds"]) / 2, 1e-3)
        fixed = max(probes[0]["compress_cpu_seconds"] - per_epoch, 0.0)
        epochs = max(1, int((args.cpu_seconds - fixed) / per_epoch))
        point = fit_point(clip, model, size, epochs, work)
        result["points"].append(point)
        print(f"{model}: {epochs} epochs, {point['compress_cpu_seconds']} CPU s, bpp {point['bpp']:.4f}, "
              f"PSNR {point['psnr']:.2f}, decode {point['decode_fps_cpu']} fps (CPU)", flush=True)
        save()
    plot(result, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Rate-distortion of the latent-grid video codec (``fit-video --model latent``) against x264 and x265
on the same frames of one clip, at the preview preset's CPU budget.

Each fieldpress point is the fit-video pipeline at one ``--quality`` with a CPU-time budget (one thread,
``time.process_time``): the preview preset's 8 CPU-minutes for 120 CIF frames, scaled to the frames
fitted. bpp from the file's bytes; PSNR from the file decoded back. Baselines: the ffmpeg inside
imageio-ffmpeg (medium presets, CRF ladder). BD-rate against x265 with `fieldpress.metrics.bd_rate`
over points that are monotonic in rate (the JSON says which were used), and per point its bits over
x265's at the same PSNR (``x265_bits_ratio``, as in ``bench/video_rd.py``). Decode speed: our decoder's
frames per CPU-second (one thread) next to ffmpeg's x265 decode, both as CPU time of the decoding
process (ffmpeg: the child's user + system time, start-up included) and as wall time.

The results go into ``bench/results/video_rd_<clip>.json`` under the key ``latent`` (other keys of an
existing file are kept), written after every point, and a plot ``video_rd_<clip>_latent.png``.

    python bench/video_latent.py ../shared/data/video/carphone.mp4 --frames 0:32 --qualities 2 3 4 5

``--jobs 2`` runs two fits side by side (one process and one thread each); their budgets are CPU time,
so they get the same steps as one after the other, on a machine with a core for each.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_rd import (  # noqa: E402
    BASELINES,
    RESULTS,
    bd_rates_vs_x265,
    encode_baseline,
    ffmpeg_exe,
    machine,
    set_x265_bits_ratios,
)

PREVIEW_CPU_SECONDS, PREVIEW_PIXELS = 8 * 60.0, 176 * 144 * 120


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _decode_ffmpeg(exe: str, path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, float, float]:
    """(frames, wall seconds, CPU seconds of the ffmpeg process) of decoding `path` to rgb24."""
    import subprocess

    cpu0, t0 = _children_cpu(), time.perf_counter()
    raw = subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", str(path),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    return np.frombuffer(raw, np.uint8).reshape(shape), wall, cpu


def baselines(clip, codecs: list[str], work: Path) -> list[dict]:  # noqa: ANN001
    """x264/x265 points on the clip's frames over their CRF ladders."""
    from fieldpress.metrics import bpp
    from fieldpress.video.fit import quality

    exe, points = ffmpeg_exe(), []
    for name in codecs:
        args, qflag, ladder, ext = BASELINES[name]
        for q in ladder:
            path = work / f"{name}_{q}.{ext}"
            encode_baseline(exe, clip.frames, clip.fps, args, qflag, q, path)
            dec, wall, cpu = _decode_ffmpeg(exe, path, clip.frames.shape)
            n = path.stat().st_size
            rate = bpp(n, clip.count, clip.width, clip.height)
            points.append({"codec": name, "quality": q, "bytes": n, "bpp": rate, **quality(clip.frames, dec),
                           "decode_fps_cpu": round(clip.count / max(cpu, 1e-9), 1),
                           "decode_fps_wall": round(clip.count / wall, 1)})
            print(f"{name} crf {q}: {points[-1]['bpp']:.4f} bpp {points[-1]['psnr']:.2f} dB", flush=True)
    return points


def latent_point(clip, quality: int, seconds: float, work: Path) -> dict:  # noqa: ANN001
    """One fit-video --model latent point, and a timed one-thread decode of its file."""
    import torch

    from fieldpress.runtime import torch_threads
    from fieldpress.video.codec import open_video
    from fieldpress.video.fit import FitOptions
    from fieldpress.video.latent.method import compress_latent

    torch.set_num_threads(1)  # a worker process of --jobs starts with torch's default

    opts = FitOptions(model="latent", size=None, minutes=seconds / 60.0, quality=quality)
    res = compress_latent(clip, opts, torch.device("cpu"), show_progress=False)
    path = work / f"latent_q{quality}.fpv"
    res.write(path)
    with torch_threads(1):
        dec = open_video(path)
        t0, w0 = time.process_time(), time.perf_counter()
        frames = dec.decode()
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    assert np.array_equal(frames, res.reconstruction)
    keep = ("bpp", "psnr", "psnr_frame_mean", "ms_ssim", "lambda", "groups", "steps_per_group",
            "fit_cpu_seconds", "encode_cpu_seconds", "latent_bytes", "weight_bytes", "macs_per_pixel")
    return {"codec": "fieldpress-latent", "quality": quality, "bytes": res.bytes,
            **{k: res.metrics[k] for k in keep},
            "decode_fps_cpu": round(clip.count / cpu, 2), "decode_fps_wall": round(clip.count / wall, 2)}


def _point_in_worker(clip_path: str, frames: str, quality: int, seconds: float, work: str) -> dict:
    """`latent_point` in a worker process, which reads the clip itself."""
    from fieldpress.cli import parse_frames
    from fieldpress.video.io import read_video

    clip = read_video(Path(clip_path), frames=parse_frames(frames))
    return latent_point(clip, quality, seconds, Path(work))


def _points(clip, clip_path: Path, frames: str, qualities: list[int], seconds: float, work: Path,  # noqa: ANN001
            jobs: int) -> Iterator[dict]:
    """The latent points as they finish: in this process with one job, else in `jobs` worker processes."""
    if jobs <= 1:
        for q in qualities:
            yield latent_point(clip, q, seconds, work)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_point_in_worker, str(clip_path), frames, q, seconds, str(work))
                   for q in qualities]
        for future in as_completed(futures):
            yield future.result()


def plot(section: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in sorted({p["codec"] for p in section["points"]}):
        pts = sorted((p for p in section["points"] if p["codec"] == name), key=lambda p: p["bpp"])
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], "o-" if "fieldpress" in name else "s--",
                label=name, ms=4)
    ax.set(xlabel="bits per pixel (file bytes)", ylabel="PSNR (dB, RGB, pooled)", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    clip = section["clip"]
    ax.set_title(f"{clip['file']} frames {clip['frame_range']}, {clip['width']}x{clip['height']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("clip")
    ap.add_argument("--frames", default="0:32")
    ap.add_argument("--qualities", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--cpu-seconds", type=float, default=None,
                    help="per fit (default: the preview budget scaled to the frames)")
    ap.add_argument("--codecs", nargs="+", default=["x264", "x265"])
    ap.add_argument("--jobs", type=int, default=1,
                    help="fits run side by side, one process and one thread each (budgets are CPU time)")
    ap.add_argument("--add", action="store_true",
                    help="keep the points of an earlier run on the same frames and budget (baselines "
                         "included) and add these qualities (a quality run again replaces its point)")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    import torch

    from fieldpress.cli import parse_frames
    from fieldpress.io import atomic_write_text
    from fieldpress.video.io import read_video

    torch.set_num_threads(1)
    clip_path = Path(args.clip)
    clip = read_video(clip_path, frames=parse_frames(args.frames))
    seconds = args.cpu_seconds or PREVIEW_CPU_SECONDS * clip.count * clip.width * clip.height / PREVIEW_PIXELS
    out = RESULTS / f"video_rd_{clip_path.stem}.json"
    doc = json.loads(out.read_text()) if out.exists() else {}
    section = {"clip": {"file": clip_path.name, "frames": clip.count, "width": clip.width,
                        "height": clip.height, "fps": clip.fps, "frame_range": args.frames},
               "machine": machine(), "cpu_seconds_per_fit": round(seconds, 1),
               "budget": "preview preset: 8 CPU-minutes per 120 CIF frames, scaled to the frames fitted; "
                         "CPU time of one thread (time.process_time), not wall time",
               "note": args.note, "fits_side_by_side": args.jobs, "points": [], "bd_rate_vs_x265": {},
               "bd_points_used": {}}
    earlier = doc.get("latent")
    if args.add:
        if not earlier or earlier.get("clip") != section["clip"] or \
                earlier.get("cpu_seconds_per_fit") != section["cpu_seconds_per_fit"]:
            raise SystemExit("--add: no earlier run on these frames with this budget in " + str(out))
        section["points"] = [p for p in earlier["points"] if p.get("quality") not in args.qualities
                             or p["codec"] != "fieldpress-latent"]
        section["note"] = "; ".join(n for n in (earlier.get("note"), args.note) if n)
        section["runs"] = earlier.get("runs", 1) + 1
    doc["latent"] = section

    def save() -> None:
        atomic_write_text(out, json.dumps(doc, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        if not args.add:
            section["points"] += baselines(clip, args.codecs, Path(tmp))
        save()
        for p in _points(clip, clip_path, args.frames, args.qualities, seconds, Path(tmp), args.jobs):
            section["points"].append(p)
            print(f"latent q{p['quality']}: {p['bpp']:.4f} bpp {p['psnr']:.2f} dB, fit "
                  f"{p['fit_cpu_seconds']} CPU-s", flush=True)
            save()
        section["points"].sort(key=lambda p: (p["codec"], p.get("quality", 0)))
    ref = set_x265_bits_ratios(section["points"])
    for name, pts, value in bd_rates_vs_x265(section["points"], ref):
        section["bd_rate_vs_x265"][name] = None if value is None else round(value, 2)
        section["bd_points_used"][name] = [p.get("quality") for p in pts]
        print(f"BD-rate vs x265: {name}: {value}", flush=True)
    save()
    plot(section, RESULTS / f"video_rd_{clip_path.stem}_latent.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

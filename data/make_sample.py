"""Generate fieldpress's embedded default clip: data/sample.mp4.

A short clip that pans and zooms over a photo scikit-image ships (`skimage.data.coffee()`, public
domain), so a fresh clone needs no download. Deterministic: the same frames every run.

    python data/make_sample.py [-o data/sample.mp4] [--size 192x128] [--frames 48] [--fps 24]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image


def sample_frames(width: int = 192, height: int = 128, frames: int = 48) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: a smooth pan from left to right with a slow zoom in and out."""
    from skimage import data

    photo = Image.fromarray(data.coffee())  # 600x400 RGB
    pw, ph = photo.size
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    aspect = width / height
    for t in range(frames):
        phase = t / max(frames - 1, 1)
        zoom = 1.0 + 0.15 * math.sin(math.pi * phase)          # 1.0 -> 1.15 -> 1.0
        crop_h = ph / zoom * 0.9
        crop_w = min(crop_h * aspect, pw * 0.95)
        crop_h = crop_w / aspect
        cx = crop_w / 2 + (pw - crop_w) * (0.3 + 0.4 * phase)  # pan left to right
        cy = ph / 2 + 0.04 * ph * math.sin(2 * math.pi * phase)  # gentle vertical drift
        box = (cx - crop_w / 2, cy - crop_h / 2, cx + crop_w / 2, cy + crop_h / 2)
        frame = photo.resize((width, height), Image.Resampling.BICUBIC, box=box)
        out[t] = np.asarray(frame)
    return out


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """Write frames as near-lossless H.264 (yuv444p, CRF 4) through PyAV, atomically."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "4", "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", default=str(Path(__file__).with_name("sample.mp4")))
    parser.add_argument("--size", default="192x128", help="WxH")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = sample_frames(width, height, args.frames)
    write_mp4(frames, Path(args.output), args.fps)
    print(f"wrote {args.output}: {args.frames} frames, {width}x{height}, {args.fps} fps")


if __name__ == "__main__":
    main()

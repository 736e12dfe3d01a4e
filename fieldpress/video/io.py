"""Video input and output through PyAV: decode any clip ffmpeg reads to uint8 RGB frames in memory,
and write frames back as an mp4 (x264) or a folder of PNGs.

Frames are kept as ``uint8 (T, H, W, 3)`` numpy arrays (a 720p, 132-frame clip is 365 MB as uint8,
four times that as float) and converted to float per batch by the fitting code. Reading applies
``--frames`` first (frames outside the range are decoded but never converted), then ``--resize``
(swscale, area filter) on the whole frame, then ``--crop``.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fieldpress.errors import InputError
from fieldpress.io import atomic_path, atomic_write_bytes


class VideoWarning(UserWarning):
    """Something about the input that we handle but the user should know (10-bit, audio, VFR)."""


def warn(message: str) -> None:
    """Emit a one-line VideoWarning (shown as ``warning: ...`` by the commands)."""
    warnings.warn(message, VideoWarning, stacklevel=3)


@dataclass
class VideoClip:
    """Decoded frames plus what is needed to describe them in a container header."""

    frames: np.ndarray                 # uint8 (T, H, W, 3) RGB
    fps: float
    frame_start: int = 0               # index of frames[0] in the source
    source: dict[str, Any] = field(default_factory=dict)   # width, height, pix_fmt, codec, frames

    @property
    def count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


_TEN_BIT_MARKERS = ("p10", "p12", "p14", "p16", "10le", "10be", "12le", "12be")


def _fps_of(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if value > 0:
                return value
    return 25.0


Crop = tuple[int, int, "int | None", "int | None"]


def _crop_box(width: int, height: int, crop: Crop) -> tuple[int, int, int, int]:
    cw, ch, cx, cy = crop
    if cw > width or ch > height:
        raise InputError(f"--crop {cw}x{ch} is larger than the {width}x{height} frame")
    x = (width - cw) // 2 if cx is None else cx
    y = (height - ch) // 2 if cy is None else cy
    if x + cw > width or y + ch > height:
        raise InputError(f"--crop {cw}x{ch}+{x}+{y} does not fit inside the {width}x{height} frame")
    return x, y, cw, ch


def read_video(path: str | Path, frames: tuple[int, int | None] | None = None,
               resize: tuple[int, int] | None = None,
               crop: tuple[int, int, int | None, int | None] | None = None) -> VideoClip:
    """Decode `path` to uint8 RGB frames: ``frames`` is (start, end-exclusive or None), ``resize``
    (W, H) and ``crop`` (W, H, X|None, Y|None; None offsets centre the crop)."""
    import av

    path = Path(path)
    start, end = frames if frames is not None else (0, None)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable video ({_short(exc)})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        pix_fmt = stream.codec_context.pix_fmt or (stream.format.name if stream.format else "unknown")
        if any(m in str(pix_fmt) for m in _TEN_BIT_MARKERS):
            warn(f"{path.name}: {pix_fmt} input is read as 8-bit RGB (high bit depth is dropped)")
        if container.streams.audio:
            warn(f"{path.name}: the audio track is dropped (fieldpress compresses the pictures only)")
        fps = _fps_of(stream)
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if (stream.average_rate and stream.guessed_rate
                and abs(float(stream.average_rate) - float(stream.guessed_rate)) > 0.05):
            warn(f"{path.name}: variable frame rate; keeping the average {fps:.3f} fps")
        source = {"width": int(stream.codec_context.width), "height": int(stream.codec_context.height),
                  "pix_fmt": str(pix_fmt), "codec": stream.codec_context.name, "file": path.name}
        out: list[np.ndarray] = []
        index = -1
        box = None
        try:
            for frame in container.decode(stream):
                index += 1
                if index < start:
                    continue
                if end is not None and index >= end:
                    break
                if resize is not None:
                    rgb = frame.to_ndarray(width=resize[0], height=resize[1], format="rgb24",
                                           interpolation="AREA")
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                if crop is not None:
                    if box is None:
                        box = _crop_box(rgb.shape[1], rgb.shape[0], crop)
                    x, y, cw, ch = box
                    rgb = rgb[y:y + ch, x:x + cw]
                out.append(np.ascontiguousarray(rgb))
        except av.error.FFmpegError as exc:
            if not out:
                raise InputError(f"{path}: the video stream cannot be decoded ({_short(exc)})") from None
            warn(f"{path.name}: decoding stopped after {index} frames ({_short(exc)}); "
                 "the file looks truncated")
    if not out:
        if index < 0:
            raise InputError(f"{path}: the video has no decodable frames (empty or truncated file)")
        raise InputError(f"{path}: --frames {start}:{'' if end is None else end} selects no frames "
                         f"(the clip has {index + 1})")
    if end is not None and len(out) < end - start:
        warn(f"{path.name}: --frames asked for {end - start} frames, the clip gave {len(out)}")
    if duration:
        source["duration"] = round(duration, 6)
    return VideoClip(frames=np.stack(out), fps=fps, frame_start=start, source=source)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


# ----------------------------------------------------------------------------- writing
def is_folder_output(path: str | Path) -> bool:
    """DESIGN.md rule: an existing directory, a trailing slash or no suffix means a PNG folder."""
    text = str(path)
    p = Path(text)
    return p.is_dir() or text.endswith(("/", "\\")) or p.suffix == ""


def write_png_folder(frames: np.ndarray, folder: str | Path, first_index: int = 0) -> int:
    """Write frames as ``frame_%06d.png`` (numbered by source index), each atomically; return bytes."""
    import io

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
        total += atomic_write_bytes(folder / f"frame_{first_index + i:06d}.png", buf.getvalue())
    return total


def _mp4_rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def write_mp4(frames: np.ndarray, path: str | Path, fps: float, lossless: bool = False) -> int:
    """Encode frames to an mp4: x264 CRF 18 (yuv420p, yuv444p when a side is odd), or lossless
    RGB with libx264rgb. Written atomically; returns the file size."""
    import av

    path = Path(path)
    height, width = int(frames.shape[1]), int(frames.shape[2])
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            if lossless:
                stream = out.add_stream("libx264rgb", rate=_mp4_rate(fps))
                stream.pix_fmt = "rgb24"
                stream.options = {"crf": "0", "preset": "medium"}
            else:
                stream = out.add_stream("libx264", rate=_mp4_rate(fps))
                stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
                stream.options = {"crf": "18", "preset": "medium"}
            stream.width, stream.height = width, height
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in stream.encode(vf):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        size = tmp.stat().st_size
    return size


def write_video(frames: np.ndarray, path: str | Path, fps: float, lossless: bool = False,
                first_index: int = 0) -> int:
    """Write to a PNG folder or an mp4 according to DESIGN.md's output rule; return bytes written."""
    if is_folder_output(path):
        return write_png_folder(frames, path, first_index=first_index)
    suffix = Path(path).suffix.lower()
    if suffix not in (".mp4", ".m4v", ".mov"):
        raise InputError(f"{path}: output must be an .mp4 file or a folder for PNG frames")
    return write_mp4(frames, path, fps, lossless=lossless)


def show_warnings_as_lines() -> None:
    """Print VideoWarnings as ``warning: message`` on stderr (no file/line noise) in commands."""
    original = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, VideoWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = _show

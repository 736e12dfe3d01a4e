"""Video input and output through PyAV: decode any clip ffmpeg reads to uint8 RGB frames in memory,
and write frames back as an mp4 (x264) or a folder of PNGs.

Frames are kept as ``uint8 (T, H, W, 3)`` numpy arrays (a 720p, 132-frame clip is 365 MB as uint8,
four times that as float) and converted to float per batch by the fitting code. Reading applies
``--frames`` first (frames outside the range are decoded but never converted), then ``--resize``
(swscale, area filter) on the whole frame, then ``--crop``. Input deeper than 8 bits (10-bit HEVC,
ProRes, FFV1) is converted through 16-bit RGB and rounded to 8 bits, with a warning. A variable
frame rate clip keeps every decoded frame in presentation order; its rate is the average over the
frames read (from their timestamps), with a warning.
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
VFR_TOLERANCE = 0.05  # relative spread of frame durations above which a clip counts as variable-rate


def _fps_of(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if value > 0:
                return value
    return 25.0


def bit_depth(stream: Any) -> int:
    """Bits per component of the stream's pixel format (8 when PyAV cannot say)."""
    fmt = stream.format or getattr(stream.codec_context, "format", None)
    bits = [int(c.bits) for c in getattr(fmt, "components", ()) or ()]
    if bits:
        return max(bits)
    pix_fmt = str(stream.codec_context.pix_fmt or "")
    return 10 if any(m in pix_fmt for m in _TEN_BIT_MARKERS) else 8


def _rgb8(frame: Any, resize: tuple[int, int] | None, deep: bool) -> np.ndarray:
    """One decoded frame as uint8 RGB. A deep (more than 8-bit) frame goes through 16-bit RGB and is
    rounded to nearest (swscale's own 8-bit path truncates: a third of 10-bit values end one lower)."""
    size = {} if resize is None else {"width": resize[0], "height": resize[1], "interpolation": "AREA"}
    if not deep:
        return frame.to_ndarray(format="rgb24", **size)
    wide = frame.to_ndarray(format="rgb48le", **size).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def variable_rate(times: list[float], tick: float = 0.0) -> float | None:
    """The average rate of presentation times that are not evenly spaced (None when they are, or
    when there are too few): frames per second over the span of the decoded frames. Steps may
    differ by 5% plus one `tick` (the time base: 59.94 fps in milliseconds is 16 and 17 ms)."""
    if len(times) < 3:
        return None
    ordered = np.sort(np.asarray(times, dtype=np.float64))
    steps = np.diff(ordered)
    span = float(ordered[-1] - ordered[0])
    if steps.min() <= 0 or span <= 0:
        return None
    if steps.max() - steps.min() <= VFR_TOLERANCE * float(np.median(steps)) + 1.001 * tick:
        return None
    return (len(times) - 1) / span


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
    (W, H) and ``crop`` (W, H, X|None, Y|None; None offsets centre the crop). Frames come in
    presentation order, one per decoded frame (a variable-rate clip is neither padded nor thinned);
    deeper than 8-bit input is rounded to 8 bits with a warning."""
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
        depth = bit_depth(stream)
        if depth > 8:
            warn(f"{path.name}: {pix_fmt} is {depth}-bit; fieldpress codes 8-bit RGB, so frames are "
                 f"converted to 8 bits (rounded to nearest) and the extra precision is dropped")
        if container.streams.audio:
            warn(f"{path.name}: the audio track is dropped (fieldpress compresses the pictures only)")
        fps, tick = _fps_of(stream), stream.time_base or 0
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        source = {"width": int(stream.codec_context.width), "height": int(stream.codec_context.height),
                  "pix_fmt": str(pix_fmt), "codec": stream.codec_context.name, "file": path.name}
        out, times, index = _decode(container, stream, path, start, end, resize, crop, depth > 8)
    if not out:
        if index < 0:
            raise InputError(f"{path}: the video has no decodable frames (empty or truncated file)")
        raise InputError(f"{path}: --frames {start}:{'' if end is None else end} selects no frames "
                         f"(the clip has {index + 1})")
    if end is not None and len(out) < end - start:
        warn(f"{path.name}: --frames asked for {end - start} frames, the clip gave {len(out)}")
    average = variable_rate(times, float(tick))
    if average is not None:
        fps = average
        warn(f"{path.name}: variable frame rate; every frame is kept in order, timed at the average "
             f"{fps:.3f} fps")
    if duration:
        source["duration"] = round(duration, 6)
    return VideoClip(frames=np.stack(out), fps=fps, frame_start=start, source=source)


def _decode(container: Any, stream: Any, path: Path, start: int, end: int | None,
            resize: tuple[int, int] | None, crop: Crop | None,
            deep: bool) -> tuple[list[np.ndarray], list[float], int]:
    """The selected frames (uint8 RGB), their presentation times in seconds (where known) and the
    last decoded index; a decoding error after the first frame keeps what came before, with a warning."""
    import av

    out: list[np.ndarray] = []
    times: list[float] = []
    index = -1
    box = None
    try:
        for frame in container.decode(stream):
            index += 1
            if index < start:
                continue
            if end is not None and index >= end:
                break
            rgb = _rgb8(frame, resize, deep)
            if crop is not None:
                if box is None:
                    box = _crop_box(rgb.shape[1], rgb.shape[0], crop)
                x, y, cw, ch = box
                rgb = rgb[y:y + ch, x:x + cw]
            out.append(np.ascontiguousarray(rgb))
            if frame.pts is not None and frame.time_base:
                times.append(float(frame.pts * frame.time_base))
    except av.error.FFmpegError as exc:
        if not out:
            raise InputError(f"{path}: the video stream cannot be decoded ({_short(exc)})") from None
        warn(f"{path.name}: decoding stopped after {index} frames ({_short(exc)}); "
             "the file looks truncated")
    if len(times) != len(out):
        times = []
    return out, times, index


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

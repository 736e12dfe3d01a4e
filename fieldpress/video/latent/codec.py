"""The ``video/latent`` codec's heavy half: groups of frames to container streams and back.

Header: model "latent", the `VideoLatentConfig`, size, frame count, first source frame, fps, lambda
and one entry per group (frames, weight steps, exact latent bits). Streams per group g:
``gNNNNNN/latents`` (range-coder words) and ``gNNNNNN/weights`` (network integers, container-coded).
A group decodes from its own two streams only: random access by group. docs/formats/video-latent.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fieldpress import __version__
from fieldpress.codec.registry import Encoded
from fieldpress.errors import FormatError, InputError
from fieldpress.fields.latent.pipeline import to_uint8
from fieldpress.video.latent import bitstream
from fieldpress.video.latent.config import VideoLatentConfig
from fieldpress.video.latent.model import LatentGroupModel

MODEL = "latent"
MAX_PIXELS = 1 << 24  # per frame
MAX_GROUP_PIXELS = 1 << 26  # per group (a group is synthesized at once: about 140 bytes per pixel)
MAX_FRAMES = 1 << 20


def stream_names(g: int) -> tuple[str, str]:
    """The (latents, weights) stream names of group g."""
    return f"g{g:06d}/latents", f"g{g:06d}/weights"


def encode_clip(groups: list[tuple[dict[str, Any], np.ndarray, np.ndarray]], config: VideoLatentConfig, *,
                width: int, height: int, fps: float, frame_start: int, source: dict, lambda_: float,
                extra: dict | None = None) -> Encoded:
    """The header and streams of encoded groups (`bitstream.encode_group`'s entry, words, weights)."""
    header: dict[str, Any] = {
        "model": MODEL, "config": config.to_dict(), "width": int(width), "height": int(height),
        "frames": int(sum(e["frames"] for e, _, _ in groups)), "frame_start": int(frame_start),
        "fps": float(fps), "colour": "rgb24 (sRGB, full range)", "source": source, "lambda": float(lambda_),
        "groups": [e for e, _, _ in groups], "library": f"fieldpress {__version__}",
    }
    streams: dict[str, np.ndarray] = {}
    for g, (_, words, weights) in enumerate(groups):
        lat, wts = stream_names(g)
        streams[lat], streams[wts] = words, weights
    if extra:
        header.update(extra)
    return Encoded(header, streams)


def _check_header(header: Any) -> tuple[VideoLatentConfig, int, int, int, float, int, list[dict[str, int]]]:
    """(config, width, height, frames, fps, frame_start, per-group shifts), checked (FormatError)."""
    try:
        if header["model"] != MODEL:
            raise FormatError(f"not a latent video: model {header['model']!r}")
        cfg_dict = header["config"]
        config = VideoLatentConfig.from_dict(cfg_dict)
        if not isinstance(config, VideoLatentConfig) or not isinstance(cfg_dict, dict):
            raise FormatError("bad latent video config")
        width, height, frames = int(header["width"]), int(header["height"]), int(header["frames"])
        fps, frame_start = float(header["fps"]), int(header.get("frame_start", 0))
        entries = header["groups"]
        counts = [int(e["frames"]) for e in entries]
        shifts = [{g: int(e["shifts"][g]) for g in bitstream.GROUPS} for e in entries]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, InputError) as exc:
        raise FormatError(f"latent video header is incomplete or damaged ({exc})") from None
    if not (1 <= width and 1 <= height and width * height <= MAX_PIXELS and 1 <= frames <= MAX_FRAMES
            and width * height * config.group <= MAX_GROUP_PIXELS):
        raise FormatError("latent video header has an out-of-range size or frame count")
    if not (np.isfinite(fps) and fps > 0 and frame_start >= 0):
        raise FormatError("latent video header has a bad fps or first frame")
    expected = [min(config.group, frames - s) for s in range(0, frames, config.group)]
    if counts != expected or any(not 0 <= s <= 24 for sh in shifts for s in sh.values()):
        raise FormatError("latent video groups do not match the frame count, or a step is out of range")
    return config, width, height, frames, fps, frame_start, shifts


class LatentVideoDecoder:
    """Decodes frames of a latent video: ``decode(start, end)`` -> uint8 (N, H, W, 3), group by group
    (only the groups the frames touch are read; the last group decoded is kept)."""

    name = MODEL

    def __init__(self, container: Any, device: Any = "cpu") -> None:
        if container.kind != "video":
            raise FormatError(f"this is a fieldpress {container.kind!r} file, not a video (.fpv)")
        self.container = container
        (self.config, self.width, self.height, self.frames, self.fps, self.frame_start,
         self._shifts) = _check_header(container.header)
        self._cache: tuple[int, np.ndarray] | None = None

    def group(self, g: int) -> np.ndarray:
        """Group g's frames, uint8 (n, H, W, 3)."""
        if self._cache is not None and self._cache[0] == g:
            return self._cache[1]
        lat, wts = stream_names(g)
        if lat not in self.container or wts not in self.container:
            raise FormatError(f"latent video group {g} is missing")
        n = min(self.config.group, self.frames - g * self.config.group)
        from fieldpress.runtime import torch_threads

        with torch_threads(1), torch.no_grad():  # small integer passes: one thread is fastest
            model = LatentGroupModel(self.config, n, self.height, self.width)
            words = np.asarray(self.container.array(lat)).reshape(-1)
            weights = np.asarray(self.container.array(wts)).reshape(-1)
            if words.dtype != np.uint32 or not np.issubdtype(weights.dtype, np.integer):
                raise FormatError(f"latent video group {g} has streams of the wrong type")
            frames = bitstream.decode_group(model, self._shifts[g], words, weights)
        out = np.stack([to_uint8(f) for f in frames])
        self._cache = (g, out)
        return out

    def decode(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Frames start..end-1 (indices into this file's frames) as one uint8 array (N, H, W, 3)."""
        end = self.frames if end is None else end
        if not 0 <= start < end <= self.frames:
            raise InputError(f"--frames {start}:{end} is outside this file's {self.frames} frames")
        size = self.config.group
        parts = [self.group(g)[max(start - g * size, 0):end - g * size]
                 for g in range(start // size, (end - 1) // size + 1)]
        return np.concatenate(parts)


class LatentVideoCodecImpl:
    """The heavy half of ``video/latent`` (declared in fieldpress.video.latent.declaration)."""

    def encode(self, encoded: Encoded) -> Encoded:
        """Fitting and encoding happen in `fieldpress.video.latent.method`; this passes its result on."""
        return encoded

    def decode(self, container: Any, device: Any = "cpu") -> LatentVideoDecoder:
        return LatentVideoDecoder(container, device=device)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): the latents are coded under each group's own
        networks, so checking them is decoding every group."""
        dec = LatentVideoDecoder(container)
        for g in range(len(dec._shifts)):
            dec.group(g)


CODEC = LatentVideoCodecImpl()
__all__ = ["CODEC", "LatentVideoDecoder", "encode_clip"]

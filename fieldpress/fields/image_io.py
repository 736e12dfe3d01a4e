"""Read and write raster images in their own mode: grey, grey+alpha, RGB, RGBA, at 8 or 16 bits.

Pillow reads and writes 8-bit images and 16-bit greyscale; it truncates 16-bit colour PNGs to
8 bits, so every 16-bit PNG goes through pypng (pure Python) instead. Palette and bilevel images
are expanded (palette -> RGB or RGBA when it has transparency, bilevel -> grey): those are the
modes that get written back.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from fieldpress.errors import InputError
from fieldpress.io import atomic_path

__all__ = ["MODES", "RasterInfo", "read_image", "write_png"]

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_SIDE = 2
MAX_PIXELS = 1 << 28  # refuse absurd sizes before allocating (Pillow's bomb check also applies)


@dataclasses.dataclass(frozen=True)
class RasterInfo:
    """What the decoder must restore: size, channel layout (mode) and bit depth."""

    width: int
    height: int
    mode: str
    bit_depth: int
    source_mode: str = ""

    @property
    def channels(self) -> int:
        return len(self.mode)

    @property
    def max_value(self) -> int:
        return (1 << self.bit_depth) - 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RasterInfo:
        info = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        sizes = (info.width, info.height, info.bit_depth)
        if not all(type(v) is int for v in sizes) or not isinstance(info.mode, str):  # bool is no size
            raise InputError(f"bad image layout in the header: {info.width!r}x{info.height!r}, "
                             f"{info.mode!r} at {info.bit_depth!r} bits")
        if info.mode not in MODES.values() or info.bit_depth not in (8, 16):
            raise InputError(f"unsupported image layout {info.mode} at {info.bit_depth} bits")
        if info.width < 1 or info.height < 1 or info.width * info.height > MAX_PIXELS:
            raise InputError(f"bad image size {info.width}x{info.height}")
        return info


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return None
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    import png  # pypng

    try:
        width, height, rows, meta = png.Reader(filename=str(path)).asDirect()
        planes = int(meta["planes"])
        data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except (png.Error, ValueError, OSError) as exc:
        raise InputError(f"{path}: cannot read PNG: {exc}") from None
    return data.reshape(height, width, planes)


def _pillow_to_array(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            source_mode = im.mode
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"{path}: image of {im.width}x{im.height} is too large")
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "PA":
                im = im.convert("RGBA")
            elif im.mode == "1":
                im = im.convert("L")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                im = im.convert("RGB")
            elif im.mode == "La":
                im = im.convert("LA")
            elif im.mode == "RGBa":
                im = im.convert("RGBA")
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)[..., None], source_mode
            if im.mode not in MODES.values():
                raise InputError(f"{path}: unsupported image mode {source_mode}")
            array = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__})") from None
    if array.ndim == 2:
        array = array[..., None]
    return array, source_mode


def read_image(path: str | os.PathLike[str]) -> tuple[np.ndarray, RasterInfo]:
    """Load an image as (H, W, C) uint8 or uint16 in its own mode, with what is needed to restore it."""
    path = Path(path)
    if _png_bit_depth(path) == 16:
        array, source_mode = _read_png16(path), "PNG16"
    else:
        array, source_mode = _pillow_to_array(path)
    height, width, channels = array.shape
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(f"{path}: image of {width}x{height} is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    bit_depth = 16 if array.dtype == np.uint16 else 8
    info = RasterInfo(width, height, MODES[channels], bit_depth, source_mode)
    return np.array(array, order="C", copy=True), info


def write_png(path: str | os.PathLike[str], array: np.ndarray, info: RasterInfo) -> int:
    """Write (H, W, C) pixels as a PNG in ``info``'s mode and bit depth, atomically; returns bytes."""
    expected = (info.height, info.width, info.channels)
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match {expected}")
    with atomic_path(path) as tmp:
        if info.bit_depth == 16:
            import png  # pypng

            c = info.channels
            writer = png.Writer(info.width, info.height, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16)
            with open(tmp, "wb") as fh:
                writer.write(fh, array.astype(np.uint16).reshape(info.height, info.width * c))
        else:
            from PIL import Image

            data = array.astype(np.uint8)
            img = Image.fromarray(data[..., 0] if info.channels == 1 else data, mode=None)
            if img.mode != info.mode:
                img = img.convert(info.mode)
            img.save(tmp, format="PNG")
        size = tmp.stat().st_size
    return size

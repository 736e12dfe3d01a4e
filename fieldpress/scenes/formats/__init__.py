"""Gaussian scene file formats: INRIA PLY, PlayCanvas compressed PLY, Niantic SPZ, antimatter15 .splat,
and whatever else an entry point in `fieldpress.scene_formats` names (the fieldpress `.fpg` container,
from the LightGaussian package). `load_scene` / `save_scene` are the way in; `register_format` adds a
format in this process."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from fieldpress.errors import FormatError, InputError
from fieldpress.scenes.formats.registry import (
    SceneFormat,
    detect_format,
    formats,
    get_format,
    register_format,
    writer_for,
)
from fieldpress.scenes.formats.sanitize import sanitize
from fieldpress.scenes.scene import GaussianScene


def load_scene(path: str | os.PathLike[str], format: str | None = None,
               validate: bool = True, **read_options: object) -> GaussianScene:
    """Read a scene file in any registered format (detected from its content unless `format` is given).

    `read_options` go to the reader (e.g. `axes="RUB"` for SPZ; None values are dropped). Non-finite
    opacities/scales are clamped and non-finite positions dropped with one warning (`sanitize`); other
    non-finite values and anything unreadable raise InputError/FormatError (one line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file" if not p.exists() else f"{p}: not a regular file")
    fmt = get_format(format) if format else detect_format(p)
    if fmt.read is None:
        raise InputError(f"format {fmt.name!r} cannot be read")
    options = {k: v for k, v in read_options.items() if v is not None}
    unknown = [k for k in options if k not in inspect.signature(fmt.read).parameters]
    if unknown:
        raise InputError(f"{p}: the {fmt.name} reader takes no option {', '.join(unknown)}")
    scene = fmt.read(p, **options)
    if not isinstance(scene, GaussianScene):
        raise FormatError(f"{p}: the {fmt.name} reader did not produce a Gaussian scene")
    scene.meta.setdefault("source_format", fmt.name)
    if validate:
        scene = sanitize(scene, str(p))
    return scene.validate(finite=validate)


def save_scene(scene: GaussianScene, path: str | os.PathLike[str], format: str | None = None,
               **options: object) -> int:
    """Write `scene` atomically in the format named or implied by the suffix; return the file's bytes."""
    from fieldpress.io import atomic_path

    fmt = writer_for(path, format)
    scene = scene.detach().to("cpu")
    scene.validate(finite=False)
    assert fmt.write is not None
    with atomic_path(path) as tmp:
        fmt.write(scene, tmp, **options)
    return Path(path).stat().st_size


__all__ = ["SceneFormat", "detect_format", "formats", "get_format", "load_scene", "register_format",
           "save_scene", "writer_for"]

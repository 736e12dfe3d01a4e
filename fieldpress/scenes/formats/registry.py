"""The scene format registry: readers recognised by content (or suffix), writers chosen by suffix or name.

Formats are found by entry point, group ``fieldpress.scene_formats`` (name -> "module:FORMAT", a
`SceneFormat`), loaded on first use, so `import fieldpress.scenes` stays cheap and a package adds a
format with one entry point (the LightGaussian package provides `fpg`). `register_format` adds one in
this process (tests, scripts).
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fieldpress.errors import FormatError, InputError

SNIFF_BYTES = 4096
ENTRY_POINT_GROUP = "fieldpress.scene_formats"


@dataclasses.dataclass(frozen=True)
class SceneFormat:
    """One file format. `sniff(head, path)` says whether the first bytes are this format (None: by suffix)."""

    name: str
    suffixes: tuple[str, ...]
    read: Callable[[Path], Any] | None = None  # path -> GaussianScene
    write: Callable[..., None] | None = None  # (scene, path, **options) -> None
    sniff: Callable[[bytes, Path], bool] | None = None
    description: str = ""
    priority: int = 0  # higher sniffs first (a specialised PLY before the generic one)


_FORMATS: dict[str, SceneFormat] = {}
_loaded = False


def register_format(fmt: SceneFormat, replace: bool = False) -> None:
    """Add a format to the registry (`replace=True` to override one of the same name)."""
    if fmt.name in _FORMATS and not replace and _FORMATS[fmt.name] != fmt:
        raise ValueError(f"scene format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt


def load_format(spec: str) -> SceneFormat:
    """The `SceneFormat` an entry point value names ("module:attribute")."""
    module, _, attr = spec.partition(":")
    fmt = getattr(importlib.import_module(module), attr)
    if not isinstance(fmt, SceneFormat):
        raise TypeError(f"{spec} is not a SceneFormat")
    return fmt


def format_specs() -> dict[str, str]:
    """name -> "module:attribute" of every installed scene format (the entry points)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name, spec in format_specs().items():
        if name in _FORMATS:
            continue  # registered in this process first: that one wins
        try:
            register_format(load_format(spec))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the other formats down
            warnings.warn(f"scene format {name!r} ({spec}) is unavailable: {type(exc).__name__}: {exc}",
                          stacklevel=3)


def formats() -> dict[str, SceneFormat]:
    """Every registered format by name."""
    _ensure_loaded()
    return dict(_FORMATS)


def get_format(name: str) -> SceneFormat:
    table = formats()
    key = name.strip().lower().lstrip(".")
    if key in table:
        return table[key]
    for fmt in table.values():  # also accept a suffix: --format compressed.ply
        if any(key == s.lstrip(".") for s in fmt.suffixes):
            return fmt
    raise InputError(f"unknown scene format {name!r}; known: {', '.join(sorted(table))}")


def _suffix_match(path: Path, fmt: SceneFormat) -> int:
    name = path.name.lower()
    return max((len(s) for s in fmt.suffixes if name.endswith(s)), default=0)


def detect_format(path: str | Path) -> SceneFormat:
    """The format of an existing file: by content first, then by suffix for headerless formats."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    table = formats()
    sniffers = sorted((f for f in table.values() if f.sniff and f.read), key=lambda f: -f.priority)
    for fmt in sniffers:
        if fmt.sniff(head, path):
            return fmt
    by_suffix = [f for f in table.values() if f.read and f.sniff is None and _suffix_match(path, f)]
    if by_suffix:
        return max(by_suffix, key=lambda f: _suffix_match(path, f))
    kinds = ", ".join(sorted(s for f in table.values() if f.read for s in f.suffixes))
    raise FormatError(f"{path}: not a Gaussian scene file this tool can read (formats: {kinds})")


def writer_for(path: str | Path, format: str | None = None) -> SceneFormat:
    """The writer for an output path: `format` by name, else the longest matching suffix."""
    if format:
        fmt = get_format(format)
    else:
        candidates = [f for f in formats().values() if f.write and _suffix_match(Path(path), f)]
        if not candidates:
            kinds = ", ".join(sorted(s for f in formats().values() if f.write for s in f.suffixes))
            raise InputError(f"{path}: cannot tell the output format from the suffix (use one of {kinds} "
                             "or --format)")
        fmt = max(candidates, key=lambda f: _suffix_match(Path(path), f))
    if fmt.write is None:
        raise InputError(f"format {fmt.name!r} can be read but not written here")
    return fmt

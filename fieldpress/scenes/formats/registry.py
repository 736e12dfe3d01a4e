"""The scene format registry: readers recognised by content (or suffix), writers chosen by suffix or name.

Other parts of fieldpress add their own formats with `register_format` (the LightGaussian `.fpg`
container registers its reader here), so `load_scene`, `render-splat` and `convert` handle them too.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldpress.errors import FormatError, InputError

SNIFF_BYTES = 4096
# Modules holding the built-in formats; imported on first use so `import fieldpress.scenes` stays cheap.
BUILTIN_MODULES = (
    "fieldpress.scenes.formats.inria_ply",
    "fieldpress.scenes.formats.compressed_ply",
    "fieldpress.scenes.formats.spz",
    "fieldpress.scenes.formats.splat",
    "fieldpress.scenes.formats.container",
)
# Other parts that register scene formats when imported (the `.fpg` codec replaces the read-only entry).
PLUGIN_MODULES = ("fieldpress.scenes.lightgaussian",)


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


def _ensure_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for module in PLUGIN_MODULES:
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the built-in formats down
                warnings.warn(f"scene formats from {module} are unavailable: {type(exc).__name__}: {exc}",
                              stacklevel=2)


def formats() -> dict[str, SceneFormat]:
    """Every registered format by name."""
    _ensure_builtin()
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

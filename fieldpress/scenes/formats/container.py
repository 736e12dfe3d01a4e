"""fieldpress's own compressed scenes (`.fpg` containers of kind "scene"), recognised by content.

The container module and the scene decoders belong to other parts; both are reached lazily, and a
compressor may instead register its own `SceneFormat` (same name, `replace=True`) with `register_format`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from fieldpress.errors import FormatError
from fieldpress.scenes.formats.registry import SceneFormat, register_format
from fieldpress.scenes.scene import GaussianScene

# Packages that register a decoder for kind "scene" with the container when imported.
SCENE_DECODER_MODULES = ("fieldpress.scenes.lightgaussian",)


def _container_module() -> Any | None:
    try:
        return importlib.import_module("fieldpress.codec.container")
    except ImportError:
        return None


def sniff(head: bytes, path: Path) -> bool:
    module = _container_module()
    if module is None:
        return False
    magic = getattr(module, "MAGIC", None)
    if isinstance(magic, (bytes, bytearray)) and magic:
        return head.startswith(bytes(magic))
    probe = getattr(module, "is_container", None)
    return bool(probe(head)) if callable(probe) else False


def read(path: Path) -> GaussianScene:
    module = _container_module()
    if module is None:
        raise FormatError(f"{path}: fieldpress containers cannot be read (codec not installed)")
    container = module.open_container(path)
    if container.kind != "scene":
        raise FormatError(f"{path}: a fieldpress {container.kind!r} container, not a scene")
    for name in SCENE_DECODER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    decoder = container.decoder()
    for candidate in (decoder, getattr(decoder, "scene", None), getattr(decoder, "decode", None)):
        value = candidate() if callable(candidate) and not isinstance(candidate, GaussianScene) else candidate
        if isinstance(value, GaussianScene):
            return value
    raise FormatError(f"{path}: the scene decoder did not return a GaussianScene")


register_format(SceneFormat(
    name="fpg", suffixes=(".fpg",), read=read, write=None, sniff=sniff, priority=100,
    description="fieldpress compressed scene container (read; written by compress-splat)"))

"""The `fpg` scene format (read and write) for the scene-format registry, by entry point
(`fieldpress.scene_formats`: fpg): `load_scene`, `render-splat`, the viewer and `convert` read `.fpg`
files with the scene codec their header names, and `save_scene(scene, "x.fpg")` writes one with the
render-free `fast` coding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fieldpress.scenes.formats.registry import SceneFormat


def sniff(head: bytes, path: Path) -> bool:
    """A fieldpress container of kind "scene" (magic, then version (2 bytes), then the kind id)."""
    from fieldpress.codec.container import KINDS, MAGIC

    return head.startswith(MAGIC) and len(head) > 6 and head[6] == KINDS["scene"]


def read(path: Path) -> Any:
    from fieldpress.scenes.lightgaussian.codec import read_fpg

    return read_fpg(path)


def write(scene: Any, path: Path, **options: Any) -> None:
    """The `fast` preset's coding (proxy significance, no pruning), or `config=` a CodecConfig."""
    from fieldpress.scenes.lightgaussian.codec import encode_scene, write_fpg
    from fieldpress.scenes.lightgaussian.pipeline import PRESETS
    from fieldpress.scenes.lightgaussian.significance import proxy_significance

    config = options.get("config") or PRESETS["fast"].codec
    write_fpg(path, encode_scene(scene, proxy_significance(scene), config))


FPG_FORMAT = SceneFormat(
    name="fpg", suffixes=(".fpg",), read=read, write=write, sniff=sniff, priority=100,
    description="fieldpress compressed scene (LightGaussian VecTree coding; written by compress-splat)")

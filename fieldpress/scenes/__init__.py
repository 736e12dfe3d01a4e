"""fieldpress.scenes: 3D Gaussian Splatting scenes — the in-memory `GaussianScene`, file formats
(`load_scene`, `save_scene`, `register_format`), the renderer (`render`) and cameras (`Camera`, `orbit`)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Camera": "cameras", "orbit": "cameras", "SceneFormat": "formats", "load_scene": "formats",
    "register_format": "formats", "save_scene": "formats", "render": "renderer", "GaussianScene": "scene",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public pieces on first use: fieldpress.scenes.codecs must load without torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fieldpress.scenes.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fieldpress.scenes' has no attribute {name!r}")

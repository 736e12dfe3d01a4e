"""fieldpress.scenes: 3D Gaussian Splatting scenes — the in-memory `GaussianScene`, file formats
(`load_scene`, `save_scene`, `register_format`), the renderer (`render`) and cameras (`Camera`, `orbit`)."""

from __future__ import annotations

from fieldpress.scenes.cameras import Camera, orbit
from fieldpress.scenes.formats import SceneFormat, load_scene, register_format, save_scene
from fieldpress.scenes.render import render
from fieldpress.scenes.scene import GaussianScene

__all__ = ["Camera", "GaussianScene", "SceneFormat", "load_scene", "orbit", "register_format", "render",
           "save_scene"]

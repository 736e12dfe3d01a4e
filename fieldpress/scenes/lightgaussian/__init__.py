"""LightGaussian for existing splat scenes: global significance, pruning with recovery, SH
distillation and VecTree quantization, written as `.fpg` containers (kind "scene").

The codec is registered by entry point (`fieldpress.codecs`: scene/lightgaussian, see
`fieldpress.scenes.codecs`). Importing this package registers the `fpg` scene format (readable by
`load_scene`, `render-splat`, the viewer; writable with the `fast` preset by `save_scene` /
`fieldpress convert`).
"""

from __future__ import annotations

from fieldpress.scenes.lightgaussian.codec import CodecConfig, SceneDecoder, read_fpg, register
from fieldpress.scenes.lightgaussian.significance import prune_mask, significance
from fieldpress.scenes.lightgaussian.vectree import VecTreeConfig

register()

__all__ = ["CodecConfig", "SceneDecoder", "VecTreeConfig", "prune_mask", "read_fpg", "significance"]

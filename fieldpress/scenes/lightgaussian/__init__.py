"""LightGaussian for existing splat scenes: global significance, pruning with recovery, SH
distillation and VecTree quantization, written as `.fpg` containers (kind "scene").

The codec is registered by entry point (`fieldpress.codecs`: scene/lightgaussian, see
`fieldpress.scenes.codecs`), and so is the `fpg` scene format (`fieldpress.scene_formats`: fpg, see
`fpg_format`): nothing registers at import.
"""

from __future__ import annotations

from fieldpress.scenes.lightgaussian.codec import CodecConfig, SceneDecoder, read_fpg
from fieldpress.scenes.lightgaussian.significance import prune_mask, significance
from fieldpress.scenes.lightgaussian.vectree import VecTreeConfig

__all__ = ["CodecConfig", "SceneDecoder", "VecTreeConfig", "prune_mask", "read_fpg", "significance"]

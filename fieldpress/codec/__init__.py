"""fieldpress.codec: the container format, entropy coding, quantizers and pruning.

- `fieldpress.codec.container`: write_container / open_container / read_info
- `fieldpress.codec.registry`: codecs by kind and name (entry points `fieldpress.codecs`)
- `fieldpress.codec.entropy`: ans_encode / ans_decode, zstd, raw; encode_best / decode
- `fieldpress.codec.quant`: quant_params, quantize / dequantize, magnitude_prune, allocate_bits,
  compress_state_dict / decompress_state_dict
- `fieldpress.codec.dtypes`: the stream element types and their file ids

Submodules are imported on first use (``fieldpress.codec.write_container`` works), so reading a
container's index never imports torch. The byte layout: docs/FORMAT.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Container": "container", "ContainerInfo": "container", "FORMAT_VERSION": "container",
    "encode_container": "container", "open_container": "container", "read_info": "container",
    "write_container": "container",
    "Codec": "registry", "Encoded": "registry", "LazyCodec": "registry", "codec_for": "registry",
    "codecs": "registry", "get_codec": "registry", "register_codec": "registry", "write_file": "registry",
    "ans_decode": "entropy", "ans_encode": "entropy", "decode": "entropy", "encode": "entropy",
    "encode_best": "entropy",
    "QTensor": "quant", "allocate_bits": "quant", "choose_axis": "quant", "compress_state_dict": "quant",
    "decompress_state_dict": "quant", "dequantize": "quant", "magnitude_prune": "quant",
    "quant_params": "quant", "quantize": "quant",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fieldpress.codec.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fieldpress.codec' has no attribute {name!r}")

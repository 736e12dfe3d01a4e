"""Neural fields: tcnn-compatible encodings (hash grid, Fourier), MLP/SIREN, CAM, and image coding.

Public pieces: ``Encoding(config, n_input_dims)`` and ``Network(config, n_in, n_out)`` built from
tiny-cuda-nn style config dicts, ``FieldModel`` (encoding then network), ``CAM`` (coordinate-aware
modulation) with ``cam_param_groups``, and image coding: ``fieldpress.fields.pipeline``
(``compress(input, options, device) -> Result``, ``decode``) behind the ``fit-image`` /
``decode-image`` commands.
"""

import importlib
from typing import Any

_EXPORTS = {
    "CAM": "cam", "cam_param_groups": "cam",
    "ENCODINGS": "encodings", "Encoding": "encodings", "register_encoding": "encodings",
    "MLP": "mlp", "NETWORKS": "mlp", "FieldModel": "mlp", "Network": "mlp", "Siren": "mlp",
    "register_network": "mlp",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public pieces on first use: fieldpress.fields.codecs must load without torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fieldpress.fields.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fieldpress.fields' has no attribute {name!r}")

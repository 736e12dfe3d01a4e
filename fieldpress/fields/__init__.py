"""Neural fields: tcnn-compatible encodings (hash grid, Fourier), MLP/SIREN, CAM, and image coding.

Public pieces: ``Encoding(config, n_input_dims)`` and ``Network(config, n_in, n_out)`` built from
tiny-cuda-nn style config dicts, ``FieldModel`` (encoding then network), ``CAM`` (coordinate-aware
modulation) with ``cam_param_groups``, and the ``fit-image`` / ``decode-image`` commands.
"""

from fieldpress.fields.cam import CAM, cam_param_groups
from fieldpress.fields.encodings import ENCODINGS, Encoding, register_encoding
from fieldpress.fields.mlp import MLP, NETWORKS, FieldModel, Network, Siren, register_network

__all__ = [
    "CAM",
    "ENCODINGS",
    "MLP",
    "NETWORKS",
    "Encoding",
    "FieldModel",
    "Network",
    "Siren",
    "cam_param_groups",
    "register_encoding",
    "register_network",
]


def _register_image_kind() -> None:
    """Make `.fpi` containers decodable (the container imports this package lazily for kind "image")."""
    from fieldpress.fields.image import register

    register()


_register_image_kind()

"""fieldpress: compress videos, images and 3D Gaussian Splatting scenes with neural fields.

Public API:
    fieldpress.open(path)  -> an opened container (kind, header, streams, and the family's decoder)
    fieldpress.info(path)  -> what a container holds, without decoding any payload
    fieldpress.__version__
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from fieldpress.codec.container import Container, ContainerInfo


def open(path: str) -> Container:  # noqa: A001 - the public name is the point
    """Open a fieldpress container (.fpv, .fpi, .fpg); payloads are decoded on demand."""
    from fieldpress.codec.container import open_container

    return open_container(path)


def info(path: str) -> ContainerInfo:
    """Kind, header and stream table of a container, read without decoding payloads."""
    from fieldpress.codec.container import read_info

    return read_info(path)


__all__ = ["__version__", "info", "open"]

"""The element types a container stream can hold, with their on-disk ids (docs/FORMAT.md).

numpy has no bfloat16, so a bfloat16 stream travels as its raw bits: callers pass a
``torch.bfloat16`` tensor (or an ``ml_dtypes`` bfloat16 array), the container stores the bits as
little-endian uint16, ``Container.array`` returns those bits as ``np.uint16`` and
``Container.tensor`` returns a ``torch.bfloat16`` tensor again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DType:
    """One stream element type: its file id, its name, and the little-endian numpy storage type."""

    id: int
    name: str
    storage: str  # numpy dtype string of the stored bytes (little-endian)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.storage).itemsize

    @property
    def is_integer(self) -> bool:
        """True for bool and integer types: the ones ANS can code as symbols."""
        return self.name == "bool" or self.name.startswith(("int", "uint"))


_TABLE = [
    DType(1, "bool", "|b1"),
    DType(2, "uint8", "|u1"),
    DType(3, "uint16", "<u2"),
    DType(4, "uint32", "<u4"),
    DType(5, "uint64", "<u8"),
    DType(6, "int8", "|i1"),
    DType(7, "int16", "<i2"),
    DType(8, "int32", "<i4"),
    DType(9, "int64", "<i8"),
    DType(10, "float16", "<f2"),
    DType(11, "bfloat16", "<u2"),
    DType(12, "float32", "<f4"),
    DType(13, "float64", "<f8"),
]
BY_ID: dict[int, DType] = {d.id: d for d in _TABLE}
BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}


def dtype_by_id(dtype_id: int) -> DType:
    from fieldpress.errors import FormatError

    try:
        return BY_ID[dtype_id]
    except KeyError:
        raise FormatError(f"unknown stream dtype id {dtype_id}") from None


def as_stream_array(value: Any) -> tuple[np.ndarray, DType]:
    """Turn a numpy array, a torch tensor or a Python scalar/list into (C-contiguous array, DType).

    bfloat16 (torch or ml_dtypes) becomes its uint16 bits with DType 'bfloat16'.
    """
    if type(value).__module__.startswith("torch"):
        import torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return _contiguous(t.view(torch.int16).numpy().view(np.uint16)), BY_NAME["bfloat16"]
        value = t.numpy()
    arr = np.asarray(value)
    if arr.dtype.name == "bfloat16":  # ml_dtypes
        return _contiguous(arr.view(np.uint16)), BY_NAME["bfloat16"]
    name = arr.dtype.name
    if name not in BY_NAME or name == "bfloat16":
        raise TypeError(f"unsupported stream dtype {arr.dtype}; supported: {', '.join(BY_NAME)}")
    return _contiguous(arr), BY_NAME[name]


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)."""
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def to_native(arr: np.ndarray, dtype: DType) -> np.ndarray:
    """A decoded stream in native byte order; bfloat16 stays as uint16 bits."""
    native = "uint16" if dtype.name == "bfloat16" else dtype.name
    return arr.astype(native, copy=False)


def to_tensor(arr: np.ndarray, dtype: DType) -> Any:
    """A decoded stream as a torch tensor, with bfloat16 restored from its bits."""
    import torch

    if dtype.name == "bfloat16":
        return torch.from_numpy(_contiguous(arr).view(np.int16).copy()).view(torch.bfloat16)
    if dtype.name in ("uint16", "uint32", "uint64"):
        # torch supports these only partially; widen to int64 where the values fit
        if dtype.name == "uint64" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise TypeError("uint64 values above 2**63-1 have no torch dtype")
        return torch.from_numpy(arr.astype(np.int64))
    return torch.from_numpy(np.array(arr, copy=True))

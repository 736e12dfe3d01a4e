"""The one quantized tensor of fieldpress: integer symbols, their affine scale and zero point (per
tensor or per channel), the bit width, and an optional mask of kept entries.

Everything stored quantized goes through it (network weights, HNeRV embeddings, scene attributes), so
there is one bit-range rule (`bit_range`), one dequantize, and one stream layout (`to_streams`):

    {prefix}q           the symbols, smallest integer dtype; only the kept ones when masked
    {prefix}mask        bool, the tensor's shape (only when masked)
    {prefix}scale       float32 (channels,)
    {prefix}zero_point  int32 (channels,) (absent when symmetric: the zero point is 0)

plus a small JSON meta for the header: bits, axis, shape, symmetric, dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fieldpress.errors import FormatError

MIN_BITS, MAX_BITS = 2, 16


def check_bits(bits: int) -> int:
    """`bits` as an int, ValueError unless it is in MIN_BITS..MAX_BITS."""
    if not (isinstance(bits, (int, np.integer)) and MIN_BITS <= int(bits) <= MAX_BITS):
        raise ValueError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return int(bits)


def bit_range(bits: int, symmetric: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of `bits`-bit symbols: 0..2^b-1, or -(2^(b-1)-1)..2^(b-1)-1 when symmetric."""
    bits = check_bits(bits)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def symbol_dtype(bits: int, symmetric: bool = False) -> type:
    """The smallest numpy integer dtype holding every `bits`-bit symbol."""
    if symmetric:
        return np.int8 if bits <= 8 else np.int16
    return np.uint8 if bits <= 8 else np.uint16


def broadcast_shape(shape: tuple[int, ...], axis: int | None) -> list[int]:
    """The shape that broadcasts a per-channel vector along `axis` (None: per tensor) against `shape`."""
    out = [1] * len(shape)
    if axis is not None:
        out[axis] = shape[axis]
    return out


@dataclass(frozen=True)
class QTensor:
    """A quantized tensor: x_hat = (q - zero_point) * scale, zero where `mask` is False."""

    q: Tensor  # integer symbols in bit_range(bits), the shape of the original tensor
    scale: Tensor  # float32, broadcastable against q (the channel axis keeps its size)
    zero_point: Tensor  # float32 integers, same shape as scale
    bits: int
    axis: int | None
    mask: Tensor | None = None  # bool, True = kept; pruned entries decode to exactly 0
    symmetric: bool = False
    dtype: torch.dtype = torch.float32  # of the original tensor; dequantize returns this dtype

    @property
    def qmin(self) -> int:
        return bit_range(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return bit_range(self.bits, self.symmetric)[1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.q.shape)

    @property
    def channels(self) -> int:
        return 1 if self.axis is None else int(self.q.shape[self.axis])

    def dequantize(self) -> Tensor:
        """(q - zero_point) * scale in float32, zero where masked out, in the original dtype."""
        x = (self.q.to(torch.float32) - self.zero_point) * self.scale
        if self.mask is not None:
            x = torch.where(self.mask, x, torch.zeros((), dtype=torch.float32))
        return x.to(self.dtype)

    def symbols(self) -> np.ndarray:
        """The stored symbols: all of them, or only the kept ones when masked (row-major order)."""
        out = self.q.detach().cpu().numpy().astype(symbol_dtype(self.bits, self.symmetric))
        return out[self.mask.cpu().numpy()] if self.mask is not None else out

    def meta(self) -> dict[str, Any]:
        """The header part of the layout (bits, axis, shape, symmetric, dtype when not float32)."""
        out: dict[str, Any] = {"bits": self.bits, "axis": self.axis, "shape": list(self.shape),
                               "symmetric": self.symmetric}
        if self.dtype != torch.float32:
            out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out

    def to_streams(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(streams, meta) in the layout of the module docstring."""
        scale = self.scale.reshape(-1).cpu().numpy().astype(np.float32)
        streams: dict[str, np.ndarray] = {f"{prefix}q": self.symbols(), f"{prefix}scale": scale}
        if self.mask is not None:
            streams[f"{prefix}mask"] = self.mask.cpu().numpy().astype(bool)
        if not self.symmetric:
            streams[f"{prefix}zero_point"] = self.zero_point.reshape(-1).cpu().numpy().astype(np.int32)
        return streams, self.meta()

    @classmethod
    def from_streams(cls, streams: Any, prefix: str, meta: Mapping[str, Any]) -> QTensor:
        """Read back what `to_streams` wrote (streams: a mapping or a Container); FormatError on damage."""
        try:
            bits, symmetric = int(meta["bits"]), bool(meta.get("symmetric", False))
            shape = tuple(int(d) for d in meta["shape"])
            axis = None if meta.get("axis") is None else int(meta["axis"])
            dtype = torch_dtype(meta.get("dtype", "float32"))
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"malformed quantization meta for {prefix!r}") from None
        mask = stream(streams, f"{prefix}mask", required=False)
        zp = None if symmetric else stream(streams, f"{prefix}zero_point")
        return from_parts(stream(streams, f"{prefix}q"), stream(streams, f"{prefix}scale"), zp,
                          bits=bits, axis=axis, shape=shape, mask=mask, symmetric=symmetric, dtype=dtype)


def from_parts(symbols: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, *, bits: int,
               axis: int | None, shape: tuple[int, ...], mask: np.ndarray | None = None,
               symmetric: bool = False, dtype: torch.dtype = torch.float32) -> QTensor:
    """A QTensor from decoded stream arrays, every size and range checked (FormatError on damage)."""
    try:
        bits = check_bits(bits)
    except ValueError as exc:
        raise FormatError(str(exc)) from None
    if axis is not None and not 0 <= axis < max(len(shape), 1):
        raise FormatError(f"axis {axis} out of range for shape {shape}")
    channels = 1 if axis is None else shape[axis]
    scale = np.asarray(scale, np.float32).reshape(-1)
    zp = np.zeros(channels, np.float32) if zero_point is None else np.asarray(zero_point).astype(np.float32)
    if scale.size != channels or zp.reshape(-1).size != channels or not np.isfinite(scale).all():
        raise FormatError(f"{scale.size} scales / {zp.size} zero points for {channels} channel(s)")
    qmin, qmax = bit_range(bits, symmetric)
    values = np.asarray(symbols).astype(np.int64).reshape(-1)
    if values.size and (values.min() < qmin or values.max() > qmax):
        raise FormatError(f"symbols outside {qmin}..{qmax}")
    full = values
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if tuple(mask.shape) != shape or int(mask.sum()) != values.size:
            raise FormatError("the mask does not match the symbols")
        full = np.zeros(mask.size, np.int64)
        full[mask.reshape(-1)] = values
    elif values.size != int(np.prod(shape, dtype=np.int64)):
        raise FormatError(f"{values.size} symbols for shape {shape}")
    bshape = broadcast_shape(shape, axis)
    q = torch.from_numpy(full.astype(np.int32)).reshape(shape)
    scale_t = torch.from_numpy(scale.copy()).reshape(bshape)
    zp_t = torch.from_numpy(zp.copy()).reshape(bshape)
    kept = None if mask is None else torch.from_numpy(mask)
    return QTensor(q, scale_t, zp_t, bits, axis, kept, symmetric, dtype)


def stream(streams: Any, name: str, required: bool = True) -> np.ndarray | None:
    """A stream from a mapping or a Container; FormatError when a required one is missing."""
    from fieldpress.codec.dtypes import as_stream_array

    if hasattr(streams, "array") and not isinstance(streams, Mapping):
        value = streams.array(name) if name in streams else None
    else:
        raw = streams.get(name)
        value = None if raw is None else as_stream_array(raw)[0]  # bfloat16 tensors -> uint16 bits
    if value is None and required:
        raise FormatError(f"missing stream {name!r}")
    return value


def torch_dtype(name: str) -> torch.dtype:
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise FormatError(f"unknown tensor dtype {name!r}")
    return dt

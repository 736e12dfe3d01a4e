"""Entropy coding of stream payloads: ANS (through constriction) for integer symbols, zstd, raw.

Every payload is self-describing given the stream's dtype and shape (kept in the container's stream
table), so a decoder needs nothing else. The ANS model is the empirical histogram of the symbols,
stored in the payload as integer counts, so every machine rebuilds exactly the same model.
Byte layouts: docs/FORMAT.md ("Codecs").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zstandard

from fieldpress.errors import FormatError

# ANS alphabets above this size are not coded with ANS (encode_best falls back to zstd): constriction's
# models have 24-bit precision, so every one of K symbols costs at least 2**-24 of the probability mass.
ANS_MAX_ALPHABET = 1 << 16
# zstd level: 19 for payloads up to 1 MiB, 9 above (level 19 runs at a few MB/s). Deterministic for a
# given zstd library; any zstd decodes any level.
ZSTD_SMALL_LEVEL, ZSTD_LARGE_LEVEL, ZSTD_SMALL_LIMIT = 19, 9, 1 << 20

ANS_DECODE_CHUNK = 1 << 20  # symbols decoded per call (bounds the decoder's scratch memory)

_ANS_DENSE, _ANS_ALPHABET = 0, 1  # table modes: counts over [min, min+K) / an explicit sorted alphabet


# ----------------------------------------------------------------------------- zstd
def zstd_encode(data: bytes) -> bytes:
    """zstd frame of `data` (content size recorded; no checksum, the container has CRCs)."""
    level = ZSTD_SMALL_LEVEL if len(data) <= ZSTD_SMALL_LIMIT else ZSTD_LARGE_LEVEL
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False).compress(data)


def zstd_decode(data: bytes, raw_len: int) -> bytes:
    """Decompress one zstd frame that must hold exactly `raw_len` bytes (checked before allocating)."""
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise FormatError(f"bad zstd frame: {exc}") from None
    if size != raw_len:
        raise FormatError(f"zstd frame holds {size} bytes, expected {raw_len}")
    if raw_len == 0:
        out = b""
    else:
        try:
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=raw_len)
        except zstandard.ZstdError as exc:
            raise FormatError(f"bad zstd frame: {exc}") from None
    if len(out) != raw_len:
        raise FormatError(f"zstd frame decoded to {len(out)} bytes, expected {raw_len}")
    return out


# ----------------------------------------------------------------------------- varints
def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 of unsigned 64-bit integers: 7 bits per byte, low groups first, high bit = more follows."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, np.int64)
    for j in range(1, 10):
        nbytes += (v >> np.uint64(7 * j)) > 0
    cols = np.arange(10)
    groups = ((v[:, None] >> (np.uint64(7) * cols.astype(np.uint64))) & np.uint64(0x7F)).astype(np.uint8)
    groups |= np.where(cols[None, :] < nbytes[:, None] - 1, 0x80, 0).astype(np.uint8)
    return groups[cols[None, :] < nbytes[:, None]].tobytes()


def varint_decode(data: bytes, n: int, start: int = 0) -> tuple[np.ndarray, int]:
    """The first `n` LEB128 values from data[start:] (uint64) and the offset just after them."""
    if n == 0:
        return np.zeros(0, np.uint64), start
    b = np.frombuffer(data, np.uint8, offset=start)
    ends = np.flatnonzero(b < 0x80)[:n]
    if ends.size < n:
        raise FormatError("varint table runs past the payload")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 10 or (lengths == 10).any() and (b[ends[lengths == 10]] > 1).any():
        raise FormatError("varint overflows 64 bits")
    used = b[:ends[-1] + 1]
    pos = np.arange(used.size) - np.repeat(starts, lengths)
    shifted = (used & 0x7F).astype(np.uint64) << (np.uint64(7) * pos.astype(np.uint64))
    return np.bitwise_or.reduceat(shifted, starts), start + int(ends[-1]) + 1


def _zigzag(v: int) -> int:
    """Signed to unsigned, small magnitudes first: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


# ----------------------------------------------------------------------------- ANS
def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def ans_encode(symbols: np.ndarray) -> bytes:
    """ANS-code integer symbols with their own empirical pmf stored inside the payload.

    Payload: mode byte, then LEB128 varints (alphabet size K, the alphabet, the K exact counts),
    then constriction's AnsCoder words as little-endian uint32 (docs/FORMAT.md). Raises ValueError
    when the symbols are not integers, do not fit int64, or use more than ANS_MAX_ALPHABET distinct
    values (encode_best then uses zstd).
    """
    x = np.asarray(symbols)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if x.dtype.kind not in "iu":
        raise ValueError(f"ANS codes integer symbols, got {x.dtype}")
    x = x.reshape(-1)
    if x.dtype == np.uint64 and x.size and int(x.max()) > np.iinfo(np.int64).max:
        raise ValueError("uint64 symbols above 2**63-1 cannot be ANS-coded")
    x = x.astype(np.int64, copy=False)
    if x.size == 0:
        return b""
    lo, hi = int(x.min()), int(x.max())
    span = hi - lo + 1
    dense = False
    if span <= ANS_MAX_ALPHABET:
        # dense table over [lo, hi] when most of the range is used: bincount is fast and the few
        # zero counts cost almost nothing (constriction gives them the minimum probability)
        counts = np.bincount((x - lo).astype(np.intp), minlength=span)
        dense = span <= 2 * int(np.count_nonzero(counts)) + 64
    if dense:
        k, index = span, (x - lo).astype(np.int32)
        table = bytes([_ANS_DENSE]) + varint_encode(np.array([k, _zigzag(lo)], np.uint64))
    else:
        values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        k = int(values.size)
        if k > ANS_MAX_ALPHABET:
            raise ValueError(f"{k} distinct symbols exceed the ANS alphabet limit {ANS_MAX_ALPHABET}")
        index = inverse.reshape(-1).astype(np.int32)
        gaps = np.diff(values).astype(np.uint64)  # sorted distinct values: positive gaps (mod 2**64)
        table = (bytes([_ANS_ALPHABET]) + varint_encode(np.array([k, _zigzag(lo)], np.uint64))
                 + varint_encode(gaps))
    table += varint_encode(counts)
    if k == 1:
        return table  # one symbol: nothing to code
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(index, _model(counts))
    return table + coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, count: int, dtype: np.dtype | str = np.int64) -> np.ndarray:
    """Decode `count` symbols written by ans_encode into an array of `dtype` (int64 by default).

    Symbols are decoded ANS_DECODE_CHUNK at a time straight into the output, so the memory used is
    the output plus one chunk: a tiny hostile payload declaring billions of symbols costs no more than
    the stream's own decoded size (which the container caps). FormatError on damage, including
    symbols outside `dtype`'s range.
    """
    data = bytes(data)
    out_dtype = np.dtype(dtype)
    if out_dtype.kind not in "iu":
        raise ValueError(f"ANS decodes to an integer dtype, got {out_dtype}")
    if count == 0:
        if data:
            raise FormatError("ANS payload of an empty stream is not empty")
        return np.zeros(0, out_dtype)
    if not data or data[0] not in (_ANS_DENSE, _ANS_ALPHABET):
        raise FormatError("bad ANS payload (unknown table mode)")
    mode = data[0]
    (k, zlo), pos = varint_decode(data, 2, 1)
    k, lo = int(k), _unzigzag(int(zlo))
    if not 1 <= k <= ANS_MAX_ALPHABET:
        raise FormatError(f"bad ANS table (alphabet of {k} symbols)")
    if mode == _ANS_DENSE:
        if lo + k - 1 > np.iinfo(np.int64).max:
            raise FormatError("ANS symbol range overflows int64")
        values = np.arange(k, dtype=np.int64) + lo
    else:
        gaps, pos = varint_decode(data, k - 1, pos)
        if (gaps == 0).any():
            raise FormatError("ANS alphabet is not strictly increasing")
        values = np.concatenate(([np.uint64(lo & 0xFFFFFFFFFFFFFFFF)], gaps)).cumsum(dtype=np.uint64)
        values = values.view(np.int64)
        if (values[1:] <= values[:-1]).any():
            raise FormatError("ANS alphabet overflows int64")
    counts, pos = varint_decode(data, k, pos)
    if int(counts.sum(dtype=np.uint64)) != count or int(counts.max()) > 1 << 53:
        raise FormatError(f"ANS table counts {int(counts.sum(dtype=np.uint64))} symbols, expected {count}")
    rest = data[pos:]
    if len(rest) % 4:
        raise FormatError("ANS data is not a whole number of 32-bit words")
    # only the symbols that occur must fit the output dtype (the sorted alphabet's used extremes)
    used = values[counts > 0]
    info = np.iinfo(out_dtype)
    if int(used[0]) < info.min or int(used[-1]) > info.max:
        raise FormatError(f"ANS symbols out of the range of {out_dtype}")
    if k == 1:
        if rest:
            raise FormatError("ANS payload of a constant stream has trailing data")
        return np.full(count, values[0], out_dtype)
    import constriction

    coder = constriction.stream.stack.AnsCoder(np.frombuffer(rest, "<u4").astype(np.uint32))
    model = _model(counts)
    table = values.astype(out_dtype) if out_dtype != np.int64 else values
    out = np.empty(count, out_dtype)
    histogram = np.zeros(k, np.int64)
    for start in range(0, count, ANS_DECODE_CHUNK):
        n = min(ANS_DECODE_CHUNK, count - start)
        try:
            index = coder.decode(model, n)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise FormatError(f"bad ANS data: {exc}") from None
        histogram += np.bincount(index, minlength=k)
        out[start:start + n] = table[index]
    if not coder.is_empty():
        raise FormatError("ANS data does not end where the symbols end")
    if not np.array_equal(histogram, counts.astype(np.int64)):
        raise FormatError("ANS symbols do not match the stored histogram")
    return out


# ----------------------------------------------------------------------------- codecs
@dataclass(frozen=True)
class Codec:
    """A payload codec: its file id, name, and encode/decode of a little-endian array."""

    id: int
    name: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes, np.dtype, int], np.ndarray]  # payload, storage dtype, element count


def _raw_encode(a: np.ndarray) -> bytes:
    return a.tobytes()


def _raw_decode(p: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    if len(p) != n * dtype.itemsize:
        raise FormatError(f"raw payload has {len(p)} bytes, expected {n * dtype.itemsize}")
    return np.frombuffer(p, dtype).copy()


def _zstd_encode(a: np.ndarray) -> bytes:
    return zstd_encode(a.tobytes())


def _zstd_decode(p: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    return np.frombuffer(zstd_decode(p, n * dtype.itemsize), dtype).copy()


def _ans_encode(a: np.ndarray) -> bytes:
    return ans_encode(a)


def _ans_decode(p: bytes, dtype: np.dtype, n: int) -> np.ndarray:
    if dtype.kind == "b":
        sym = ans_decode(p, n, np.uint8)
        if sym.size and sym.max() > 1:
            raise FormatError("ANS bool stream holds values other than 0 and 1")
        return sym.view(np.bool_)
    if dtype.kind not in "iu":
        raise FormatError(f"ANS stream with non-integer dtype {dtype}")
    return ans_decode(p, n, dtype.newbyteorder("="))


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec(0, "raw", _raw_encode, _raw_decode),
        Codec(1, "zstd", _zstd_encode, _zstd_decode),
        Codec(2, "ans", _ans_encode, _ans_decode),
    )
}
CODEC_BY_ID: dict[int, Codec] = {c.id: c for c in CODECS.values()}


def _storage(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype.kind in "biuf" and a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.reshape(-1)


def encode(codec: str, array: np.ndarray) -> bytes:
    """Encode an array's elements (C order, little-endian) with the named codec."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)} or 'auto'")
    return CODECS[codec].encode(_storage(array))


def decode(codec: str, payload: bytes, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode a payload into an array of `dtype` and `shape` (FormatError on damage)."""
    if codec not in CODECS:
        raise FormatError(f"unknown codec {codec!r}")
    dt = np.dtype(dtype)
    if dt.kind in "iuf" and dt.itemsize > 1:
        dt = dt.newbyteorder("<")
    n = math.prod(int(d) for d in shape)
    out = CODECS[codec].decode(payload, dt, n)
    return out.astype(out.dtype.newbyteorder("="), copy=False).reshape(shape)


def encode_best(array: np.ndarray) -> tuple[str, bytes]:
    """The smallest of ANS (integer and bool arrays only), zstd and raw; ties prefer the simpler."""
    a = _storage(array)
    candidates = [("raw", a.tobytes())]
    if a.size:
        candidates.append(("zstd", zstd_encode(candidates[0][1])))
        if a.dtype.kind in "biu":
            try:
                candidates.append(("ans", ans_encode(a)))
            except ValueError:
                pass
    return min(candidates, key=lambda c: len(c[1]))  # min keeps the first of equal sizes

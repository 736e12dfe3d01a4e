"""The fieldpress container: one file holding a JSON header and named, entropy-coded array streams.

Layout (docs/FORMAT.md has the byte-exact spec): a 20-byte preamble (magic, version, kind, index
lengths, CRC32), a zstd-compressed index (JSON header + stream table) under that CRC32, then the
stream payloads back to back, each under its own CRC32. Readers check every length against the
file before allocating and cap decoded sizes (MAX_* below); every problem is a one-line FormatError.
Payloads are decoded lazily; `read_info` never decodes them (it only checks their CRCs).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from fieldpress.codec import entropy
from fieldpress.codec.dtypes import DType, as_stream_array, dtype_by_id, to_native, to_tensor
from fieldpress.errors import FormatError, InputError

MAGIC = b"FPRS"
FORMAT_VERSION = 1  # the version this code writes; it reads every version from 1 up to this
KINDS: dict[str, int] = {"video": 1, "image": 2, "scene": 3}
KIND_BY_ID: dict[int, str] = {v: k for k, v in KINDS.items()}
SUFFIXES: dict[str, str] = {"video": ".fpv", "image": ".fpi", "scene": ".fpg"}

# Limits every reader enforces (and every writer respects), documented in docs/FORMAT.md.
MAX_INDEX_BYTES = 16 << 20  # decompressed index (JSON header + stream table)
MAX_STREAMS = 1 << 16
MAX_NAME_BYTES = 1024
MAX_NDIM = 32
MAX_STREAM_BYTES = 1 << 32  # decoded bytes of one stream
MAX_TOTAL_BYTES = 1 << 34  # decoded bytes of all streams together

_PREAMBLE = struct.Struct("<4sHBBIII")  # magic, version, kind, reserved, index_len, index_raw_len, crc32
_ENTRY = struct.Struct("<BBB")  # codec id, dtype id, ndim (then varint dims, varint length, u32 crc32)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StreamInfo:
    """One row of the stream table: where a payload lies and what it decodes to."""

    name: str
    codec: str
    dtype: DType
    shape: tuple[int, ...]
    offset: int  # absolute file offset of the payload
    length: int  # payload bytes in the file
    crc32: int

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def raw_bytes(self) -> int:
        return self.count * self.dtype.itemsize

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "codec": self.codec, "dtype": self.dtype.name, "shape": list(self.shape),
                "length": self.length, "raw_bytes": self.raw_bytes, "crc32": f"{self.crc32:08x}"}


@dataclass(frozen=True)
class ContainerInfo:
    """What `fieldpress info` shows: kind, version, size, header, stream table and a family summary."""

    path: str
    kind: str
    version: int
    file_bytes: int
    header: dict[str, Any]
    streams: tuple[StreamInfo, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "file_bytes": self.file_bytes,
                "header": self.header, "streams": [s.to_dict() for s in self.streams],
                "summary": self.summary}


# ----------------------------------------------------------------------------- writing
def _varints(*values: int) -> bytes:
    return entropy.varint_encode(np.array(values, np.uint64))


def _json_bytes(header: Mapping[str, Any]) -> bytes:
    if not isinstance(header, Mapping):
        raise TypeError(f"container header must be a dict, got {type(header).__name__}")
    return json.dumps(dict(header), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_json_default).encode("utf-8")


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays, torch scalars and paths in a header become plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__.startswith("torch") and hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"container header values must be JSON-serialisable, got {type(value).__name__}")


def encode_container(kind: str, header: Mapping[str, Any], streams: Mapping[str, Any],
                     codecs: Mapping[str, str] | None = None) -> bytes:
    """The bytes of a container (deterministic: same inputs, same bytes). Streams keep mapping order."""
    if kind not in KINDS:
        raise ValueError(f"unknown container kind {kind!r}; kinds: {', '.join(KINDS)}")
    codecs = dict(codecs or {})
    unknown = set(codecs) - set(streams)
    if unknown:
        raise ValueError(f"codecs given for streams that do not exist: {sorted(unknown)}")
    if len(streams) > MAX_STREAMS:
        raise ValueError(f"{len(streams)} streams exceed the limit {MAX_STREAMS}")
    table, payloads, total = [], [], 0
    for name, value in streams.items():
        raw_name = str(name).encode("utf-8")
        if not raw_name or len(raw_name) > MAX_NAME_BYTES:
            raise ValueError(f"stream name {name!r} must be 1..{MAX_NAME_BYTES} UTF-8 bytes")
        array, dtype = as_stream_array(value)
        if array.ndim > MAX_NDIM:
            raise ValueError(f"stream {name!r} has {array.ndim} dimensions; the limit is {MAX_NDIM}")
        storage = array.astype(dtype.storage, copy=False)
        if storage.nbytes > MAX_STREAM_BYTES:
            raise ValueError(f"stream {name!r} has {storage.nbytes} bytes; the limit is {MAX_STREAM_BYTES}")
        total += storage.nbytes
        codec = codecs.get(name, "auto")
        if codec == "auto":
            codec, payload = entropy.encode_best(storage)
        else:
            payload = entropy.encode(codec, storage)
        table.append(_varints(len(raw_name)) + raw_name
                     + _ENTRY.pack(entropy.CODECS[codec].id, dtype.id, array.ndim)
                     + _varints(*array.shape, len(payload)) + struct.pack("<I", zlib.crc32(payload)))
        payloads.append(payload)
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"streams hold {total} bytes; the limit is {MAX_TOTAL_BYTES}")
    head = _json_bytes(header)
    index = _varints(len(head)) + head + _varints(len(table)) + b"".join(table)
    if len(index) > MAX_INDEX_BYTES:
        raise ValueError(f"container index of {len(index)} bytes exceeds {MAX_INDEX_BYTES}")
    index_z = entropy.zstd_encode(index)
    pre = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, KINDS[kind], 0, len(index_z), len(index), 0)[:-4]
    crc = zlib.crc32(index_z, zlib.crc32(pre))
    return b"".join([pre, struct.pack("<I", crc), index_z, *payloads])


def write_container(path: str | os.PathLike[str], kind: str, header: Mapping[str, Any],
                    streams: Mapping[str, Any], codecs: Mapping[str, str] | None = None) -> int:
    """Write a container atomically; returns the file's size in bytes.

    `streams` maps names to numpy arrays or torch tensors (bfloat16 tensors keep their dtype);
    `codecs` optionally maps names to "auto" (default: smallest), "ans", "zstd" or "raw".
    """
    from fieldpress.io import atomic_write_bytes

    return atomic_write_bytes(path, encode_container(kind, header, streams, codecs))


# ----------------------------------------------------------------------------- reading
def _read_exact(fh: Any, offset: int, length: int) -> bytes:
    fh.seek(offset)
    data = fh.read(length)
    if len(data) != length:
        raise FormatError(f"file ended early: wanted {length} bytes at offset {offset}, got {len(data)}")
    return data


class _Cursor:
    """Bounds-checked reads from the index; any overrun is a FormatError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError("container index is truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        """One LEB128 unsigned integer (at most 64 bits)."""
        value = 0
        for i in range(10):
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if value >> 64:
                    break
                return value
        raise FormatError("container index holds a varint over 64 bits")

    def unpack(self, fmt: struct.Struct | str) -> tuple:
        s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        return s.unpack(self.take(s.size))


@dataclass(frozen=True)
class _Index:
    kind: str
    version: int
    file_bytes: int
    header: dict[str, Any]
    streams: tuple[StreamInfo, ...]


def _parse_index(fh: Any, file_bytes: int, where: str) -> _Index:
    if file_bytes < _PREAMBLE.size:
        raise FormatError(f"{where}: not a fieldpress container ({file_bytes} bytes is too short)")
    pre = _read_exact(fh, 0, _PREAMBLE.size)
    magic, version, kind_id, reserved, index_len, index_raw_len, crc = _PREAMBLE.unpack(pre)
    if magic != MAGIC:
        raise FormatError(f"{where}: not a fieldpress container (bad magic {magic!r})")
    if not 1 <= version <= FORMAT_VERSION:
        raise FormatError(f"{where}: container format v{version} is not supported by this fieldpress "
                          f"(it reads v1..v{FORMAT_VERSION}); upgrade fieldpress")
    if index_len > file_bytes - _PREAMBLE.size:
        raise FormatError(f"{where}: truncated container (index of {index_len} bytes runs past the end)")
    if index_raw_len > MAX_INDEX_BYTES:
        raise FormatError(f"{where}: index of {index_raw_len} bytes exceeds the limit {MAX_INDEX_BYTES}")
    index_z = _read_exact(fh, _PREAMBLE.size, index_len)
    if zlib.crc32(index_z, zlib.crc32(pre[:-4])) != crc:
        raise FormatError(f"{where}: damaged container (header CRC mismatch)")
    if kind_id not in KIND_BY_ID or reserved != 0:
        raise FormatError(f"{where}: unknown container kind id {kind_id}")
    cur = _Cursor(entropy.zstd_decode(index_z, index_raw_len))
    head_len = cur.varint()
    try:
        header = json.loads(cur.take(head_len).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{where}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where}: header is not a JSON object")
    n = cur.varint()
    if n > MAX_STREAMS:
        raise FormatError(f"{where}: {n} streams exceed the limit {MAX_STREAMS}")
    offset, total, streams, names = _PREAMBLE.size + index_len, 0, [], set()
    for _ in range(n):
        name_len = cur.varint()
        try:
            name = cur.take(name_len).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: stream name is not UTF-8") from None
        if not name or name in names:
            raise FormatError(f"{where}: empty or repeated stream name {name!r}")
        names.add(name)
        codec_id, dtype_id, ndim = cur.unpack(_ENTRY)
        if codec_id not in entropy.CODEC_BY_ID:
            raise FormatError(f"{where}: stream {name!r} has unknown codec id {codec_id}")
        dtype = dtype_by_id(dtype_id)
        if ndim > MAX_NDIM:
            raise FormatError(f"{where}: stream {name!r} has {ndim} dimensions (limit {MAX_NDIM})")
        shape = [cur.varint() for _ in range(ndim)]
        length = cur.varint()
        (crc32,) = cur.unpack("<I")
        info = StreamInfo(name, entropy.CODEC_BY_ID[codec_id].name, dtype, tuple(int(d) for d in shape),
                          offset, length, crc32)
        if info.raw_bytes > MAX_STREAM_BYTES:
            raise FormatError(f"{where}: stream {name!r} claims {info.count} elements "
                              f"({info.raw_bytes} bytes), over the limit of {MAX_STREAM_BYTES} per stream")
        total += info.raw_bytes
        if total > MAX_TOTAL_BYTES:
            raise FormatError(f"{where}: streams claim {total} bytes, over the limit {MAX_TOTAL_BYTES}")
        if info.codec == "raw" and length != info.raw_bytes:
            raise FormatError(f"{where}: raw stream {name!r} has {length} bytes, expected {info.raw_bytes}")
        if offset + length > file_bytes:
            raise FormatError(f"{where}: truncated container (stream {name!r} runs past the end)")
        offset += length
        streams.append(info)
    if cur.pos != len(cur.data):
        raise FormatError(f"{where}: container index has {len(cur.data) - cur.pos} trailing bytes")
    if offset != file_bytes:
        raise FormatError(f"{where}: container has {file_bytes - offset} bytes after its last stream")
    return _Index(KIND_BY_ID[kind_id], version, file_bytes, header, tuple(streams))


def _check_stream(fh: Any, s: StreamInfo, where: str) -> None:
    """Check a payload without decoding it: its CRC32 (read in chunks) and its codec's declared size."""
    if s.codec == "zstd":
        try:
            size = zstandard.frame_content_size(_read_exact(fh, s.offset, min(s.length, 18)))
        except zstandard.ZstdError:
            size = -1
        if size != s.raw_bytes:
            raise FormatError(f"{where}: stream {s.name!r} does not hold the {s.raw_bytes} bytes it claims")
    if s.codec == "ans" and (s.length == 0) != (s.raw_bytes == 0):
        raise FormatError(f"{where}: ANS stream {s.name!r} does not match its element count")
    fh.seek(s.offset)
    crc, left = 0, s.length
    while left:
        chunk = fh.read(min(_CHUNK, left))
        if not chunk:
            raise FormatError(f"{where}: file ended inside stream {s.name!r}")
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    if crc != s.crc32:
        raise FormatError(f"{where}: damaged stream {s.name!r} (CRC mismatch)")


Source = str | os.PathLike[str] | bytes
"""A container file's path, or its bytes in memory (e.g. a pipeline measuring what it will write)."""


def _open_source(source: Source) -> tuple[Any, int]:
    """(a binary file object, its size) for a path or for bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), len(data)
    fh = open(source, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    return fh, os.fstat(fh.fileno()).st_size


def _load_index(path: Source) -> tuple[_Index, Any]:
    if isinstance(path, (bytes, bytearray, memoryview)):
        fh, size = _open_source(path)
        return _parse_index(fh, size, "<bytes>"), fh
    p = Path(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, expected a container file") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot open ({exc.strerror})") from None
    try:
        return _parse_index(fh, os.fstat(fh.fileno()).st_size, str(p)), fh
    except BaseException:
        fh.close()
        raise


def _summary(kind: str, header: dict[str, Any]) -> dict[str, Any]:
    """The codec's one-screen summary of a header ({} when no installed codec reads it)."""
    from fieldpress.codec.registry import codec_for

    try:
        codec = codec_for(kind, header)
    except FormatError:
        return {}
    try:
        return {"codec": codec.name, **dict(codec.summarize(header))}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # a header this version's codec does not understand (e.g. a golden test file): still show it
        return {"codec": codec.name, "summary_error": f"{type(exc).__name__}: {exc}"}


def read_info(path: str | os.PathLike[str], verify: bool = True) -> ContainerInfo:
    """Kind, header and stream table of a container, without decoding any payload.

    With `verify` (the default) every payload's CRC32 is checked (reading in 1 MiB chunks), and
    every zstd frame's declared size against the stream's shape.
    """
    index, fh = _load_index(path)
    with fh:
        if verify:
            for s in index.streams:
                _check_stream(fh, s, str(path))
    return ContainerInfo(str(path), index.kind, index.version, index.file_bytes, index.header,
                         index.streams, _summary(index.kind, index.header))


class Container:
    """An opened container: kind, header and stream table now; payloads decoded on demand."""

    def __init__(self, path: Source) -> None:
        index, fh = _load_index(path)
        fh.close()
        in_memory = isinstance(path, (bytes, bytearray, memoryview))
        self._source: Source = bytes(path) if in_memory else path
        self.path = Path("<bytes>") if in_memory else Path(path)
        self.kind: str = index.kind
        self.version: int = index.version
        self.header: dict[str, Any] = index.header
        self.file_bytes: int = index.file_bytes
        self.streams: dict[str, StreamInfo] = {s.name: s for s in index.streams}

    @property
    def names(self) -> list[str]:
        return list(self.streams)

    def __contains__(self, name: object) -> bool:
        return name in self.streams

    def __repr__(self) -> str:
        return (f"Container({str(self.path)!r}, kind={self.kind!r}, version={self.version}, "
                f"streams={len(self.streams)}, bytes={self.file_bytes})")

    def _stream(self, name: str) -> StreamInfo:
        try:
            return self.streams[name]
        except KeyError:
            raise InputError(f"{self.path}: no stream named {name!r}") from None

    def payload(self, name: str) -> bytes:
        """The CRC-checked payload bytes of one stream (still encoded)."""
        s = self._stream(name)
        fh, size = _open_source(self._source)
        with fh:
            if size != self.file_bytes:
                raise FormatError(f"{self.path}: file changed size since it was opened")
            data = _read_exact(fh, s.offset, s.length)
        if zlib.crc32(data) != s.crc32:
            raise FormatError(f"{self.path}: damaged stream {name!r} (CRC mismatch)")
        return data

    def array(self, name: str) -> np.ndarray:
        """Decode one stream (native byte order; bfloat16 as its uint16 bits)."""
        s = self._stream(name)
        try:
            out = entropy.decode(s.codec, self.payload(name), s.dtype.storage, s.shape)
        except FormatError as exc:
            raise FormatError(f"{self.path}: stream {name!r}: {exc}") from None
        return to_native(out, s.dtype)

    def tensor(self, name: str) -> Any:
        """Decode one stream as a torch tensor (bfloat16 restored; uint16/32/64 widened to int64)."""
        return to_tensor(self.array(name), self._stream(name).dtype)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: self.array(name) for name in self.streams}

    def info(self) -> ContainerInfo:
        return ContainerInfo(str(self.path), self.kind, self.version, self.file_bytes, self.header,
                             tuple(self.streams.values()), _summary(self.kind, self.header))

    def codec(self) -> Any:
        """The codec that wrote this file (named in its header; see fieldpress.codec.registry)."""
        from fieldpress.codec.registry import codec_for

        try:
            return codec_for(self.kind, self.header)
        except FormatError as exc:
            raise FormatError(f"{self.path}: {exc}") from None

    def decoder(self, **options: Any) -> Any:
        """The codec's decoder object for this file (e.g. frames of a video, the image, the scene)."""
        return self.codec().decode(self, **options)


def open_container(path: Source) -> Container:
    """Open a container (a path, or the file's bytes): validates the preamble, index CRC and stream
    table; payloads stay lazy."""
    return Container(path)

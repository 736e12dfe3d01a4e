"""Mutations the fuzz harness applies to seed files, drawn through hypothesis (`st.data()`).

Two layers: byte mutations for every input (bit flips, overwrites, truncation, insertion, copied
chunks, extreme numbers written into a text header), applied to the inner bytes of gzip/zstd-wrapped
files so the wrapper's checksum does not hide the parser behind it; and structure-aware container
mutations (header values, stream values, shapes, dtypes, names and stream codecs changed, then the
container re-encoded with valid CRCs) so the decoders behind the CRCs see hostile content.
"""

from __future__ import annotations

import gzip
import re
import zlib
from typing import Any

import numpy as np
import zstandard
from hypothesis import strategies as st

EXTREME_INTS = (0, 1, -1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, -(2**31))
EXTREME_FLOATS = (0.0, -0.0, 1e-45, 1e38, 3.5e38, 1e308, -1e308, 0.5)
NUMBER = re.compile(rb"-?\d+(\.\d+)?")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def mutate_bytes(data: st.DataObject, blob: bytes) -> bytes:
    """One to four byte-level edits of `blob` (inside its gzip/zstd wrapper half of the time)."""
    inner, wrap = _unwrap(blob)
    if inner is not None and data.draw(st.booleans(), "unwrap"):
        return wrap(_edit_bytes(data, inner))
    return _edit_bytes(data, blob)


def _unwrap(blob: bytes) -> tuple[bytes | None, Any]:
    """The payload inside a gzip or zstd frame and the function that wraps it again (None if plain)."""
    try:
        if blob[:2] == b"\x1f\x8b":
            return gzip.decompress(blob), lambda b: gzip.compress(b, mtime=0)
        if blob[:4] == ZSTD_MAGIC:
            return zstandard.ZstdDecompressor().decompress(blob, max_output_size=64 << 20), \
                lambda b: zstandard.ZstdCompressor(level=1).compress(b)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError):
        pass
    return None, None


def _edit_bytes(data: st.DataObject, blob: bytes) -> bytes:
    """Apply 1-4 drawn edits; positions favour the first 4 KiB (headers, tables) half of the time."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), "edits")):
        n = len(out)
        limit = max(n - 1, 0) if data.draw(st.booleans(), "anywhere") else min(max(n - 1, 0), 4095)
        pos = data.draw(st.integers(0, limit), "pos")
        op = data.draw(st.sampled_from(("flip", "byte", "truncate", "insert", "copy", "number")), "op")
        if op == "flip" and n:
            out[pos] ^= 1 << data.draw(st.integers(0, 7), "bit")
        elif op == "byte" and n:
            out[pos] = data.draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x0A)), "value")
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = bytes(data.draw(st.binary(min_size=1, max_size=16), "inserted"))
        elif op == "copy" and n:
            size = data.draw(st.integers(1, 256), "size")
            out[pos:pos] = out[max(0, pos - size):pos]
        elif op == "number":
            out = bytearray(_edit_number(data, bytes(out)))
    return bytes(out)


def _edit_number(data: st.DataObject, blob: bytes) -> bytes:
    """Replace one ASCII number in the first 4 KiB (a text header's count or size) by an extreme one."""
    found = list(NUMBER.finditer(blob[:4096]))
    if not found:
        return blob
    m = found[data.draw(st.integers(0, len(found) - 1), "which")]
    value = data.draw(st.sampled_from(EXTREME_INTS + (10**12, 10**30)), "number")
    return blob[:m.start()] + str(value).encode() + blob[m.end():]


# ----------------------------------------------------------------------------- containers
def mutate_container(data: st.DataObject, parts: dict[str, Any]) -> bytes:
    """Re-encode a decoded seed container (`parts`: kind, header, arrays, codecs) after 1-3 drawn
    structural edits, with every CRC valid; falls back to the chosen codecs' defaults when a stream
    codec cannot hold the edited array."""
    from fieldpress.codec.container import encode_container

    header = _copy_json(parts["header"])
    arrays = dict(parts["arrays"])
    codecs = dict(parts["codecs"])
    for _ in range(data.draw(st.integers(1, 3), "structural edits")):
        if not arrays or data.draw(st.integers(0, 2), "what") == 0:
            header = _edit_json(data, header)
        else:
            _edit_stream(data, arrays, codecs)
    codecs = {k: v for k, v in codecs.items() if k in arrays}
    try:
        return encode_container(parts["kind"], header, arrays, codecs)
    except (ValueError, TypeError, OverflowError):
        return encode_container(parts["kind"], header, arrays)


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) to a node of a JSON tree, the root excluded."""
    out: list[tuple] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(_paths(child, prefix + (key,)))
    return out


def _edit_json(data: st.DataObject, header: Any) -> Any:
    """Replace or delete one node of the header by an extreme or wrongly typed value."""
    paths = _paths(header)
    if not paths:
        return header
    path = paths[data.draw(st.integers(0, len(paths) - 1), "node")]
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    choices: list[Any] = [None, "x", [], {}, True] + list(EXTREME_INTS) + list(EXTREME_FLOATS)
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        choices += [old + 1, old - 1, -old, old * 1000]
    if isinstance(old, list):
        choices += [old[:-1], old + old[-1:], old * 50]
    if data.draw(st.integers(0, 9), "delete") == 0 and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(st.sampled_from(choices), "value")
    return header


def _edit_stream(data: st.DataObject, arrays: dict[str, np.ndarray], codecs: dict[str, str]) -> None:
    """Change one stream's values, shape, dtype, name or codec, or drop it."""
    names = sorted(arrays)
    name = names[data.draw(st.integers(0, len(names) - 1), "stream")]
    a = np.array(arrays[name])
    op = data.draw(st.sampled_from(("values", "values", "shape", "dtype", "drop", "rename", "codec")), "op")
    if op == "values" and a.size:
        flat = a.reshape(-1)
        for _ in range(data.draw(st.integers(1, 8), "count")):
            flat[data.draw(st.integers(0, a.size - 1), "at")] = _extreme(data, a.dtype)
        arrays[name] = flat.reshape(a.shape)
    elif op == "shape":
        flat = a.reshape(-1)
        arrays[name] = data.draw(st.sampled_from((flat, flat[:-1], np.concatenate([flat, flat[:1]]),
                                                  a[None], flat[: max(a.size // 2, 0)])), "reshape")
    elif op == "dtype":
        target = data.draw(st.sampled_from(("u1", "i1", "u2", "i4", "i8", "f2", "f4", "f8", "?")), "dtype")
        with np.errstate(all="ignore"):
            arrays[name] = a.astype(target)
    elif op == "drop":
        del arrays[name]
    elif op == "rename":
        arrays[data.draw(st.sampled_from((name + "x", name[:-1] or "x", "w/" + name)), "new name")] = \
            arrays.pop(name)
    elif op == "codec":
        codecs[name] = data.draw(st.sampled_from(("raw", "zstd", "ans")), "codec")


def _extreme(data: st.DataObject, dtype: np.dtype) -> Any:
    """A value at or near the edge of `dtype` (or a wild float)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return data.draw(st.sampled_from((info.min, info.max, 0, 1, info.max // 2 + 1)), "int")
    if dtype.kind == "b":
        return data.draw(st.booleans(), "bool")
    if dtype.kind == "f":
        return data.draw(st.sampled_from((np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30)), "float")
    return 0

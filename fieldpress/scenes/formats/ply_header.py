"""Our own PLY layer: a bounded header parser, a reader and a writer over numpy structured arrays.

The header is parsed first so a reader refuses counts the file cannot hold before anything is
allocated; data after the declared end (as in a truncated export) is ignored with a warning. Binary
(little and big endian) and ASCII, every fixed-size PLY property type; each property keeps its dtype
(float64 stays float64). Writing produces the canonical header (`ply`, `format ... 1.0`, comments,
obj_info, elements) so a file read and written again is byte-identical to the data it declared.
List properties are refused (no Gaussian layout uses them). No GPL code: plyfile is not needed.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence

import numpy as np

from fieldpress.errors import FormatError

MAX_HEADER_BYTES = 1 << 20
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
PLY_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
             "f4": "float", "f8": "double"}
FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclasses.dataclass(frozen=True)
class PlyProperty:
    name: str
    dtype: str  # numpy kind+size without byte order, e.g. "f4"
    list_count_dtype: str | None = None  # set for list properties


@dataclasses.dataclass(frozen=True)
class PlyElement:
    name: str
    count: int
    properties: tuple[PlyProperty, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.properties]

    @property
    def has_lists(self) -> bool:
        return any(p.list_count_dtype for p in self.properties)

    def row_bytes(self) -> int:
        return sum(np.dtype(p.dtype).itemsize for p in self.properties if not p.list_count_dtype)

    def numpy_dtype(self, byte_order: str) -> np.dtype:
        return np.dtype([(p.name, byte_order + p.dtype) for p in self.properties])


@dataclasses.dataclass(frozen=True)
class PlyHeader:
    format: str  # ascii | binary_little_endian | binary_big_endian
    elements: tuple[PlyElement, ...]
    comments: tuple[str, ...]
    size: int  # bytes up to and including the end_header line
    obj_info: tuple[str, ...] = ()

    @property
    def byte_order(self) -> str:
        return FORMATS[self.format] or "<"

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


def looks_like_ply(head: bytes) -> bool:
    return head[:4] in (b"ply\n", b"ply\r")


def parse_header(data: bytes, source: str = "file") -> PlyHeader:
    """Parse the header at the start of `data`; FormatError for anything malformed."""
    if not looks_like_ply(data):
        raise FormatError(f"{source}: not a PLY file (no 'ply' magic)")
    end = data.find(b"end_header", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise FormatError(f"{source}: PLY header has no end_header within {MAX_HEADER_BYTES} bytes")
    line_end = data.find(b"\n", end)
    if line_end < 0:
        raise FormatError(f"{source}: PLY header ends without a newline")
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{source}: PLY header is not ASCII text") from None
    fmt = None
    elements: list[tuple[str, int, list[PlyProperty]]] = []
    comments: list[str] = []
    obj_info: list[str] = []
    for raw in text.replace("\r", "").split("\n")[1:]:
        words = raw.split()
        if not words:
            continue
        key = words[0]
        if key in ("comment", "obj_info"):
            (comments if key == "comment" else obj_info).append(_line_text(raw))
        elif key == "format":
            if len(words) != 3 or words[1] not in FORMATS:
                raise FormatError(f"{source}: unsupported PLY format line {raw.strip()!r}")
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise FormatError(f"{source}: bad PLY element line {raw.strip()!r}")
            elements.append((words[1], int(words[2]), []))
        elif key == "property":
            if not elements:
                raise FormatError(f"{source}: PLY property before any element")
            if len(words) == 3 and words[1] in PLY_TYPES:
                elements[-1][2].append(PlyProperty(words[2], PLY_TYPES[words[1]]))
            elif len(words) == 5 and words[1] == "list" and words[2] in PLY_TYPES and words[3] in PLY_TYPES:
                elements[-1][2].append(PlyProperty(words[4], PLY_TYPES[words[3]], PLY_TYPES[words[2]]))
            else:
                raise FormatError(f"{source}: bad PLY property line {raw.strip()!r}")
        else:
            raise FormatError(f"{source}: unknown PLY header line {raw.strip()!r}")
    if fmt is None:
        raise FormatError(f"{source}: PLY header has no format line")
    els = tuple(PlyElement(n, c, tuple(p)) for n, c, p in elements)
    for e in els:
        if len(set(e.names)) != len(e.names):
            raise FormatError(f"{source}: PLY element {e.name!r} repeats a property name")
    return PlyHeader(fmt, els, tuple(comments), line_end + 1, tuple(obj_info))


def _line_text(raw: str) -> str:
    """The text of a comment/obj_info line after its keyword and one space (kept verbatim)."""
    line = raw.lstrip()
    rest = line[len(line.split(None, 1)[0]):]
    return rest[1:] if rest[:1].isspace() else rest


def check_sizes(header: PlyHeader, total: int, source: str = "file") -> int:
    """Check that the declared elements fit in `total` bytes; return where their data ends.

    Binary fixed-size elements must fit exactly (trailing data is allowed and reported by the
    caller); ASCII needs at least two bytes per value. Lists need at least their count bytes.
    """
    available = total - header.size
    if header.format == "ascii":
        need = sum(e.count * max(len(e.properties), 1) * 2 for e in header.elements)
        if need > available + 1:
            raise FormatError(f"{source}: PLY header declares more values than the file holds "
                              f"({need} bytes needed at least, {available} present)")
        return total
    need = 0
    for e in header.elements:
        row = e.row_bytes() + sum(np.dtype(p.list_count_dtype).itemsize
                                  for p in e.properties if p.list_count_dtype)
        need += e.count * row
        if need > available:
            raise FormatError(f"{source}: PLY header declares {e.count} {e.name} rows but the file is too "
                              "short "
                              f"({header.size + need} bytes needed, {total} present)")
    if any(e.has_lists for e in header.elements):
        return total
    return header.size + need


ASCII_CHUNK = 1 << 20  # bytes of ASCII text tokenized at a time (bounds the token list's memory)


def read_ply(data: bytes, source: str = "file") -> tuple[PlyHeader, dict[str, np.ndarray]]:
    """Read every element of a PLY file as a structured numpy array (fixed-size properties only)."""
    header = parse_header(data, source)
    end = check_sizes(header, len(data), source)
    for e in header.elements:
        if e.has_lists:
            raise FormatError(f"{source}: PLY element {e.name!r} has list properties; not a Gaussian scene")
    if header.format == "ascii":
        return header, _read_ascii(data, header, source)
    if end < len(data):
        warnings.warn(f"{source}: {len(data) - end} bytes after the declared PLY data were ignored",
                      stacklevel=2)
    out: dict[str, np.ndarray] = {}
    offset = header.size
    for e in header.elements:
        dtype = e.numpy_dtype(header.byte_order)
        out[e.name] = np.frombuffer(data, dtype=dtype, count=e.count, offset=offset).copy()
        offset += e.count * dtype.itemsize
    return header, out


def _ascii_values(data: bytes, start: int, total: int, source: str) -> np.ndarray:
    """Parse exactly `total` whitespace-separated numbers after `start` as float64 (chunked)."""
    out = np.empty(total, np.float64)
    filled, pos, size = 0, start, len(data)
    while pos < size and filled < total:
        end = min(pos + ASCII_CHUNK, size)
        while end < size and not data[end:end + 1].isspace():
            end += 1
        tokens = data[pos:end].split()
        pos = end
        if not tokens:
            continue
        take = min(len(tokens), total - filled)
        try:
            out[filled:filled + take] = np.array(tokens[:take]).astype(np.float64)
        except ValueError:
            raise FormatError(f"{source}: ASCII PLY data holds a value that is not a number") from None
        filled += take
        if take < len(tokens):
            pos = size + 1  # more values than declared: reported below
    if filled < total:
        raise FormatError(f"{source}: ASCII PLY data ends early ({filled} of {total} values present)")
    if pos > size or data[pos:].strip():
        warnings.warn(f"{source}: values after the declared ASCII PLY data were ignored", stacklevel=3)
    return out


def _read_ascii(data: bytes, header: PlyHeader, source: str) -> dict[str, np.ndarray]:
    """The ASCII body as structured arrays; integer columns must hold integers in their type's range."""
    total = sum(e.count * len(e.properties) for e in header.elements)
    values = _ascii_values(data, header.size, total, source)
    out: dict[str, np.ndarray] = {}
    offset = 0
    for e in header.elements:
        width = len(e.properties)
        rows = values[offset:offset + e.count * width].reshape(e.count, width)
        offset += e.count * width
        table = np.empty(e.count, dtype=e.numpy_dtype("<"))
        for j, prop in enumerate(e.properties):
            col = rows[:, j]
            dtype = np.dtype(prop.dtype)
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                bad = ~np.isfinite(col) | (col != np.trunc(col)) | (col < info.min) | (col > info.max)
                if bad.any():
                    kind = PLY_NAMES[prop.dtype]
                    raise FormatError(f"{source}: ASCII PLY property {e.name}.{prop.name} ({kind}) "
                                      f"holds {col[bad][0]!r}, not an integer in range")
            with np.errstate(over="ignore"):
                table[prop.name] = col.astype(dtype)
        out[e.name] = table
    return out


def ply_property_name(dtype: np.dtype, where: str) -> str:
    """The PLY type name of a numpy dtype (char..double); FormatError for types PLY cannot hold."""
    name = PLY_NAMES.get(np.dtype(dtype).str[1:])
    if name is None:
        raise FormatError(f"{where}: dtype {np.dtype(dtype)} has no PLY property type")
    return name


def encode_ply(elements: Sequence[tuple[str, np.ndarray]], fmt: str = "binary_little_endian",
               comments: Sequence[str] = (), obj_info: Sequence[str] = ()) -> bytes:
    """PLY bytes for structured arrays (one element each), keeping every property's dtype."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown PLY format {fmt!r}")
    lines = ["ply", f"format {fmt} 1.0"]
    for kind, texts in (("comment", comments), ("obj_info", obj_info)):
        for text in texts:
            if "\n" in text or "\r" in text:
                raise FormatError(f"PLY {kind} {text!r} spans lines")
            lines.append(f"{kind} {text}")
    chunks = []
    order = FORMATS[fmt] or "<"
    for name, arr in elements:
        if arr.dtype.names is None or arr.ndim != 1 or not name or any(c.isspace() for c in name):
            raise FormatError(f"PLY element {name!r} is not a 1-D structured array with a plain name")
        lines.append(f"element {name} {len(arr)}")
        for prop in arr.dtype.names:
            if arr.dtype[prop].shape or not prop or any(c.isspace() for c in prop):
                raise FormatError(f"PLY property {name}.{prop!r} is not a plain scalar column")
            lines.append(f"property {ply_property_name(arr.dtype[prop], f'{name}.{prop}')} {prop}")
        chunks.append(_element_bytes(arr, fmt, order))
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii") + b"".join(chunks)


def _element_bytes(arr: np.ndarray, fmt: str, order: str) -> bytes:
    """One element's data: packed rows in the byte order, or ASCII rows (%.18g, as plyfile wrote)."""
    names = arr.dtype.names or ()
    if fmt == "ascii":
        if not len(arr) or not names:
            return b""
        table = np.stack([arr[n].astype(np.float64) for n in names], axis=1)
        rows = [" ".join(f"{v:.18g}" for v in row) for row in table.tolist()]
        return ("\n".join(rows) + "\n").encode("ascii")
    packed = np.empty(len(arr), dtype=[(n, order + arr.dtype[n].str[1:]) for n in names])
    for n in names:
        packed[n] = arr[n]
    return packed.tobytes()


def write_ply(path: str | os.PathLike[str], elements: Sequence[tuple[str, np.ndarray]],
              fmt: str = "binary_little_endian", comments: Sequence[str] = (),
              obj_info: Sequence[str] = ()) -> None:
    """Write structured arrays as PLY elements, keeping each property's dtype (callers make it atomic)."""
    data = encode_ply(elements, fmt, comments, obj_info)
    with open(path, "wb") as fh:
        fh.write(data)

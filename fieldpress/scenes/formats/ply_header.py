"""A bounded PLY header parser: elements, properties and the byte size each binary element needs.

plyfile trusts the declared counts; we parse the header first so a reader can refuse counts the file
cannot hold before anything is allocated, and hand plyfile a buffer cut at the declared end (data
after it, as in a truncated export, is ignored with a warning).
"""

from __future__ import annotations

import dataclasses
import io
import warnings

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
    for raw in text.replace("\r", "").split("\n")[1:]:
        words = raw.split()
        if not words:
            continue
        key = words[0]
        if key in ("comment", "obj_info"):
            comments.append(raw.split(None, 1)[1] if len(words) > 1 else "")
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
    return PlyHeader(fmt, els, tuple(comments), line_end + 1)


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


def read_ply(data: bytes, source: str = "file") -> tuple[PlyHeader, dict[str, np.ndarray]]:
    """Read every element of a PLY file as a structured numpy array (fixed-size properties only)."""
    header = parse_header(data, source)
    end = check_sizes(header, len(data), source)
    for e in header.elements:
        if e.has_lists:
            raise FormatError(f"{source}: PLY element {e.name!r} has list properties; not a Gaussian scene")
    if header.format != "ascii":
        if end < len(data):
            warnings.warn(f"{source}: {len(data) - end} bytes after the declared PLY data were ignored",
                          stacklevel=3)
        out: dict[str, np.ndarray] = {}
        offset = header.size
        for e in header.elements:
            dtype = e.numpy_dtype(header.byte_order)
            out[e.name] = np.frombuffer(data, dtype=dtype, count=e.count, offset=offset).copy()
            offset += e.count * dtype.itemsize
        return header, out
    return header, _read_ascii(data, header, source)


def _read_ascii(data: bytes, header: PlyHeader, source: str) -> dict[str, np.ndarray]:
    import plyfile

    try:
        ply = plyfile.PlyData.read(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - plyfile raises many kinds on damaged text
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FormatError(f"{source}: cannot parse ASCII PLY data: {first}") from None
    out = {}
    for e in header.elements:
        arr = ply[e.name].data
        out[e.name] = np.asarray(arr).astype(e.numpy_dtype("<"))
    return out


def write_ply(path: str, elements: list[tuple[str, np.ndarray]], fmt: str = "binary_little_endian",
              comments: tuple[str, ...] | list[str] = ()) -> None:
    """Write structured arrays as PLY elements (plyfile), keeping each property's dtype."""
    import plyfile

    if fmt not in FORMATS:
        raise FormatError(f"unknown PLY format {fmt!r}")
    els = [plyfile.PlyElement.describe(arr, name) for name, arr in elements]
    ply = plyfile.PlyData(els, text=fmt == "ascii", byte_order=FORMATS[fmt] or "=",
                          comments=list(comments))
    ply.write(str(path))

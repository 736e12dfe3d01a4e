"""INRIA 3DGS PLY (the layout of graphdeco-inria/gaussian-splatting): one `vertex` element with
x,y,z, optional nx,ny,nz, f_dc_0..2, f_rest_0..(3K-1) (channel-major), opacity, scale_0..2, rot_0..3.

Binary little/big endian and ASCII; every other vertex property is kept by name with its dtype and
written back, and the property order, dtypes, format and comments of the source are remembered in
`meta["ply"]`, so read -> write -> read gives identical values for every property.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fieldpress.errors import FormatError
from fieldpress.scenes.formats.ply_header import PLY_NAMES, looks_like_ply, parse_header, read_ply, write_ply
from fieldpress.scenes.formats.registry import SceneFormat
from fieldpress.scenes.scene import GaussianScene, sh_degree_of

POSITION = ("x", "y", "z")
NORMALS = ("nx", "ny", "nz")
DC = ("f_dc_0", "f_dc_1", "f_dc_2")
SCALE = ("scale_0", "scale_1", "scale_2")
ROT = ("rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = POSITION + DC + ("opacity",) + SCALE + ROT


def rest_names(k: int) -> list[str]:
    return [f"f_rest_{i}" for i in range(3 * k)]


def standard_order(k: int, normals: bool) -> list[str]:
    """The property order INRIA's trainer writes."""
    return list(POSITION) + (list(NORMALS) if normals else []) + list(DC) + rest_names(k) + ["opacity"] \
        + list(SCALE) + list(ROT)


def sniff(head: bytes, path: Path) -> bool:
    if not looks_like_ply(head):
        return False
    try:
        header = parse_header(head if b"end_header" in head else _read_head(path), str(path))
    except FormatError:
        return True  # a PLY we will report on properly when reading
    vertex = header.element("vertex")
    return vertex is not None and "x" in vertex.names and header.element("chunk") is None


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(1 << 20)


def read(path: Path) -> GaussianScene:
    data = Path(path).read_bytes()
    header, elements = read_ply(data, str(path))
    vertex = header.element("vertex")
    if vertex is None:
        raise FormatError(f"{path}: PLY file has no 'vertex' element")
    names = vertex.names
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise FormatError(f"{path}: not a 3DGS PLY: missing required properties {', '.join(missing)}")
    rest = sorted((n for n in names if n.startswith("f_rest_")),
                  key=lambda n: int(n[7:]) if n[7:].isdigit() else -1)
    if rest != rest_names(len(rest) // 3) or len(rest) % 3:
        raise FormatError(f"{path}: f_rest properties are not f_rest_0..f_rest_{{3K-1}} ({len(rest)} found)")
    k = len(rest) // 3
    sh_degree_of(k)
    arr = elements["vertex"]
    n = len(arr)

    def cols(keys: tuple[str, ...] | list[str]) -> np.ndarray:
        if not keys:
            return np.zeros((n, 0), np.float32)
        return np.stack([arr[key].astype(np.float32) for key in keys], axis=1)

    known = set(REQUIRED) | set(rest)
    _warn_narrowed(arr, [n for n in names if n in known], path)
    extras = {name: np.ascontiguousarray(arr[name]).astype(arr.dtype[name].newbyteorder("="))
              for name in names if name not in known}
    sh_rest = cols(rest).reshape(n, 3, k).transpose(0, 2, 1) if k else np.zeros((n, 0, 3), np.float32)
    meta: dict[str, Any] = {
        "ply": {
            "format": header.format,
            "properties": [[p.name, p.dtype] for p in vertex.properties],
            "comments": list(header.comments),
        },
    }
    if header.obj_info:
        meta["ply"]["obj_info"] = list(header.obj_info)
    return GaussianScene.from_arrays(
        means=cols(POSITION), scales=cols(SCALE), quats=cols(ROT),
        opacities=arr["opacity"].astype(np.float32),
        sh_dc=cols(DC), sh_rest=np.ascontiguousarray(sh_rest), extras=extras, meta=meta)


def _warn_narrowed(arr: np.ndarray, names: list[str], path: Path) -> None:
    """Warn when a standard column holds float64/integer values that float32 cannot hold exactly.

    GaussianScene keeps its attributes in float32 (extras keep their dtype); the warning names the
    columns so the narrowing is never silent. Files written from float32 data lose nothing and say nothing.
    """
    lossy = []
    for name in names:
        col = arr[name]
        if col.dtype.itemsize > 4 or col.dtype.kind in "iu":
            with np.errstate(over="ignore", invalid="ignore"):
                back = col.astype(np.float32).astype(col.dtype)
            if not np.array_equal(back, col, equal_nan=col.dtype.kind == "f"):
                lossy.append(f"{name} ({col.dtype.name})")
    if lossy:
        shown = ", ".join(lossy[:6]) + (f" and {len(lossy) - 6} more" if len(lossy) > 6 else "")
        warnings.warn(f"{path}: {shown} narrowed to float32 (scene attributes are float32; "
                      "values changed)", stacklevel=3)


def scene_columns(scene: GaussianScene) -> dict[str, np.ndarray]:
    """Every standard column of the INRIA layout as float32 arrays (no normals, no extras)."""
    s = scene.detach().to("cpu")
    n, k = s.n, s.sh_rest.shape[1]
    out: dict[str, np.ndarray] = {}
    for names, values in ((POSITION, s.means), (DC, s.sh_dc), (SCALE, s.scales), (ROT, s.quats)):
        v = values.numpy()
        for i, name in enumerate(names):
            out[name] = v[:, i]
    rest = s.sh_rest.numpy().transpose(0, 2, 1).reshape(n, 3 * k)
    for i, name in enumerate(rest_names(k)):
        out[name] = rest[:, i]
    out["opacity"] = s.opacities.numpy()
    return out


def write(scene: GaussianScene, path: Path, format: str | None = None, normals: bool | None = None,
          comments: list[str] | None = None) -> None:
    """Write the INRIA layout; the source's property order, dtypes and PLY format are reused when known.

    `normals`: write nx,ny,nz (zeros unless the scene carries them); default: as the source did, or
    yes for scenes from other formats (the standard 62-column layout).
    """
    columns = scene_columns(scene)
    k = scene.sh_rest.shape[1]
    ply_meta = scene.meta.get("ply") or {}
    recorded = [(str(a), str(b)) for a, b in ply_meta.get("properties", [])]
    recorded_dtypes = dict(recorded)
    extras = dict(scene.extras)
    if normals is None:
        normals = ("nx" in recorded_dtypes) if recorded else True
    if normals:
        for name in NORMALS:
            extras.setdefault(name, np.zeros(scene.n, np.float32))
    else:
        for name in NORMALS:
            extras.pop(name, None)
    wanted = standard_order(k, False)
    present = set(wanted) | set(extras)
    if recorded and {name for name, _ in recorded} == present:
        order = [name for name, _ in recorded]
    else:
        order = standard_order(k, bool(normals)) + [e for e in extras if e not in NORMALS]
    fmt = format or ply_meta.get("format") or "binary_little_endian"
    byte_order = ">" if fmt == "binary_big_endian" else "<"
    fields = []
    values = []
    for name in order:
        if name in columns:
            dtype = np.dtype(recorded_dtypes.get(name, "f4"))
            if dtype.kind != "f":
                dtype = np.dtype("f4")
            value = columns[name].astype(dtype)
        else:
            value = np.asarray(extras[name])
            if value.ndim != 1:
                raise FormatError(f"extra property {name!r} is not one value per Gaussian (PLY)")
            if value.dtype.str[1:] not in PLY_NAMES:
                value = value.astype(np.float32 if value.dtype.kind == "f" else np.int32)
            dtype = value.dtype
        fields.append((name, byte_order + dtype.str[1:]))
        values.append(value)
    table = np.empty(scene.n, dtype=np.dtype(fields))
    for (name, _), value in zip(fields, values, strict=True):
        table[name] = value
    write_ply(str(path), [("vertex", table)], fmt=fmt, comments=comments or ply_meta.get("comments", []),
              obj_info=ply_meta.get("obj_info", []))


# the scene-format registry loads this by entry point (group fieldpress.scene_formats)
FORMAT = SceneFormat(
    name="ply", suffixes=(".ply",), read=read, write=write, sniff=sniff, priority=0,
    description="INRIA 3DGS PLY (binary or ASCII, SH 0-3, extra properties kept)")

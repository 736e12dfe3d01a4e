"""PlayCanvas / SuperSplat compressed PLY: Gaussians in chunks of 256 with per-chunk float bounds
(`chunk` element: min/max x,y,z, log-scale and optionally r,g,b) and one packed `vertex` row each:
position 11/10/11 and log-scale 11/10/11 bits lerped in the chunk's box, rotation as 2-bit largest
index + 3x10-bit "smallest three" (in rot_0..rot_3 order), colour r,g,b (0.5 + C0*dc, lerped in the
chunk range) and sigmoid opacity as 8 bits each; an optional `sh` element stores f_rest as uchar
(value = (byte+0.5)/256 * 8 - 4). Layout as written by playcanvas/splat-transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldpress.errors import FormatError
from fieldpress.scenes.formats.ply_header import looks_like_ply, parse_header, read_ply
from fieldpress.scenes.formats.quat_pack import (
    largest_index,
    logit_u8,
    morton_order,
    normalized_quats,
    sigmoid,
)
from fieldpress.scenes.formats.registry import SceneFormat
from fieldpress.scenes.scene import SH_C0, GaussianScene, sh_degree_of

CHUNK = 256
CHUNK_PROPS = ("min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
               "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z")
COLOR_PROPS = ("min_r", "min_g", "min_b", "max_r", "max_g", "max_b")
VERTEX_PROPS = ("packed_position", "packed_rotation", "packed_scale", "packed_color")
SCALE_CLAMP = 20.0
SH_RANGE = 8.0  # f_rest bytes cover [-4, 4)


def sniff(head: bytes, path: Path) -> bool:
    if not looks_like_ply(head):
        return False
    try:
        text = head if b"end_header" in head else Path(path).read_bytes()[: 1 << 20]
        header = parse_header(text, str(path))
    except FormatError:
        return False
    vertex = header.element("vertex")
    return header.element("chunk") is not None and vertex is not None and "packed_position" in vertex.names


def _unorm(value: np.ndarray, shift: int, bits: int) -> np.ndarray:
    mask = (1 << bits) - 1
    return ((value >> np.uint32(shift)) & np.uint32(mask)).astype(np.float64) / mask


def _lerp(lo: np.ndarray, hi: np.ndarray, t: np.ndarray) -> np.ndarray:
    return lo.astype(np.float64) * (1 - t) + hi.astype(np.float64) * t


def read(path: Path) -> GaussianScene:
    data = Path(path).read_bytes()
    header, elements = read_ply(data, str(path))
    chunk_el, vertex_el, sh_el = header.element("chunk"), header.element("vertex"), header.element("sh")
    if chunk_el is None or vertex_el is None:
        raise FormatError(f"{path}: compressed PLY needs 'chunk' and 'vertex' elements")
    missing = [p for p in CHUNK_PROPS if p not in chunk_el.names] + \
              [p for p in VERTEX_PROPS if p not in vertex_el.names]
    if missing:
        raise FormatError(f"{path}: compressed PLY lacks properties {', '.join(missing)}")
    for prop in vertex_el.properties:
        if prop.name in VERTEX_PROPS and prop.dtype != "u4":
            raise FormatError(f"{path}: compressed PLY property {prop.name} must be uint")
    n = vertex_el.count
    if chunk_el.count != -(-n // CHUNK):
        raise FormatError(f"{path}: {chunk_el.count} chunks cannot hold {n} Gaussians in chunks of {CHUNK}")
    chunks, vertex = elements["chunk"], elements["vertex"]
    ci = np.arange(n) // CHUNK

    def c(name: str) -> np.ndarray:
        return chunks[name][ci]

    pos_bits = vertex["packed_position"].astype(np.uint32)
    scl_bits = vertex["packed_scale"].astype(np.uint32)
    col_bits = vertex["packed_color"].astype(np.uint32)
    rot_bits = vertex["packed_rotation"].astype(np.uint32)
    means = np.stack([_lerp(c("min_x"), c("max_x"), _unorm(pos_bits, 21, 11)),
                      _lerp(c("min_y"), c("max_y"), _unorm(pos_bits, 11, 10)),
                      _lerp(c("min_z"), c("max_z"), _unorm(pos_bits, 0, 11))], 1)
    scales = np.stack([_lerp(c("min_scale_x"), c("max_scale_x"), _unorm(scl_bits, 21, 11)),
                       _lerp(c("min_scale_y"), c("max_scale_y"), _unorm(scl_bits, 11, 10)),
                       _lerp(c("min_scale_z"), c("max_scale_z"), _unorm(scl_bits, 0, 11))], 1)
    rgb = np.stack([_unorm(col_bits, 24, 8), _unorm(col_bits, 16, 8), _unorm(col_bits, 8, 8)], 1)
    has_color = all(p in chunk_el.names for p in COLOR_PROPS)
    if has_color:
        rgb = np.stack([_lerp(c(f"min_{k}"), c(f"max_{k}"), rgb[:, i]) for i, k in enumerate("rgb")], 1)
    sh_dc = (rgb - 0.5) / SH_C0
    opacities = logit_u8((col_bits & np.uint32(0xFF)).astype(np.float64))
    quats = unpack_rotation(rot_bits)
    sh_rest = np.zeros((n, 0, 3), np.float32)
    if sh_el is not None:
        if sh_el.count != n:
            raise FormatError(f"{path}: sh element has {sh_el.count} rows for {n} Gaussians")
        names = [f"f_rest_{i}" for i in range(len(sh_el.names))]
        if sh_el.names != names or any(p.dtype != "u1" for p in sh_el.properties):
            raise FormatError(f"{path}: sh element must hold uchar f_rest_0..f_rest_{len(names) - 1}")
        if len(names) % 3:
            raise FormatError(f"{path}: sh element has {len(names)} coefficients, not a multiple of 3")
        k = len(names) // 3
        sh_degree_of(k)
        raw = np.stack([elements["sh"][name] for name in names], 1).astype(np.float64)
        t = np.where(raw == 0, 0.0, np.where(raw == 255, 1.0, (raw + 0.5) / 256))
        sh_rest = ((t - 0.5) * SH_RANGE).reshape(n, 3, k).transpose(0, 2, 1)
    comments = list(header.comments)
    return GaussianScene.from_arrays(means, scales, quats, opacities, sh_dc, np.ascontiguousarray(sh_rest),
                                     meta={"compressed_ply": {"comments": comments}})


def unpack_rotation(bits: np.ndarray) -> np.ndarray:
    """2+10+10+10 smallest-three to (N,4) unit quaternions in rot_0..rot_3 order."""
    norm = np.sqrt(2.0)
    a = (_unorm(bits, 20, 10) - 0.5) * norm
    b = (_unorm(bits, 10, 10) - 0.5) * norm
    c = (_unorm(bits, 0, 10) - 0.5) * norm
    m = np.sqrt(np.maximum(0.0, 1.0 - (a * a + b * b + c * c)))
    which = (bits >> np.uint32(30)).astype(np.int64)
    out = np.empty((len(bits), 4))
    rows = np.arange(len(bits))
    table = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[which]
    out[rows, which] = m
    out[rows, table[:, 0]] = a
    out[rows, table[:, 1]] = b
    out[rows, table[:, 2]] = c
    return out


def _pack_unorm(t: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def _normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = hi - lo
    t = np.where(span < 1e-5, 0.0, (x - lo) / np.where(span < 1e-5, 1.0, span))
    return np.where(x <= lo, 0.0, np.where(x >= hi, 1.0, t))


def _chunk_minmax(x: np.ndarray, ci: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(n_chunks) * CHUNK
    return np.minimum.reduceat(x, starts, axis=0), np.maximum.reduceat(x, starts, axis=0)


def write(scene: GaussianScene, path: Path, sort: bool = True) -> None:
    """Write the chunked layout (positions sorted along a Morton curve unless `sort=False`)."""
    s = scene.detach().to("cpu")
    n = s.n
    means = s.means.double().numpy()
    order = morton_order(means) if sort else np.arange(n)
    means = means[order].astype(np.float32).astype(np.float64)
    scales = s.scales.numpy()[order].astype(np.float64)
    color = (s.sh_dc.numpy()[order] * np.float32(SH_C0) + np.float32(0.5)).astype(np.float64)
    quats = normalized_quats(s.quats.numpy()[order])
    alpha = sigmoid(s.opacities.numpy()[order])
    n_chunks = -(-n // CHUNK)
    ci = np.arange(n) // CHUNK
    chunk_table = np.zeros(n_chunks, dtype=[(p, "<f4") for p in CHUNK_PROPS + COLOR_PROPS])
    vertex = np.zeros(n, dtype=[(p, "<u4") for p in VERTEX_PROPS])
    if n:
        pmin, pmax = _chunk_minmax(means, ci, n_chunks)
        smin, smax = _chunk_minmax(scales, ci, n_chunks)
        smin, smax = np.clip(smin, -SCALE_CLAMP, SCALE_CLAMP), np.clip(smax, -SCALE_CLAMP, SCALE_CLAMP)
        cmin, cmax = _chunk_minmax(color, ci, n_chunks)
        # the bounds are stored as float32: quantize against exactly those values
        pmin, pmax, smin, smax, cmin, cmax = (v.astype(np.float32).astype(np.float64)
                                              for v in (pmin, pmax, smin, smax, cmin, cmax))
        for i, axis in enumerate("xyz"):
            chunk_table[f"min_{axis}"], chunk_table[f"max_{axis}"] = pmin[:, i], pmax[:, i]
            chunk_table[f"min_scale_{axis}"], chunk_table[f"max_scale_{axis}"] = smin[:, i], smax[:, i]
        for i, ch in enumerate("rgb"):
            chunk_table[f"min_{ch}"], chunk_table[f"max_{ch}"] = cmin[:, i], cmax[:, i]
        tp = _normalize(means, pmin[ci], pmax[ci])
        ts = _normalize(scales, smin[ci], smax[ci])
        tc = _normalize(color, cmin[ci], cmax[ci])
        vertex["packed_position"] = (_pack_unorm(tp[:, 0], 11) << 21) | (_pack_unorm(tp[:, 1], 10) << 11) \
            | _pack_unorm(tp[:, 2], 11)
        vertex["packed_scale"] = (_pack_unorm(ts[:, 0], 11) << 21) | (_pack_unorm(ts[:, 1], 10) << 11) \
            | _pack_unorm(ts[:, 2], 11)
        vertex["packed_color"] = (_pack_unorm(tc[:, 0], 8) << 24) | (_pack_unorm(tc[:, 1], 8) << 16) \
            | (_pack_unorm(tc[:, 2], 8) << 8) | _pack_unorm(alpha, 8)
        vertex["packed_rotation"] = pack_rotation(quats)
    elements = [("chunk", chunk_table), ("vertex", vertex)]
    k = s.sh_rest.shape[1]
    if k:
        rest = s.sh_rest.numpy()[order].transpose(0, 2, 1).reshape(n, 3 * k).astype(np.float64)
        raw = np.clip(np.trunc((rest / SH_RANGE + 0.5) * 256), 0, 255).astype(np.uint8)
        sh_table = np.zeros(n, dtype=[(f"f_rest_{i}", "u1") for i in range(3 * k)])
        for i in range(3 * k):
            sh_table[f"f_rest_{i}"] = raw[:, i]
        elements.append(("sh", sh_table))
    from fieldpress.scenes.formats.ply_header import write_ply

    write_ply(str(path), elements, comments=["Generated by fieldpress"])


def pack_rotation(quats: np.ndarray) -> np.ndarray:
    """(N,4) unit quaternions -> 2-bit largest index + three 10-bit components (sign-normalised)."""
    q = np.array(quats, dtype=np.float64)
    largest = largest_index(q)
    rows = np.arange(len(q))
    q = np.where((q[rows, largest] < 0)[:, None], -q, q)
    table = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    out = largest.astype(np.uint32)
    half = np.sqrt(2.0) * 0.5
    for j in range(3):
        out = (out << np.uint32(10)) | _pack_unorm(q[rows, table[:, j]] * half + 0.5, 10)
    return out


# the scene-format registry loads this by entry point (group fieldpress.scene_formats)
FORMAT = SceneFormat(
    name="compressed-ply", suffixes=(".compressed.ply",), read=read, write=write, sniff=sniff, priority=10,
    description="PlayCanvas/SuperSplat compressed PLY (chunks of 256, 16 B/G + 1 B per SH coefficient)")

"""The `.fpg` scene container (kind "scene"): a GaussianScene coded LightGaussian-style.

Streams (all in Morton order of the quantized positions):
  pos/len, pos/bits      Morton-delta position code (see position.py)
  opacity                sigmoid opacity, per-tensor quantized
  scales                 log scales, per-channel quantized
  rot/axis, rot/q        normalised quaternion as smallest-three: index of the dropped component + 3 values
  dc                     SH DC, per-channel quantized (or inside the VecTree features when vq_dc)
  sh/keep, sh/kept, sh/index, sh/codebook   VecTree code of SH rest (and DC when vq_dc)
  extra/<name>           other per-Gaussian properties, losslessly
Integer streams go through the container's "auto" codec (ANS when it is smallest). Quantized
attributes are `QTensor`s (`fieldpress.codec.qtensor`, per column: axis 1) whose symbols are the stream
and whose scale / zero point sit in the JSON header (docs/formats/scene.md).

The header names the codec "lightgaussian" (files written before the codec registry say
"lightgaussian-vectree"; both decode the same way).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec.registry import Encoded, write_file
from fieldpress.errors import FormatError, InputError
from fieldpress.scenes.codecs import LIGHTGAUSSIAN
from fieldpress.scenes.lightgaussian.position import PositionGrid, decode_positions, encode_positions
from fieldpress.scenes.lightgaussian.vectree import VecTreeConfig, vectree_decode, vectree_encode

KIND = LIGHTGAUSSIAN.kind
CODEC_NAME = LIGHTGAUSSIAN.name
CODEC_NAMES = (LIGHTGAUSSIAN.name, *LIGHTGAUSSIAN.aliases)  # what headers may say
CODEC_VERSION = LIGHTGAUSSIAN.version
_MAX_GAUSSIANS = 1 << 28


@dataclass(frozen=True)
class CodecConfig:
    """Bits per attribute and the VecTree settings; serialised into the file header."""

    position_bits: int = 16
    opacity_bits: int = 8
    scale_bits: int = 8
    rotation_bits: int = 9
    dc_bits: int = 9
    vq_dc: bool = False  # put the DC colour into the VecTree features (LightGaussian does)
    vectree: VecTreeConfig = field(default_factory=VecTreeConfig)

    def validate(self) -> None:
        for name in ("opacity_bits", "scale_bits", "rotation_bits", "dc_bits"):
            bits = getattr(self, name)
            if not 2 <= bits <= 16:
                raise InputError(f"{name} must be in 2..16, got {bits}")
        self.vectree.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- quantization
def _quantize(x: np.ndarray, bits: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-column asymmetric quantization of (N, C) float data: the symbols and the header meta."""
    from fieldpress.codec.quant import quantize

    qt = quantize(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)), bits, axis=1)
    meta = {"bits": bits, "scale": [float(v) for v in qt.scale.flatten()],
            "zero_point": [float(v) for v in qt.zero_point.flatten()]}
    return qt.symbols(), meta


def _dequantize(q: np.ndarray, meta: dict[str, Any], columns: int) -> np.ndarray:
    """The (N, columns) float32 values of a stream `_quantize` wrote (FormatError on damage)."""
    from fieldpress.codec.qtensor import from_parts

    q = np.asarray(q)
    if q.ndim != 2 or q.shape[1] != columns:
        raise FormatError(f"quantized stream has shape {q.shape}, expected (N, {columns})")
    try:
        scale = np.asarray(meta["scale"], dtype=np.float32)
        zero_point = np.asarray(meta["zero_point"], dtype=np.float32)
        bits = int(meta["bits"])
    except (KeyError, TypeError, ValueError):
        raise FormatError("bad quantization parameters in header") from None
    if scale.shape != (columns,) or zero_point.shape != (columns,):
        raise FormatError("bad quantization parameters in header")
    qt = from_parts(q, scale, zero_point, bits=bits, axis=1, shape=tuple(q.shape))
    return qt.dequantize().numpy()


# ----------------------------------------------------------------------------- attribute transforms
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1.0 - 1e-7)
    return np.log(p / (1.0 - p)).astype(np.float32)


def smallest_three(quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised quaternions as (index of the largest |component| uint8, the other three (N, 3)).

    The sign is flipped so the dropped component is positive; it is rebuilt from unit length.
    """
    q = quats.astype(np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([[1.0, 0.0, 0.0, 0.0]]))
    axis = np.argmax(np.abs(q), axis=1)
    sign = np.where(q[np.arange(q.shape[0]), axis] < 0, -1.0, 1.0)
    q = q * sign[:, None]
    keep = np.ones_like(q, dtype=bool)
    keep[np.arange(q.shape[0]), axis] = False
    return axis.astype(np.uint8), q[keep].reshape(-1, 3).astype(np.float32)


def from_smallest_three(axis: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Inverse of :func:`smallest_three` (unit quaternions, wxyz)."""
    axis = np.asarray(axis).astype(np.int64)
    if axis.size and (axis.min() < 0 or axis.max() > 3):
        raise FormatError("rotation stream: component index out of range")
    n = axis.size
    rest = rest.astype(np.float64)
    largest = np.sqrt(np.clip(1.0 - (rest * rest).sum(axis=1), 0.0, 1.0))
    out = np.zeros((n, 4), np.float64)
    keep = np.ones((n, 4), dtype=bool)
    keep[np.arange(n), axis] = False
    out[keep] = rest.reshape(-1)
    out[np.arange(n), axis] = largest
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- encode
def encode_scene(scene: Any, significance: np.ndarray, config: CodecConfig,
                 device: torch.device | str = "cpu", source: dict[str, Any] | None = None) -> Encoded:
    """Quantize and code `scene` (a GaussianScene); `significance` (N,) ranks Gaussians for VecTree.
    The header gets the codec's name and version when written (`encode_file` / `write_fpg`)."""
    config.validate()
    scene = scene.detach().to("cpu")
    n = scene.n
    if n == 0:
        raise InputError("the scene has no Gaussians left to compress")
    scene.validate(finite=True)
    significance = np.asarray(significance, dtype=np.float64).reshape(-1)
    if significance.shape != (n,):
        raise InputError(f"significance has {significance.size} values for {n} Gaussians")

    pos = encode_positions(scene.means.numpy(), config.position_bits)
    order = pos.order
    s = scene.subset(torch.as_tensor(order))
    sig = significance[order]
    streams: dict[str, np.ndarray] = {"pos/len": pos.lengths, "pos/bits": pos.mantissa}
    header: dict[str, Any] = {
        "gaussians": n, "sh_degree": s.sh_degree,
        "antialiased": bool(s.antialiased), "config": config.to_dict(), "position": pos.grid.to_header(),
        "source": dict(source or {}),
    }
    streams["opacity"], header["opacity"] = _quantize(_sigmoid(s.opacities.numpy())[:, None],
                                                      config.opacity_bits)
    streams["scales"], header["scales"] = _quantize(s.scales.numpy(), config.scale_bits)
    axis, three = smallest_three(s.quats.numpy())
    streams["rot/axis"] = axis
    streams["rot/q"], header["rotation"] = _quantize(three, config.rotation_bits)

    dc = s.sh_dc.numpy()
    rest = s.sh_rest.numpy().reshape(n, -1)
    features = np.concatenate([dc, rest], axis=1) if config.vq_dc else rest
    if not config.vq_dc:
        streams["dc"], header["dc"] = _quantize(dc, config.dc_bits)
    if features.shape[1]:
        code = vectree_encode(features, sig, config.vectree, device=device)
        streams["sh/keep"] = code.keep_mask.astype(np.uint8)
        streams["sh/kept"] = code.kept
        streams["sh/index"] = code.index.astype(np.uint16 if code.codebook.shape[0] <= 65536 else np.uint32)
        streams["sh/codebook"] = code.codebook
        header["vectree"] = {"dims": int(features.shape[1]), "codebook": int(code.codebook.shape[0]),
                             "kept": int(code.keep_mask.sum())}
        if config.vectree.keep_bits and code.kept.shape[0]:  # the kept rows from float32, quantized
            streams["sh/kept"], header["vectree"]["kept_quant"] = _quantize(
                features[code.keep_mask], config.vectree.keep_bits)
    header["extras"] = {}
    for name, value in s.extras.items():
        streams[f"extra/{name}"] = np.ascontiguousarray(value)
        header["extras"][name] = str(value.dtype)
    if s.meta:
        header["scene_meta"] = json_safe_meta(s.meta)
    return Encoded(header, streams)


def json_safe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The scene metadata that survives JSON: scalars and short lists of numbers (e.g. the up axis)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, (bool, int, str)) or value is None:
            out[str(key)] = value
        elif isinstance(value, float) and np.isfinite(value):
            out[str(key)] = value
        elif isinstance(value, (list, tuple, np.ndarray)) and len(value) <= 16:
            values = np.asarray(value).reshape(-1)
            if values.dtype.kind in "biuf" and np.isfinite(values.astype(np.float64)).all():
                out[str(key)] = [float(v) for v in values]
    return out


# ----------------------------------------------------------------------------- decode
def header_section(header: dict[str, Any], key: str) -> dict[str, Any]:
    """A header section that must be an object when present ({} when absent or null)."""
    value = header.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FormatError(f"scene header {key!r} is a {type(value).__name__}, not an object")
    return value


def decode_extras_and_meta(header: dict[str, Any], get: Any, n: int) -> tuple[dict[str, np.ndarray],
                                                                               dict[str, Any]]:
    """The extra per-Gaussian properties (each checked against the header's dtype and the count `n`,
    read through `get(stream_name)`) and the scene metadata of a scene file's header."""
    extras = {}
    for name, dtype in header_section(header, "extras").items():
        value = get(f"extra/{name}")
        if value.shape[:1] != (n,) or str(value.dtype) != dtype:
            raise FormatError(f"extra property {name!r} does not match the header")
        extras[name] = value
    meta = dict(header_section(header, "scene_meta"))
    if header.get("antialiased"):
        meta["antialiased"] = True
    return extras, meta


def decode_streams(header: dict[str, Any], streams: Any) -> Any:
    """Rebuild the GaussianScene from the header and a mapping of stream name -> array (lazy ok).
    A header without codec keys is one `encode_scene` made and not yet written."""
    from fieldpress.scenes.scene import REST_COUNTS, GaussianScene

    if header.get("codec", CODEC_NAME) not in CODEC_NAMES:
        raise FormatError(f"unsupported scene codec {header.get('codec')!r}")
    if int(header.get("codec_version", -1)) > CODEC_VERSION:
        raise FormatError(f"scene codec version {header.get('codec_version')} is newer than this reader")
    try:
        n = int(header["gaussians"])
        degree = int(header["sh_degree"])
    except (KeyError, TypeError, ValueError):
        raise FormatError("scene header lacks gaussians / sh_degree") from None
    if not 0 < n <= _MAX_GAUSSIANS or degree not in REST_COUNTS:
        raise FormatError(f"scene header has a bad Gaussian count ({n}) or SH degree ({degree})")

    def get(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        try:
            value = np.asarray(streams[name])
        except KeyError:
            raise FormatError(f"scene stream {name!r} is missing") from None
        if shape is not None and tuple(value.shape) != shape:
            raise FormatError(f"scene stream {name!r} has shape {value.shape}, expected {shape}")
        return value

    grid = PositionGrid.from_header(header.get("position", {}))
    means = decode_positions(grid, get("pos/len", (n,)), get("pos/bits"))
    opacity = _logit(_dequantize(get("opacity", (n, 1)), header.get("opacity", {}), 1)[:, 0])
    scales = _dequantize(get("scales", (n, 3)), header.get("scales", {}), 3)
    quats = from_smallest_three(get("rot/axis", (n,)), _dequantize(get("rot/q", (n, 3)),
                                                                   header.get("rotation", {}), 3))
    k = REST_COUNTS[degree]
    vq_dc = bool(header_section(header, "config").get("vq_dc", False))
    dims = 3 * k + (3 if vq_dc else 0)
    features = np.zeros((n, dims), np.float32)
    if dims:
        meta = header.get("vectree")
        if not isinstance(meta, dict) or int(meta.get("dims", -1)) != dims:
            raise FormatError("scene header lacks a matching VecTree description")
        keep = get("sh/keep", (n,))
        if keep.size and keep.max() > 1:
            raise FormatError("VecTree keep mask is not 0/1")
        kept = get("sh/kept")
        if isinstance(meta.get("kept_quant"), dict):
            kept = _dequantize(kept, meta["kept_quant"], dims)
        elif kept.dtype != np.float16:
            raise FormatError("VecTree kept rows are neither float16 nor described as quantized")
        features = vectree_decode(keep.astype(bool), kept, get("sh/index").astype(np.int64),
                                  get("sh/codebook"))
        if features.shape != (n, dims):
            raise FormatError("VecTree features have the wrong shape")
    if vq_dc:
        dc, rest = features[:, :3], features[:, 3:]
    else:
        dc = _dequantize(get("dc", (n, 3)), header.get("dc", {}), 3)
        rest = features
    extras, meta = decode_extras_and_meta(header, get, n)
    return GaussianScene.from_arrays(means, scales, quats, opacity, dc, rest.reshape(n, k, 3),
                                     extras=extras, meta=meta)


# ----------------------------------------------------------------------------- files
def write_fpg(path: str | Path, encoded: Encoded) -> int:
    """Write the container atomically, its header stamped with the codec; returns its size in bytes."""
    return write_file(path, LIGHTGAUSSIAN, encoded)


class SceneDecoder:
    """The decoder `Container.decoder()` returns for a LightGaussian scene file."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.header = container.header

    @property
    def gaussians(self) -> int:
        return int(self.header.get("gaussians", 0))

    @property
    def sh_degree(self) -> int:
        return int(self.header.get("sh_degree", 0))

    def scene(self) -> Any:
        """Decode every stream (CRC-checked) into a GaussianScene."""
        return decode_streams(self.header, _LazyStreams(self.container))


class _LazyStreams:
    def __init__(self, container: Any) -> None:
        self.container = container
        self.names = set(container.names)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(name)
        return self.container.array(name)


class LightGaussianCodecImpl:
    """The heavy half of the LightGaussian codec (its light half: `fieldpress.scenes.codecs`)."""

    def encode(self, scene: Any, significance: np.ndarray, config: CodecConfig,
               device: torch.device | str = "cpu", source: dict[str, Any] | None = None) -> Encoded:
        return encode_scene(scene, significance, config, device=device, source=source)

    def decode(self, container: Any, **options: Any) -> SceneDecoder:
        return SceneDecoder(container)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): decode every attribute into a scene."""
        if container.kind != KIND:
            raise FormatError(f"a fieldpress {container.kind!r} container, not a scene (.fpg)")
        SceneDecoder(container).scene().validate()


LIGHTGAUSSIAN_CODEC = LightGaussianCodecImpl()


def read_fpg(path: str | Path | bytes) -> Any:
    """Open and decode a `.fpg` file (a path or its bytes) into a GaussianScene with the scene codec
    its header names (FormatError on damage)."""
    from fieldpress.codec.container import open_container

    container = open_container(path)
    if container.kind != KIND:
        raise FormatError(f"{path}: a fieldpress {container.kind!r} container, not a scene (.fpg)")
    return container.decoder().scene()

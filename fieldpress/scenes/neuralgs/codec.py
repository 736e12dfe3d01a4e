"""The NeuralGS `.fpg` layout (kind "scene", codec "neuralgs"): positions, cluster labels, MLPs.

Streams (Gaussians in Morton order of their quantized positions, as the LightGaussian codec writes):
  pos/len, pos/bits   Morton-delta position code (`fieldpress.scenes.lightgaussian.position`)
  labels              cluster of each Gaussian (uint8/uint16, the container's ANS or zstd)
  mlp/words           every integer MLP weight, range-coded under per-(tensor, cluster) Laplace tables
  mlp/rows            those table rows (int16, tensor by tensor, cluster by cluster)
  extra/<name>        other per-Gaussian properties, losslessly
The header holds the field config, each tensor's step (2**-shift), the per-attribute normalisation
(mean, std) and the stream bytes of each part (the rate split). Decoding runs each cluster's MLP on
its positions (float64) and maps the outputs back to opacity, scales, rotation and SH.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec import entropy, entropy_models
from fieldpress.codec.entropy_models import N_TABLES, FactorizedLaplace
from fieldpress.codec.registry import Encoded, write_file
from fieldpress.errors import FormatError, InputError
from fieldpress.scenes.lightgaussian.codec import (
    SceneDecoder,
    decode_extras_and_meta,
    header_section,
    json_safe_meta,
)
from fieldpress.scenes.lightgaussian.position import PositionGrid, decode_positions, encode_positions
from fieldpress.scenes.neuralgs.declaration import NEURALGS
from fieldpress.scenes.neuralgs.model import (
    ClusterFields,
    FieldConfig,
    decode_attributes,
    tensor_names,
    tensor_shape,
)

KIND, CODEC_NAME, CODEC_VERSION = NEURALGS.kind, NEURALGS.name, NEURALGS.version
MAX_GAUSSIANS = 1 << 28
POSITION_BITS = 16
MAX_WEIGHTS = 1 << 22  # decoded MLP weights a file may declare (32 MiB as int64)


# ----------------------------------------------------------------------------- attributes
def attribute_dims(sh_degree: int) -> int:
    """1 opacity + 3 scales + 4 quaternion + 3 DC + the SH rest coefficients."""
    from fieldpress.scenes.scene import REST_COUNTS

    return 11 + 3 * REST_COUNTS[sh_degree]


def scene_attributes(scene: Any) -> np.ndarray:
    """(N, D) float32: opacity logit, log scales, unit quaternion (w >= 0), DC, SH rest."""
    q = scene.quats.detach().cpu().double()
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[:, :1] < 0, -q, q)
    parts = [scene.opacities.detach().cpu()[:, None].double(), scene.scales.detach().cpu().double(), q,
             scene.sh_dc.detach().cpu().double(), scene.sh_rest.detach().cpu().double().reshape(scene.n, -1)]
    return torch.cat(parts, dim=1).numpy().astype(np.float32)


def split_attributes(attrs: Any) -> dict[str, Any]:
    """The named attribute columns of (N, D) attributes (numpy or torch), quaternions normalised."""
    n = attrs.shape[0]
    quats = attrs[:, 4:8]
    if isinstance(quats, torch.Tensor):
        quats = quats / quats.norm(dim=1, keepdim=True).clamp_min(1e-8)
    else:
        quats = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-8)
    return {"opacities": attrs[:, 0], "scales": attrs[:, 1:4], "quats": quats, "sh_dc": attrs[:, 8:11],
            "sh_rest": attrs[:, 11:].reshape(n, -1, 3)}


def unit_positions(means: Any, grid: PositionGrid) -> Any:
    """Positions mapped to [-1, 1] over the position grid's box (the MLPs' input)."""
    extent = (1 << grid.bits) - 1
    origin = np.asarray(grid.origin, np.float64)
    size = np.asarray(grid.step, np.float64) * extent
    if isinstance(means, torch.Tensor):
        o = torch.as_tensor(origin, dtype=means.dtype)
        s = torch.as_tensor(size, dtype=means.dtype)
        return (means - o) / s * 2.0 - 1.0
    return (np.asarray(means, np.float64) - origin) / size * 2.0 - 1.0


# ----------------------------------------------------------------------------- MLP weights
def encode_weights(fields: ClusterFields) -> tuple[np.ndarray, np.ndarray]:
    """(range-coder words, table rows) of every integer weight, tensor by tensor."""
    enc = entropy_models.new_encoder()
    ints = fields.quantized()
    rows = []
    for name in tensor_names(fields.config):
        rows.append(fields.rate_models[name].encode(enc, ints[name]))
    return entropy_models.finish(enc), np.concatenate(rows).astype(np.int16)


def decode_weights(words: np.ndarray, rows: np.ndarray, config: FieldConfig) -> dict[str, np.ndarray]:
    """The integer weights `encode_weights` wrote (FormatError on damage)."""
    names = tensor_names(config)
    rows = np.asarray(rows).astype(np.int64).reshape(-1)
    bad = rows.size and (rows.min() < 0 or rows.max() >= N_TABLES)
    if rows.size != len(names) * config.clusters or bad:
        raise FormatError("neuralgs MLP table rows do not match the field config")
    dec = entropy_models.new_decoder(np.asarray(words).reshape(-1))
    out = {}
    for i, name in enumerate(names):
        r = rows[i * config.clusters:(i + 1) * config.clusters]
        out[name] = FactorizedLaplace.decode(dec, tensor_shape(config, name), r)
    return out


def _shifts(header: dict[str, Any], config: FieldConfig) -> dict[str, int]:
    shifts = header_section(header, "shifts")
    try:
        out = {name: int(shifts[name]) for name in tensor_names(config)}
    except (KeyError, TypeError, ValueError):
        raise FormatError("neuralgs header lacks the weight steps") from None
    if any(not 0 <= s <= 24 for s in out.values()):
        raise FormatError("neuralgs weight step out of range")
    return out


def _norm(header: dict[str, Any], dims: int) -> tuple[np.ndarray, np.ndarray]:
    norm = header_section(header, "norm")
    try:
        mean = np.asarray(norm["mean"], np.float64)
        std = np.asarray(norm["std"], np.float64)
    except (KeyError, TypeError, ValueError):
        raise FormatError("neuralgs header lacks the attribute normalisation") from None
    finite = np.isfinite(mean).all() and np.isfinite(std).all()
    if mean.shape != (dims,) or std.shape != (dims,) or not finite:
        raise FormatError("neuralgs attribute normalisation does not match the SH degree")
    return mean, std


# ----------------------------------------------------------------------------- encode
def encode_neuralgs(means: np.ndarray, grid_bits: int, labels: np.ndarray, fields: ClusterFields,
                    norm: tuple[np.ndarray, np.ndarray], sh_degree: int, extras: dict[str, np.ndarray],
                    meta: dict[str, Any], source: dict[str, Any] | None = None) -> Encoded:
    """Header + streams of positions (N, 3), their cluster labels (N,) and the trained fields."""
    n = means.shape[0]
    if n == 0:
        raise InputError("the scene has no Gaussians left to compress")
    config = fields.config
    pos = encode_positions(means, grid_bits)
    order = pos.order
    words, rows = encode_weights(fields)
    label_dtype = np.uint8 if config.clusters <= 256 else np.uint16
    streams: dict[str, np.ndarray] = {"pos/len": pos.lengths, "pos/bits": pos.mantissa,
                                      "labels": labels[order].astype(label_dtype),
                                      "mlp/words": words, "mlp/rows": rows}
    header: dict[str, Any] = {
        "gaussians": n, "sh_degree": sh_degree, "antialiased": bool(meta.get("antialiased", False)),
        "position": pos.grid.to_header(), "field": config.to_dict(), "shifts": dict(fields.shifts),
        "norm": {"mean": [float(v) for v in norm[0]], "std": [float(v) for v in norm[1]]},
        "source": dict(source or {}), "extras": {}}
    for name, value in extras.items():
        streams[f"extra/{name}"] = np.ascontiguousarray(np.asarray(value)[order])
        header["extras"][name] = str(value.dtype)
    if meta:
        header["scene_meta"] = json_safe_meta(meta)

    def size(names: list[str]) -> int:
        return sum(len(entropy.encode_best(streams[k])[1]) for k in names)

    header["rate"] = {"positions": size(["pos/len", "pos/bits"]), "labels": size(["labels"]),
                      "mlps": size(["mlp/words", "mlp/rows"])}
    return Encoded(header, streams)


# ----------------------------------------------------------------------------- decode
def decode_streams(header: dict[str, Any], streams: Any, run: bool = True) -> Any:
    """Rebuild the GaussianScene from a neuralgs header and its streams (FormatError on damage);
    `run=False` checks and decodes everything but runs no MLP (returns None)."""
    from fieldpress.scenes.scene import REST_COUNTS, GaussianScene

    if header.get("codec", CODEC_NAME) != CODEC_NAME:
        raise FormatError(f"not a neuralgs scene (codec {header.get('codec')!r})")
    if int(header.get("codec_version", CODEC_VERSION)) > CODEC_VERSION:
        raise FormatError(f"neuralgs version {header.get('codec_version')} is newer than this reader")
    try:
        n, degree = int(header["gaussians"]), int(header["sh_degree"])
    except (KeyError, TypeError, ValueError):
        raise FormatError("scene header lacks gaussians / sh_degree") from None
    if not 0 < n <= MAX_GAUSSIANS or degree not in REST_COUNTS:
        raise FormatError(f"scene header has a bad Gaussian count ({n}) or SH degree ({degree})")
    config = FieldConfig.from_dict(header.get("field"))
    if config.clusters * config.params_per_cluster() > MAX_WEIGHTS:
        raise FormatError("neuralgs field config declares more weights than a file may hold")
    dims = attribute_dims(degree)
    if config.out_dims != dims:
        raise FormatError("neuralgs field outputs do not match the SH degree")

    def get(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        try:
            value = np.asarray(streams[name])
        except KeyError:
            raise FormatError(f"scene stream {name!r} is missing") from None
        if shape is not None and tuple(value.shape) != shape:
            raise FormatError(f"scene stream {name!r} has shape {value.shape}, expected {shape}")
        return value

    grid = PositionGrid.from_header(header_section(header, "position"))
    means = decode_positions(grid, get("pos/len", (n,)), get("pos/bits"))
    labels = get("labels", (n,))
    if labels.dtype.kind not in "ui" or (labels.size and labels.max() >= config.clusters):
        raise FormatError("neuralgs cluster label out of range")
    ints = decode_weights(get("mlp/words"), get("mlp/rows"), config)
    mean, std = _norm(header, dims)
    shifts = _shifts(header, config)
    if not run:
        return None
    out = decode_attributes(unit_positions(means, grid), labels, ints, shifts, config)
    attrs = (out.astype(np.float64) * std + mean).astype(np.float32)
    if not np.isfinite(attrs).all():
        raise FormatError("neuralgs attributes decode to non-finite values")
    a = split_attributes(attrs)
    extras, meta = decode_extras_and_meta(header, get, n)
    return GaussianScene.from_arrays(means, a["scales"], a["quats"], a["opacities"], a["sh_dc"],
                                     a["sh_rest"], extras=extras, meta=meta)


class NeuralGSDecoder(SceneDecoder):
    """The decoder `Container.decoder()` returns for a NeuralGS scene file (LightGaussian's, with the
    MLPs run to decode)."""

    def scene(self) -> Any:
        """Decode positions and MLP weights, run the MLPs: a GaussianScene."""
        c = self.container
        return decode_streams(self.header, {name: c.array(name) for name in c.names})


class NeuralGSCodecImpl:
    """The heavy half of the NeuralGS codec (its light half: `fieldpress.scenes.neuralgs.declaration`)."""

    def encode(self, *args: Any, **kwargs: Any) -> Encoded:
        return encode_neuralgs(*args, **kwargs)

    def decode(self, container: Any, **options: Any) -> NeuralGSDecoder:
        return NeuralGSDecoder(container)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): positions, labels and every MLP weight decoded
        and checked against the header, without running the MLPs."""
        if container.kind != KIND:
            raise FormatError(f"a fieldpress {container.kind!r} container, not a scene (.fpg)")
        c = container
        decode_streams(c.header, {name: c.array(name) for name in c.names}, run=False)


CODEC = NeuralGSCodecImpl()


def write_neuralgs(path: str | Path, encoded: Encoded) -> int:
    """Write the container atomically, header stamped with the codec; returns its size in bytes."""
    return write_file(path, NEURALGS, encoded)

"""The ``.fpv`` file: a fitted video INR, quantized and entropy-coded into one container (kind
"video"), and the decoder that turns it back into frames with random access.

Header: the codec's name and version, model name and config (which fixes the original size, strides
and padding), frame count, first source frame, fps, source description, the weights' quantization
meta, and ``side_info``: per side-information tensor of the model (HNeRV: ``embedding``) its
quantization meta and chunking. Streams: the weights (``w/...``, from ``compress_state_dict``) and per
side-information tensor NAME the symbols of each chunk (``NAME/000000`` ...) and the shared
``NAME/scale`` / ``NAME/zero_point``, so decoding frames S:E reads and decodes only the chunks they
touch. Frames are always decoded one at a time, so a frame decodes to the same bits alone or in a run.
``docs/formats/video.md`` is the full description, with codec version 1's layout (read here too).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress import __version__
from fieldpress.codec.qtensor import QTensor, from_parts, stream
from fieldpress.codec.registry import Encoded
from fieldpress.errors import FormatError, InputError
from fieldpress.video.codecs import PLAIN_VERSION
from fieldpress.video.data import to_uint8
from fieldpress.video.models import VideoINR, build_model, load_config
from fieldpress.video.models.base import SideInfo
from fieldpress.video.models.hnerv import EMBED_CHUNK
from fieldpress.video.rd import RdChunkedView, decode_rd_weights, is_rd_meta

KIND = "video"
FORMAT = "fieldpress-video/1"
__all__ = ["EMBED_CHUNK", "FORMAT", "KIND", "VIDEO_CODEC", "ChunkedView", "StoredSide", "VideoDecoder",
           "open_video", "quantize_side", "read_side_info"]


# ----------------------------------------------------------------------------- side information
@dataclass(frozen=True)
class StoredSide:
    """A side-information tensor as the file holds it: quantized, and its chunking."""

    q: QTensor
    chunk: int
    chunk_axis: int = 0

    def to_streams(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Streams ``name/000000`` ... (the symbols of each chunk) and ``name/scale`` /
        ``name/zero_point`` (whole tensor), and the header meta (QTensor meta + chunk, chunk_axis)."""
        if self.q.mask is not None:
            raise ValueError("side information is stored dense (no mask)")
        streams, meta = self.q.to_streams(f"{name}/")
        symbols = streams.pop(f"{name}/q")
        n = symbols.shape[self.chunk_axis]
        for i in range(math.ceil(n / self.chunk)):
            part = np.take(symbols, range(i * self.chunk, min((i + 1) * self.chunk, n)), axis=self.chunk_axis)
            streams[f"{name}/{i:06d}"] = np.ascontiguousarray(part)
        return streams, {**meta, "chunk": self.chunk, "chunk_axis": self.chunk_axis}


def quantize_side(info: SideInfo) -> StoredSide:
    """Quantize a model's side information (`SideInfo`) for storing."""
    from fieldpress.codec.quant import quantize

    return StoredSide(quantize(info.tensor.detach().float().cpu(), info.bits, info.axis), int(info.chunk),
                      int(info.chunk_axis))


class ChunkedView:
    """A `SideView` reading a stored side-information tensor from a container chunk by chunk (the
    last chunk read is kept). `chunk_name(i)` names chunk i's symbol stream; `scale` / `zero_point`
    are the whole tensor's (one value, or one per channel along the quantization axis)."""

    def __init__(self, container: Any, meta: Mapping[str, Any], chunk_name: Any, scale: np.ndarray,
                 zero_point: np.ndarray | None) -> None:
        try:
            self.shape = tuple(int(d) for d in meta["shape"])
            self.bits, self.chunk = int(meta["bits"]), int(meta["chunk"])
            self.chunk_axis = int(meta.get("chunk_axis", 0))
            self.axis = None if meta.get("axis") is None else int(meta["axis"])
            self.symmetric = bool(meta.get("symmetric", False))
        except (KeyError, TypeError, ValueError):
            raise FormatError("malformed side-information meta in the header") from None
        if self.chunk < 1 or not 0 <= self.chunk_axis < len(self.shape):
            raise FormatError(f"bad side-information chunking {self.chunk} along axis {self.chunk_axis}")
        self.container, self.chunk_name = container, chunk_name
        self.scale, self.zero_point = scale, zero_point
        self._cache: dict[int, torch.Tensor] = {}

    def _load(self, c: int) -> torch.Tensor:
        name = self.chunk_name(c)
        if name not in self.container:
            raise FormatError(f"side-information stream {name} is missing")
        lo, hi = c * self.chunk, min((c + 1) * self.chunk, self.shape[self.chunk_axis])
        shape = list(self.shape)
        shape[self.chunk_axis] = hi - lo
        scale, zp = self.scale, self.zero_point
        if self.axis == self.chunk_axis:  # per-entry scales: this chunk's
            scale, zp = scale.reshape(-1)[lo:hi], None if zp is None else zp.reshape(-1)[lo:hi]
        return from_parts(self.container.array(name), scale, zp, bits=self.bits, axis=self.axis,
                          shape=tuple(shape), symmetric=self.symmetric).dequantize()

    def check(self) -> None:
        """Decode every chunk once (deep validation): symbols, ranges and shapes (FormatError)."""
        for c in range(math.ceil(self.shape[self.chunk_axis] / self.chunk)):
            self._load(c)

    def entry(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.shape[self.chunk_axis]:
            raise InputError(f"side information has no entry {index}")
        c = index // self.chunk
        if c not in self._cache:
            self._cache = {c: self._load(c)}
        return self._cache[c].select(self.chunk_axis, index - c * self.chunk)


def read_side_info(container: Any) -> tuple[dict[str, ChunkedView], tuple[str, ...]]:
    """A container's side information as lazy views (name -> `ChunkedView`), and the stream prefixes
    it owns (every other stream holds weights)."""
    header = container.header
    if "embed" in header and "side_info" not in header:  # codec version 1: HNeRV's embeddings
        meta = header["embed"]
        if not isinstance(meta, dict):
            raise FormatError("malformed side-information meta in the header")
        view = ChunkedView(container, {**meta, "axis": None}, lambda i: f"e/{i:06d}",
                           np.array([meta.get("scale")], np.float32),
                           np.array([meta.get("zero_point")], np.float32))
        return {"embedding": view}, ("e/",)
    views: dict[str, Any] = {}
    side = header.get("side_info") or {}
    if not isinstance(side, dict) or not all(isinstance(m, dict) for m in side.values()):
        raise FormatError("malformed side-information meta in the header")
    for name, meta in side.items():
        if is_rd_meta(meta):  # version 3: range-coded under Laplace tables
            views[name] = RdChunkedView(container, name, meta, _side_channels(container, name))
            continue
        symmetric = bool(meta.get("symmetric", False))
        views[name] = ChunkedView(container, meta, lambda i, n=name: f"{n}/{i:06d}",
                                  stream(container, f"{name}/scale"),
                                  None if symmetric else stream(container, f"{name}/zero_point"))
    return views, tuple(f"{n}/" for n in views)


def _side_channels(container: Any, name: str) -> int:
    """Channels of side information `name` for the header's model (FormatError when it has none)."""
    header = container.header
    try:
        with torch.device("meta"):
            probe = build_model(str(header["model"]), load_config(str(header["model"]), header["config"]))
        return int(probe.side_channels()[name])
    except (KeyError, TypeError, ValueError, RuntimeError, ZeroDivisionError, OverflowError, IndexError):
        raise FormatError(f"the header's model stores no side information {name!r}") from None


# ----------------------------------------------------------------------------- reading
MAX_DECODE_PARAMS = 1 << 28  # parameters and buffers a header's model may have (1 GiB of float32)


def _meta_model(name: str, config: Any) -> Any:
    """The header's model built on the meta device (no memory); FormatError when it cannot be built."""
    try:
        with torch.device("meta"):
            return build_model(name, config)
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError, OverflowError, IndexError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FormatError(f"the header's {name} model cannot be built ({first})") from None


def _check_buildable(name: str, config: Any, state: Mapping[str, torch.Tensor]) -> None:
    """Build the header's model on the meta device first (no memory) and compare it with the stored
    weights: FormatError when it cannot be built, would hold more than MAX_DECODE_PARAMS values, or
    its weights differ from the file's in name or shape, before anything real is allocated."""
    probe = _meta_model(name, config)
    size = sum(t.numel() for t in probe.parameters()) + sum(t.numel() for t in probe.buffers())
    if size > MAX_DECODE_PARAMS:
        raise FormatError(f"the header's {name} model has {size:,} values, "
                          f"over the {MAX_DECODE_PARAMS:,} limit")
    expected = {k: tuple(v.shape) for k, v in probe.stored_state().items()}
    stored = {k: tuple(v.shape) for k, v in state.items()}
    if expected != stored:
        wrong = sorted(set(expected) ^ set(stored)) or [k for k in expected if expected[k] != stored[k]]
        raise FormatError(f"weights do not match the {name} model in the header "
                          f"(first difference: {wrong[0]})")


def _expected_shapes(name: str, config: Any) -> dict[str, tuple[int, ...]]:
    """The stored tensors' shapes of the header's model (built on the meta device: no memory)."""
    probe = _meta_model(name, config)
    return {k: tuple(v.shape) for k, v in probe.stored_state().items() if v.is_floating_point()}


class VideoDecoder:
    """Decodes frames of an opened ``.fpv`` container: ``decode(start, end)`` -> uint8 (N, H, W, 3).

    Only the weights and the side-information chunks that the asked frames touch are read and decoded.
    """

    def __init__(self, container: Any, device: str | torch.device = "cpu") -> None:
        if container.kind != KIND:
            raise FormatError(f"this is a fieldpress {container.kind!r} file, not a video (.fpv)")
        header = container.header
        try:
            self.name = str(header["model"])
            self.config = load_config(self.name, header["config"])
            self.frames = int(header["frames"])
            self.fps = float(header["fps"])
            self.frame_start = int(header.get("frame_start", 0))
            weight_meta = header["weights"]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"video header is incomplete or damaged ({exc})") from None
        self.container = container
        self.header = header
        self.device = torch.device(device)
        self.model = self._load_model(weight_meta)

    @property
    def width(self) -> int:
        return int(self.config.width)

    @property
    def height(self) -> int:
        return int(self.config.height)

    def _load_model(self, weight_meta: dict) -> VideoINR:
        from fieldpress.codec.quant import decompress_state_dict

        views, side_prefixes = read_side_info(self.container)
        if is_rd_meta(weight_meta):  # version 3: shapes checked against the model before decoding
            state = decode_rd_weights(self.container, weight_meta, _expected_shapes(self.name, self.config))
        else:
            names = [n for n in self.container.names if not n.startswith(side_prefixes)]
            state = decompress_state_dict({n: self.container.array(n) for n in names}, weight_meta)
        _check_buildable(self.name, self.config, state)
        model = build_model(self.name, self.config)
        try:
            model.attach_side_info(views)
        except ValueError as exc:
            raise FormatError(str(exc)) from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise FormatError(f"weights do not match the {self.name} model in the header "
                              f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
        return model.to(self.device).eval()

    def _batch(self, index: int) -> dict[str, torch.Tensor]:
        idx = torch.tensor([index], dtype=torch.int64)
        batch = {"index": idx.to(self.device), "t": (idx.float() / float(self.config.frames)).to(self.device)}
        return {**batch, **self.model.decode_inputs(index)}

    @torch.no_grad()
    def iter_frames(self, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
        """Frames start..end-1 (indices into this file's frames), one uint8 (H, W, 3) at a time."""
        end = self.frames if end is None else end
        if not 0 <= start < end <= self.frames:
            raise InputError(f"--frames {start}:{end} is outside this file's {self.frames} frames")
        for i in range(start, end):
            out = self.model(self._batch(i))
            yield to_uint8(out[0]).permute(1, 2, 0).cpu().numpy()

    def decode(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Frames start..end-1 as one uint8 array (N, H, W, 3)."""
        return np.stack(list(self.iter_frames(start, end)))


def open_video(path: str | Path | bytes, device: str | torch.device = "cpu") -> VideoDecoder:
    """Open a ``.fpv`` file (a path or its bytes) for decoding (FormatError when it is not a
    fieldpress video)."""
    from fieldpress.codec.container import open_container
    from fieldpress.codec.registry import codec_for

    container = open_container(path)
    if container.kind != KIND:
        raise FormatError(f"this is a fieldpress {container.kind!r} file, not a video (.fpv)")
    # the codec the header names decodes it: the weight codecs below give a VideoDecoder, other video
    # codecs (registered by entry point) an object with the same frames/fps/width/height/decode()
    return codec_for(KIND, container.header).decode(container, device=device)


# ----------------------------------------------------------------------------- the codec
class VideoCodecImpl:
    """The heavy half of the video codecs (fieldpress.video.codecs): encode a quantized model to a
    header and streams, decode a container to frames."""

    def encode(self, model: VideoINR, weight_streams: Mapping[str, np.ndarray], weight_meta: dict, *,
               fps: float, frame_start: int, source: dict, side: Mapping[str, StoredSide] | None = None,
               extra: dict | None = None, rd_side: Mapping[str, dict] | None = None) -> Encoded:
        """The header and streams of a fitted model whose weights are already quantized
        (`compress_state_dict`, or range-coded by `fieldpress.video.rd.encode_rd`, whose side-information
        meta comes as `rd_side` with its streams among `weight_streams`) and whose side information is
        `side` (name -> `StoredSide`)."""
        cfg = model.config
        header: dict[str, Any] = {
            "format": FORMAT,
            "model": model.name,
            "config": cfg.to_dict(),
            "width": cfg.width, "height": cfg.height, "frames": cfg.frames,
            "frame_start": int(frame_start), "fps": float(fps),
            "colour": "rgb24 (sRGB, full range)",
            "source": source,
            "weights": weight_meta,
            "library": f"fieldpress {__version__}",
        }
        streams: dict[str, np.ndarray] = dict(weight_streams)
        if side:
            header["side_info"] = {}
            for name, stored in side.items():
                if not name or "/" in name or name == "w":
                    raise ValueError(f"bad side-information name {name!r}")
                parts, header["side_info"][name] = stored.to_streams(name)
                streams.update(parts)
        if rd_side:
            header["side_info"] = {name: dict(meta) for name, meta in rd_side.items()}
        if extra:
            header.update(extra)
        # files without a trained rate keep version 2's layout and say so (older readers read them)
        return Encoded(header, streams, version=None if is_rd_meta(weight_meta) else PLAIN_VERSION)

    def decode(self, container: Any, device: str | torch.device = "cpu") -> VideoDecoder:
        return VideoDecoder(container, device=device)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): load the weights into the network the header
        names and decode every side-information chunk; no frame is run."""
        VideoDecoder(container)
        for view in read_side_info(container)[0].values():
            view.check()


VIDEO_CODEC = VideoCodecImpl()

"""The ``.fpv`` file: a fitted video INR, quantized and entropy-coded into one container (kind
"video"), and the decoder that turns it back into frames with random access.

Header: model name and config (which fixes the original size, strides and padding), frame count,
first source frame, fps, source description, the weights' quantization meta, and, for HNeRV, the
embeddings' quantization (per tensor, ``embed_bits``) and chunking. Streams: the weights
(``w/...``, from ``compress_state_dict``) and the HNeRV embeddings in chunks of ``EMBED_CHUNK``
frames (``e/000000`` ...), so decoding frames S:E reads and decodes only the chunks they touch.
Frames are always decoded one at a time, so a frame decodes to the same bits alone or in a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress import __version__
from fieldpress.errors import FormatError, InputError
from fieldpress.video.data import to_uint8
from fieldpress.video.models import VideoINR, build_model, load_config

KIND = "video"
EMBED_CHUNK = 8
FORMAT = "fieldpress-video/1"


# ----------------------------------------------------------------------------- embeddings
@dataclass(frozen=True)
class EmbedQuant:
    """Per-tensor affine quantization of the HNeRV embeddings (the core's one formula)."""

    bits: int
    scale: float
    zero_point: float
    qmin: int
    qmax: int

    def to_dict(self) -> dict[str, Any]:
        return {"bits": self.bits, "scale": self.scale, "zero_point": self.zero_point,
                "qmin": self.qmin, "qmax": self.qmax}


def quantize_embeddings(embed: torch.Tensor, bits: int) -> tuple[np.ndarray, EmbedQuant, torch.Tensor]:
    """(integer codes, their quantization, the dequantized float32 embeddings) for (T, C, h, w)."""
    from fieldpress.codec.quant import quant_params

    x = embed.detach().float().cpu()
    scale, zero_point, qmin, qmax = quant_params(x, bits, None)
    scale = scale.float().reshape(())
    zero_point = zero_point.float().reshape(())
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    dtype = np.uint8 if qmax <= 255 and qmin >= 0 else np.int32
    meta = EmbedQuant(int(bits), float(scale), float(zero_point), int(qmin), int(qmax))
    return q.numpy().astype(dtype), meta, dequantize_embeddings(q.numpy(), meta)


def dequantize_embeddings(q: np.ndarray, meta: EmbedQuant) -> torch.Tensor:
    scale = torch.tensor(meta.scale, dtype=torch.float32)
    zero_point = torch.tensor(meta.zero_point, dtype=torch.float32)
    return (torch.from_numpy(np.asarray(q, dtype=np.float32)) - zero_point) * scale


def _chunk_name(i: int) -> str:
    return f"e/{i:06d}"


# ----------------------------------------------------------------------------- writing
def write_fpv(path: str | Path, model: VideoINR, weight_streams: dict[str, np.ndarray], weight_meta: dict,
              *, fps: float, frame_start: int, source: dict, embed_codes: np.ndarray | None = None,
              embed_quant: EmbedQuant | None = None, extra: dict | None = None) -> int:
    """Write the container; returns its size in bytes."""
    from fieldpress.codec.container import write_container

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
    if embed_codes is not None and embed_quant is not None:
        header["embed"] = {**embed_quant.to_dict(), "chunk": EMBED_CHUNK, "shape": list(embed_codes.shape)}
        for i in range(math.ceil(embed_codes.shape[0] / EMBED_CHUNK)):
            streams[_chunk_name(i)] = np.ascontiguousarray(embed_codes[i * EMBED_CHUNK:(i + 1) * EMBED_CHUNK])
    if extra:
        header.update(extra)
    return int(write_container(path, KIND, header, streams))


# ----------------------------------------------------------------------------- reading
class VideoDecoder:
    """Decodes frames of an opened ``.fpv`` container: ``decode(start, end)`` -> uint8 (N, H, W, 3).

    Only the weights and the embedding chunks that the asked frames touch are read and decoded.
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
        self._embed_meta = header.get("embed")
        self._embed_cache: dict[int, torch.Tensor] = {}

    @property
    def width(self) -> int:
        return int(self.config.width)

    @property
    def height(self) -> int:
        return int(self.config.height)

    def _load_model(self, weight_meta: dict) -> VideoINR:
        from fieldpress.codec.quant import decompress_state_dict

        names = [n for n in self.container.names if not n.startswith("e/")]
        streams = {n: self.container.array(n) for n in names}
        state = decompress_state_dict(streams, weight_meta)
        model = build_model(self.name, self.config)
        if hasattr(model, "encoder"):
            model.encoder = None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise FormatError(f"weights do not match the {self.name} model in the header "
                              f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
        return model.to(self.device).eval()

    def _embedding(self, index: int) -> torch.Tensor:
        meta = self._embed_meta
        if meta is None:
            raise FormatError("an HNeRV file without embeddings")
        chunk = int(meta["chunk"])
        c = index // chunk
        if c not in self._embed_cache:
            name = _chunk_name(c)
            if name not in self.container.names:
                raise FormatError(f"embedding stream {name} is missing")
            q = self.container.array(name)
            quant = EmbedQuant(int(meta["bits"]), float(meta["scale"]), float(meta["zero_point"]),
                        int(meta["qmin"]), int(meta["qmax"]))
            self._embed_cache = {c: dequantize_embeddings(q, quant)}   # keep one chunk
        return self._embed_cache[c][index - c * chunk]

    def _batch(self, index: int) -> dict[str, torch.Tensor]:
        idx = torch.tensor([index], dtype=torch.int64)
        batch = {"index": idx.to(self.device), "t": (idx.float() / float(self.config.frames)).to(self.device)}
        if self._embed_meta is not None:
            batch["embed"] = self._embedding(index)[None].to(self.device)
        return batch

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


def open_video(path: str | Path, device: str | torch.device = "cpu") -> VideoDecoder:
    """Open a ``.fpv`` file for decoding (FormatError when it is not a fieldpress video)."""
    from fieldpress.codec.container import open_container

    return VideoDecoder(open_container(path), device=device)


class VideoCodecImpl:
    """The heavy half of the video codecs (fieldpress.video.codecs): decode a container to frames."""

    def decode(self, container: Any, device: str | torch.device = "cpu") -> VideoDecoder:
        return VideoDecoder(container, device=device)


VIDEO_CODEC = VideoCodecImpl()

"""The ``video/nirvana`` file: every group's weight integers as range-coded residuals, and the decoder
with random access by group.

Streams: ``g/NNNNNN`` (uint32 words of one constriction range coder per group: the group's integers
minus its reference's, all tensors in storage order, each under one zero-mean Laplace table) and
``rows`` (int16 (groups, tensors): the table row of each tensor of each group). A key group's reference
is zero; any other group's is the previous group's integers. Header: the config, the groups
(``[start, length, key]``), fps, first source frame, source, the rate split and the fit's facts.
Decoding frame t reads only the chain of groups from the nearest key group at or before t's group, and
a group is always rendered whole, so any frame range decodes to the same bits as a full decode.
docs/formats/nirvana.md is the full description.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fieldpress import __version__
from fieldpress.codec import entropy_models as em
from fieldpress.codec.registry import Encoded
from fieldpress.errors import FormatError, InputError
from fieldpress.video.nirvana.grouping import Group
from fieldpress.video.nirvana.model import NirvanaConfig, decode_group

FORMAT = "fieldpress-nirvana/1"
MAX_FRAMES = 1 << 20
MAX_PARAMS = 1 << 24          # integers one group's network may have
MAX_GROUP_VALUES = 1 << 28    # floats one group's render may produce (the patches of G frames)
ZERO_MEAN_BIN = em.MEAN_BINS // 2


# ----------------------------------------------------------------------------- coding integers
def best_rows(residuals: list[np.ndarray]) -> np.ndarray:
    """Per tensor, the zero-mean table row that codes its residuals in the fewest bits (exact)."""
    rows = ZERO_MEAN_BIN * em.SCALE_BINS + np.arange(em.SCALE_BINS)
    bits = em.PROB_BITS - np.log2(em.tables()[rows].astype(np.float64))  # (SCALE_BINS, ALPHABET)
    out = np.empty(len(residuals), np.int64)
    for i, r in enumerate(residuals):
        hist = np.bincount(np.asarray(r, np.int64).reshape(-1) - em.RES_MIN, minlength=em.ALPHABET)
        out[i] = rows[int(np.argmin(bits @ hist))]
    return out


def coded_bits(residuals: list[np.ndarray], rows: np.ndarray) -> float:
    """Information content (bits) of the residuals under their rows (what the range coder spends)."""
    return sum(em.table_bits(r, np.zeros_like(r), np.full(r.shape, row)) for r, row in zip(residuals, rows))


def encode_residuals(residuals: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """One group's residuals, range-coded: uint32 words."""
    enc = em.new_encoder()
    flat = np.concatenate([np.asarray(r, np.int64).reshape(-1) for r in residuals])
    table = np.concatenate([np.full(np.size(r), row, np.int64) for r, row in zip(residuals, rows)])
    em.encode_symbols(enc, flat, np.zeros_like(flat), table)
    return em.finish(enc)


def decode_residuals(words: np.ndarray, rows: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """What `encode_residuals` wrote, split back into tensors (FormatError on damage)."""
    if words.dtype != np.uint32 or words.ndim != 1:
        raise FormatError("a group stream must be a 1-D uint32 array")
    table = np.concatenate([np.full(math.prod(s), int(row), np.int64) for s, row in zip(shapes, rows)])
    flat = em.decode_symbols(em.new_decoder(words), np.zeros_like(table), table)
    out, at = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(flat[at:at + n].reshape(s))
        at += n
    return out


# ----------------------------------------------------------------------------- the codec
class NirvanaCodec:
    """The heavy half of ``video/nirvana``: integers per group -> header + streams, and back."""

    def encode(self, config: NirvanaConfig, groups: list[Group], integers: list[list[np.ndarray]], *,
               frames: int, fps: float, frame_start: int, source: dict,
               extra: dict | None = None) -> Encoded:
        """The file of a fitted clip: `integers[g]` are group g's stored integers (every tensor)."""
        streams: dict[str, np.ndarray] = {}
        rows = np.zeros((len(groups), len(config.shapes())), np.int16)
        split = {"key_bytes": 0, "residual_bytes": 0}
        for g, group in enumerate(groups):
            ref = integers[g - 1] if not group.key else [np.zeros_like(x) for x in integers[g]]
            res = [np.asarray(x, np.int64) - np.asarray(r, np.int64) for x, r in zip(integers[g], ref)]
            rows[g] = best_rows(res)
            words = encode_residuals(res, rows[g])
            streams[f"g/{g:06d}"] = words
            split["key_bytes" if group.key else "residual_bytes"] += 4 * int(words.size)
        streams["rows"] = rows
        header: dict[str, Any] = {
            "format": FORMAT, "model": "nirvana", "config": config.to_dict(),
            "width": config.width, "height": config.height, "frames": int(frames),
            "frame_start": int(frame_start), "fps": float(fps), "colour": "rgb24 (sRGB, full range)",
            "source": source, "groups": [[g.start, g.length, int(g.key)] for g in groups],
            "rate": split, "library": f"fieldpress {__version__}",
        }
        if extra:
            header.update(extra)
        return Encoded(header, streams)

    def decode(self, container: Any, device: str | torch.device = "cpu") -> NirvanaDecoder:
        return NirvanaDecoder(container, device=device)

    def verify(self, container: Any) -> None:
        """Deep validation (`fieldpress info --verify`): decode every group's integers; no network runs."""
        dec = NirvanaDecoder(container)
        for g in range(len(dec.groups)):
            dec.integers(g)


def _parse_groups(raw: Any, frames: int) -> list[Group]:
    """The header's groups, checked to tile frames 0..frames-1 in order, the first a key group."""
    if not isinstance(raw, list) or not raw or len(raw) > frames:
        raise FormatError("the header's groups are missing or malformed")
    groups, at = [], 0
    for item in raw:
        if (not isinstance(item, list) or len(item) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise FormatError("the header's groups are malformed")
        start, length, key = item
        if start != at or length < 1 or key not in (0, 1):
            raise FormatError("the header's groups do not tile the frames")
        groups.append(Group(start, length, bool(key)))
        at += length
    if at != frames or not groups[0].key:
        raise FormatError("the header's groups do not tile the frames from a key group")
    return groups


class NirvanaDecoder:
    """Frames of a ``video/nirvana`` file: ``decode(start, end)`` -> uint8 (N, H, W, 3), reading only the
    groups (and their residual chains) that the frames need."""

    name = "nirvana"

    def __init__(self, container: Any, device: str | torch.device = "cpu") -> None:
        header = container.header
        try:
            self.config = NirvanaConfig.from_dict(header["config"])
            self.frames = int(header["frames"])
            self.fps = float(header["fps"])
            self.frame_start = int(header.get("frame_start", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"nirvana header is incomplete or damaged ({exc})") from None
        if not 1 <= self.frames <= MAX_FRAMES or not math.isfinite(self.fps):
            raise FormatError("the header's frame count or fps is out of range")
        cfg = self.config
        gh, gw = cfg.grid
        if (cfg.n_params() > MAX_PARAMS
                or gh * gw * cfg.patch**2 * 3 * cfg.group * (1 + cfg.features) > MAX_GROUP_VALUES):
            raise FormatError("the header's network is over the decoder's size limits")
        self.groups = _parse_groups(header.get("groups"), self.frames)
        if any(g.length > cfg.group for g in self.groups):
            raise FormatError("a group is longer than the network's group size")
        self.shapes = cfg.shapes()
        self.rows = self._rows(container)
        self.container = container
        self.device = torch.device(device)
        self._cache: tuple[int, list[np.ndarray]] | None = None

    @property
    def width(self) -> int:
        return int(self.config.width)

    @property
    def height(self) -> int:
        return int(self.config.height)

    def _rows(self, container: Any) -> np.ndarray:
        if "rows" not in container:
            raise FormatError("stream rows is missing")
        rows = container.array("rows")
        if rows.shape != (len(self.groups), len(self.shapes)) or not np.issubdtype(rows.dtype, np.integer):
            raise FormatError("stream rows has the wrong shape or type")
        if rows.size and (rows.min() < 0 or rows.max() >= em.N_TABLES):
            raise FormatError("stream rows holds an entropy table index out of range")
        return rows.astype(np.int64)

    def integers(self, g: int) -> list[np.ndarray]:
        """Group g's stored integers: its key group's plus every residual up to g (the last is cached)."""
        key = max(i for i in range(g + 1) if self.groups[i].key)
        start, ints = key, None
        if self._cache is not None and key <= self._cache[0] <= g:
            start, ints = self._cache[0] + 1, self._cache[1]
            if self._cache[0] == g:
                return ints
        for i in range(start, g + 1):
            name = f"g/{i:06d}"
            if name not in self.container:
                raise FormatError(f"stream {name} is missing")
            res = decode_residuals(self.container.array(name), self.rows[i], self.shapes)
            ints = res if ints is None else [a + b for a, b in zip(ints, res)]
            q = self.config.qmax
            if any(np.abs(x).max(initial=0) > q for x in ints):
                raise FormatError(f"group {i}'s integers leave the +-{q} range")
        self._cache = (g, ints)
        return ints

    def group_of(self, frame: int) -> int:
        """The index of the group holding `frame`."""
        starts = [g.start for g in self.groups]
        return int(np.searchsorted(starts, frame, side="right") - 1)

    @torch.no_grad()
    def iter_frames(self, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
        """Frames start..end-1, one uint8 (H, W, 3) at a time (each group rendered whole, once)."""
        end = self.frames if end is None else end
        if not 0 <= start < end <= self.frames:
            raise InputError(f"--frames {start}:{end} is outside this file's {self.frames} frames")
        g, rendered = -1, None
        for t in range(start, end):
            if g < 0 or t >= self.groups[g].start + self.groups[g].length:
                g = self.group_of(t)
                ints = [torch.from_numpy(x).to(self.device) for x in self.integers(g)]
                rendered = decode_group(self.config, ints)
            frame = rendered[t - self.groups[g].start]
            yield (frame * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def decode(self, start: int = 0, end: int | None = None) -> np.ndarray:
        """Frames start..end-1 as one uint8 array (N, H, W, 3)."""
        return np.stack(list(self.iter_frames(start, end)))


CODEC = NirvanaCodec()

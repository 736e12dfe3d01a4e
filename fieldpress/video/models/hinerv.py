"""HiNeRV (Kwan et al., NeurIPS 2023): a frame's features start as multi-level temporal feature grids at
the base resolution; each upsampling stage interpolates bilinearly, adds a hierarchical local grid
encoding, and refines with ConvNeXt-style blocks; a linear head gives RGB.

Facts followed (paper and the released UVG configs, e.g. ``uvg-hinerv-s``): base grids with levels of
T/2^l time knots and C*2^l channels (UVG: 150 knots for 600 frames, C = 2, 2 levels) at the base
resolution; local grids per stage of (T/2^l knots, s x s positions, C*2^l channels) (UVG: T = frames,
C = 4, 3 levels), their channels halved at each deeper stage; stage widths divided by 2 per stage
(UVG: 280, depths 3,3,3,1, expansion 4, kernels 3, stem kernel 3); training on patches whose
features are computed with just the margin their convolutions need, so a patch equals the same
region of the full frame; Adam lr 2e-3, 10% warmup, 0.7 L1 + 0.3 SSIM-type loss.
Our choices (docs/formats/hinerv.md): time is interpolated linearly with the ends on the first and last
frame; the local encoding enters through one linear layer per stage; bilinear upsampling is our own
gather (half-pixel centres, clamped at the frame edge) so a patch and the full frame run the same
arithmetic; grids start as unit normals (10x or 100x smaller learned 2-4x slower on a tiny clip);
the first block of a stage that changes width has a linear shortcut; (tanh + 1) / 2 output; CAM (``--cam``)
is a per-channel scale and shift from a time grid after each block's LayerNorm (no instance norm, which
would make patches differ from the frame). Everything is stored as weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from fieldpress.video.models.base import VideoINR, VideoModelConfig, frame_time
from fieldpress.video.models.blocks import output_head

Span = tuple[int, int]
"""A half-open range [start, end) of rows or columns at one level of the decoder."""


@dataclass(frozen=True)
class HiNeRVConfig(VideoModelConfig):
    """HiNeRV's sizes (serialised into the header). ``channels`` is the width solved for ``--size``."""

    channels: int = 64
    reduction: float = 2.0
    min_channels: int = 8
    depths: tuple[int, ...] = ()      # blocks per stage; () = 3 each, 1 in the last (UVG: 3,3,3,1)
    expansion: float = 4.0
    kernel: int = 3
    stem_kernel: int = 3
    base_knots: int = 0               # time knots of the base grid's first level; 0 = frames / 4
    base_channels: int = 2
    base_levels: int = 2
    local_channels: int = 4
    local_levels: int = 3
    patch: int = 48                   # training patch side in pixels (0 = whole frames)

    @property
    def stage_depths(self) -> tuple[int, ...]:
        n = len(self.strides)
        return tuple(self.depths) if self.depths else (3,) * (n - 1) + (1,)

    @property
    def widths(self) -> list[int]:
        """Output width of each stage: ``channels``, then divided by ``reduction`` per stage."""
        out, c = [], self.channels
        for i in range(len(self.strides)):
            if i:
                c = max(int(c / self.reduction), self.min_channels)
            out.append(c)
        return out

    def check(self) -> None:
        """ValueError when the sizes cannot build a model."""
        if len(self.stage_depths) != len(self.strides) or min(self.stage_depths) < 1:
            raise ValueError("hinerv needs one positive depth per stride")
        if self.kernel % 2 == 0 or self.stem_kernel % 2 == 0 or self.kernel > 15 or self.stem_kernel > 15:
            raise ValueError("hinerv kernels must be odd and at most 15")
        if min(self.channels, self.min_channels, self.base_channels, self.local_channels) < 1:
            raise ValueError("hinerv widths must be positive")
        if not (1 <= self.base_levels <= 8 and 0 <= self.local_levels <= 8 and self.base_knots >= 0
                and 0 < self.expansion <= 16 and self.reduction >= 1 and self.patch >= 0):
            raise ValueError("hinerv grid or block sizes out of range")


def _knots(count: int, level: int) -> int:
    return max(1, count // (2 ** level))


def temporal_lerp(grid: torch.Tensor, index: torch.Tensor, frames: int) -> torch.Tensor:
    """grid (K, ...) linearly interpolated at frame `index` (B,): knot 0 on frame 0, knot K-1 on the last."""
    k = grid.shape[0]
    pos = index.to(torch.float64).cpu() * ((k - 1) / max(frames - 1, 1))
    lo = pos.floor().long().clamp(0, k - 1)
    hi = (lo + 1).clamp(max=k - 1)
    w = (pos - lo.double()).to(grid.dtype).to(grid.device).view(-1, *([1] * (grid.dim() - 1)))
    g_lo, g_hi = grid.index_select(0, lo.to(grid.device)), grid.index_select(0, hi.to(grid.device))
    return g_lo + (g_hi - g_lo) * w


def upsample_axis(x: torch.Tensor, dim: int, src: Span, out: Span, scale: int, size: int) -> torch.Tensor:
    """Bilinear (half-pixel centres, clamped at 0 and `size` - 1) upsampling along `dim` by `scale`:
    `x` holds source rows `src`, the result output rows `out`."""
    y = torch.arange(out[0], out[1], dtype=torch.int64)
    num = 2 * y + 1 - scale                      # 2s * (source coordinate)
    i0 = torch.div(num, 2 * scale, rounding_mode="floor").clamp(min=0)
    lam = (num.double() / (2 * scale) - i0.double()).clamp(min=0.0)
    i1 = (i0 + 1).clamp(max=size - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    lam = lam.to(x.dtype).to(x.device).view(shape)
    a = x.index_select(dim, (i0 - src[0]).to(x.device))
    b = x.index_select(dim, (i1 - src[0]).to(x.device))
    return a + (b - a) * lam


def source_span(out: Span, scale: int, size: int) -> Span:
    """The source rows `upsample_axis` reads for output rows `out`."""
    lo = max((2 * out[0] + 1 - scale) // (2 * scale), 0)
    hi = max((2 * (out[1] - 1) + 1 - scale) // (2 * scale), 0) + 2
    return lo, min(hi, size)


def grow(span: Span, margin: int, size: int) -> Span:
    """`span` widened by `margin` on both sides, clipped to [0, size)."""
    return max(span[0] - margin, 0), min(span[1] + margin, size)


class HiNeRVBlock(nn.Module):
    """dwconv k -> LayerNorm -> [CAM scale/shift from t] -> Linear(e*C) -> GELU -> Linear -> + shortcut."""

    def __init__(self, c_in: int, c_out: int, kernel: int, expansion: float, cam_grid: int | None) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in)
        self.norm = nn.LayerNorm(c_in, eps=1e-6)
        self.cam: nn.Module | None = None
        if cam_grid is not None:
            from fieldpress.fields.cam import CAM

            self.cam = CAM(1, (cam_grid,), channels=c_in, norm=False)
        hidden = max(1, int(round(c_in * expansion)))
        self.fc1 = nn.Linear(c_in, hidden)
        self.fc2 = nn.Linear(hidden, c_out)
        self.skip = nn.Linear(c_in, c_out) if c_in != c_out else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        if self.cam is not None:
            gamma, beta = self.cam.sample(t.reshape(-1, 1).to(y.dtype))
            y = y * gamma[:, None, None, :] + beta[:, None, None, :]
        y = self.fc2(F.gelu(self.fc1(y)))
        s = x.permute(0, 2, 3, 1)
        s = self.skip(s) if self.skip is not None else s
        return (s + y).permute(0, 3, 1, 2)


class LocalGrid(nn.Module):
    """A stage's hierarchical encoding: per level a (knots, C_l, s, s) grid over time and the position
    inside the s x s cell each source pixel became; summed into the features through one linear layer."""

    def __init__(self, frames: int, scale: int, channels: int, levels: int, out: int) -> None:
        super().__init__()
        self.frames, self.scale = frames, scale
        self.grids = nn.ParameterList(
            nn.Parameter(torch.randn(_knots(frames, lv), channels * 2 ** lv, scale, scale))
            for lv in range(levels))
        self.proj = nn.Linear(sum(channels * 2 ** lv for lv in range(levels)), out)

    def forward(self, index: torch.Tensor, rows: Span, cols: Span) -> torch.Tensor:
        """(B, out, rows, cols) encoding of frames `index` over the given output rows and columns."""
        tile = torch.cat([temporal_lerp(g, index, self.frames) for g in self.grids], 1)  # (B, C, s, s)
        r = (torch.arange(rows[0], rows[1]) % self.scale).to(tile.device)
        c = (torch.arange(cols[0], cols[1]) % self.scale).to(tile.device)
        enc = tile.index_select(2, r).index_select(3, c)
        return self.proj(enc.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class HiNeRVStage(nn.Module):
    """One upsampling stage: bilinear x`scale`, plus the local grid encoding, then the blocks."""

    def __init__(self, cfg: HiNeRVConfig, i: int, c_in: int, c_out: int, cam_grid: int | None) -> None:
        super().__init__()
        self.scale = cfg.strides[i]
        local_c = max(1, int(cfg.local_channels * 0.5 ** i))
        self.local = (LocalGrid(cfg.frames, self.scale, local_c, cfg.local_levels, c_in)
                      if cfg.local_levels else None)
        self.blocks = nn.ModuleList(
            HiNeRVBlock(c_in if j == 0 else c_out, c_out, cfg.kernel, cfg.expansion, cam_grid)
            for j in range(cfg.stage_depths[i]))


class HiNeRV(VideoINR):
    """Base grids -> stem conv -> stages (upsample + local grids + ConvNeXt blocks) -> linear RGB head.
    ``forward`` renders whole frames, or with ``batch["patch"]`` ((B, 4) rows y0:y1, columns x0:x1) the
    patches, each computed over just the margins its convolutions need (equal to the frame's pixels)."""

    name = "hinerv"
    loss_name = "fusion6"

    def __init__(self, config: HiNeRVConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        if config.modulation.kind not in ("none", "cam"):
            raise ValueError(f"hinerv has no modulation {config.modulation.kind!r}")
        cam_grid = config.modulation.grid if config.modulation.kind == "cam" else None
        gh, gw = config.grid
        knots = config.base_knots or max(1, math.ceil(config.frames / 4))
        self.base = nn.ParameterList(
            nn.Parameter(torch.randn(_knots(knots, lv), config.base_channels * 2 ** lv, gh, gw))
            for lv in range(config.base_levels))
        c_base = sum(config.base_channels * 2 ** lv for lv in range(config.base_levels))
        self.stem = nn.Conv2d(c_base, config.channels, config.stem_kernel, padding=config.stem_kernel // 2)
        stages, c = [], config.channels
        for i, width in enumerate(config.widths):
            stages.append(HiNeRVStage(config, i, c, width, cam_grid))
            c = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c, 3)

    def level_sizes(self, axis: int) -> list[int]:
        """Rows (axis 0) or columns (axis 1) of the padded frame at the base and after each stage."""
        size, out = self.config.grid[axis], []
        out.append(size)
        for s in self.config.strides:
            size *= s
            out.append(size)
        return out

    def plan(self, out: Span, axis: int) -> tuple[Span, list[Span], list[Span]]:
        """(base window, windows each stage computes, spans each level must hand on) for output `out`:
        every window is the span it hands on widened by its convolutions' reach."""
        cfg, sizes = self.config, self.level_sizes(axis)
        n = len(cfg.strides)
        need: list[Span] = [(0, 0)] * (n + 1)
        work: list[Span] = [(0, 0)] * (n + 1)
        need[n] = out
        for i in range(n, 0, -1):
            work[i] = grow(need[i], cfg.stage_depths[i - 1] * (cfg.kernel // 2), sizes[i])
            need[i - 1] = source_span(work[i], cfg.strides[i - 1], sizes[i - 1])
        return grow(need[0], cfg.stem_kernel // 2, sizes[0]), work, need

    def render(self, index: torch.Tensor, t: torch.Tensor, rows: Span, cols: Span) -> torch.Tensor:
        """Frames `index` (B,) over output rows and columns -> (B, 3, rows, cols) in [0, 1]."""
        (b_rows, w_rows, n_rows), (b_cols, w_cols, n_cols) = self.plan(rows, 0), self.plan(cols, 1)
        sizes_r, sizes_c = self.level_sizes(0), self.level_sizes(1)
        dtype = self.head.weight.dtype
        x = torch.cat([temporal_lerp(g, index, self.config.frames) for g in self.base], 1)
        x = x[:, :, b_rows[0]:b_rows[1], b_cols[0]:b_cols[1]].to(dtype)
        x = _cut(self.stem(x), b_rows, b_cols, n_rows[0], n_cols[0])
        for i, stage in enumerate(self.stages, start=1):
            x = upsample_axis(x, 2, n_rows[i - 1], w_rows[i], stage.scale, sizes_r[i - 1])
            x = upsample_axis(x, 3, n_cols[i - 1], w_cols[i], stage.scale, sizes_c[i - 1])
            if stage.local is not None:
                x = x + stage.local(index, w_rows[i], w_cols[i]).to(dtype)
            for block in stage.blocks:
                x = block(x, t)
            x = _cut(x, w_rows[i], w_cols[i], n_rows[i], n_cols[i])
        return output_head(self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        index = batch["index"]
        t = batch["t"] if "t" in batch else frame_time(index, self.config.frames)
        t = t.to(self.head.weight.device)
        if "patch" not in batch:
            return self.render(index, t, (0, self.config.height), (0, self.config.width))
        spans = batch["patch"].tolist()
        return torch.cat([self.render(index[b:b + 1], t[b:b + 1], (y0, y1), (x0, x1))
                          for b, (y0, y1, x0, x1) in enumerate(spans)])

    def training_source(self, source: Any) -> Any:
        """Overlapping ``patch`` x ``patch`` crops of every frame (whole frames when ``patch`` is 0)."""
        return PatchSource(source, self.config.patch) if self.config.patch else source


def _cut(x: torch.Tensor, rows: Span, cols: Span, keep_rows: Span, keep_cols: Span) -> torch.Tensor:
    """The part of `x` (covering `rows` x `cols`) that covers `keep_rows` x `keep_cols`."""
    r0, c0 = rows[0], cols[0]
    return x[:, :, keep_rows[0] - r0:keep_rows[1] - r0, keep_cols[0] - c0:keep_cols[1] - c0]


def patch_starts(size: int, patch: int) -> list[int]:
    """Starts of ceil(size / patch) patches spread evenly over `size` (the last ends at the edge; they
    overlap when `patch` does not divide `size`)."""
    patch = min(patch, size)
    n = math.ceil(size / patch)
    return [0] if n == 1 else [round(i * (size - patch) / (n - 1)) for i in range(n)]


class PatchSource:
    """A clip as a Fitter data source of patches: item i is patch i % P of frame i // P, handed out as
    the frame's batch with ``frames`` cropped and ``patch`` (B, 4) = y0, y1, x0, x1 added."""

    def __init__(self, source: Any, patch: int) -> None:
        self.source = source
        _, _, h, w = source.frames.shape
        self.ph, self.pw = min(patch, h), min(patch, w)
        self.tops, self.lefts = patch_starts(h, patch), patch_starts(w, patch)
        self.per_frame = len(self.tops) * len(self.lefts)

    def __len__(self) -> int:
        return len(self.source) * self.per_frame

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = indices.long().cpu()
        frame, p = idx // self.per_frame, idx % self.per_frame
        out = self.source.batch(frame)
        tops = torch.tensor(self.tops)[p // len(self.lefts)]
        lefts = torch.tensor(self.lefts)[p % len(self.lefts)]
        out["frames"] = torch.stack([f[:, y:y + self.ph, x:x + self.pw]
                                     for f, y, x in zip(out["frames"], tops.tolist(), lefts.tolist())])
        out["patch"] = torch.stack([tops, tops + self.ph, lefts, lefts + self.pw], 1)
        return out


def hinerv_width_config(base: dict, channels: int) -> HiNeRVConfig:
    """HiNeRV with first-stage width ``channels`` (the quantity solved for ``--size``)."""
    return HiNeRVConfig(**{**base, "channels": channels})

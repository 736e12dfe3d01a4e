"""The compress-splat pipeline: presets, significance, pruning + recovery, SH distillation, the
target-size search, VecTree coding, and evaluation of the decoded scene against the input.

Order (LightGaussian): significance -> prune -> recovery fine-tune -> SH distillation -> VecTree.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fieldpress.errors import InputError
from fieldpress.scenes.lightgaussian.codec import CodecConfig, EncodedScene, encode_scene
from fieldpress.scenes.lightgaussian.distill import TeacherFitConfig, distill_sh
from fieldpress.scenes.lightgaussian.prune import prune_scene, recover
from fieldpress.scenes.lightgaussian.significance import proxy_significance, significance
from fieldpress.scenes.lightgaussian.vectree import VecTreeConfig


@dataclass(frozen=True)
class Preset:
    """What a preset does; explicit flags override its fields."""

    name: str
    render: bool  # rendered significance (else the render-free proxy)
    prune: float
    sh_drop: int  # SH degrees removed by distillation
    finetune_steps: int  # recovery and distillation steps (each)
    codec: CodecConfig


_COMPACT = CodecConfig(position_bits=16, opacity_bits=8, scale_bits=8, rotation_bits=8, dc_bits=8,
                       vectree=VecTreeConfig(keep_bits=8))
PRESETS: dict[str, Preset] = {
    # fast: finer attribute bits, no rendering. All presets keep the significant rows' SH at 8 bits + ANS
    # instead of LightGaussian's float16 (--kept-bits 0): on fruit_drops 34 vs 51 B/G at -0.1 dB.
    "fast": Preset("fast", render=False, prune=0.0, sh_drop=0, finetune_steps=0,
                   codec=CodecConfig(vectree=VecTreeConfig(keep_bits=8))),
    "balanced": Preset("balanced", render=True, prune=0.66, sh_drop=0, finetune_steps=0, codec=_COMPACT),
    "max": Preset("max", render=True, prune=0.66, sh_drop=1, finetune_steps=200, codec=_COMPACT),
}


@dataclass(frozen=True)
class CompressOptions:
    """Everything compress-splat can be told; None means "the preset's value"."""

    preset: str = "balanced"
    prune: float | None = None
    sh_degree: int | None = None
    codebook: int | None = None
    kept_bits: int | None = None  # 0: float16 (LightGaussian)
    finetune_steps: int | None = None
    target_bytes: int | None = None
    seed: int = 0
    significance_views: int = 16
    significance_width: int = 256
    train_width: int = 256

    def resolved(self) -> Preset:
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}: choose from {', '.join(PRESETS)}")
        p = PRESETS[self.preset]
        codec = p.codec
        vt = dataclasses.replace(codec.vectree, seed=self.seed,
                                 codebook_size=self.codebook if self.codebook is not None
                                 else codec.vectree.codebook_size,
                                 keep_bits=self.kept_bits if self.kept_bits is not None
                                 else codec.vectree.keep_bits)
        vt.validate()
        codec = dataclasses.replace(codec, vectree=vt)
        prune = p.prune if self.prune is None else float(self.prune)
        if not 0.0 <= prune < 1.0:
            raise InputError(f"--prune must be in [0, 1), got {prune}")
        steps = p.finetune_steps if self.finetune_steps is None else int(self.finetune_steps)
        if steps < 0:
            raise InputError(f"--finetune-steps must be >= 0, got {steps}")
        if self.sh_degree is not None and not 0 <= self.sh_degree <= 3:
            raise InputError(f"--sh-degree must be 0-3, got {self.sh_degree}")
        if self.codebook is not None and self.codebook < 1:
            raise InputError(f"--codebook must be >= 1, got {self.codebook}")
        return dataclasses.replace(p, prune=prune, finetune_steps=steps, codec=codec)


@dataclass
class CompressResult:
    """The encoded scene and what happened on the way."""

    encoded: EncodedScene
    gaussians_in: int
    gaussians_out: int
    sh_degree_in: int
    sh_degree_out: int
    prune: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage
    reports: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[str], None]
HEADER_MARGIN = 256  # bytes kept free in the target-size search for the pipeline's header entries


def _noop(_: str) -> None:
    return None


def significance_cameras(scene: Any, cameras: Sequence[Any] | None, options: CompressOptions) -> list[Any]:
    """The user's cameras (scaled to the significance width) or orbit views."""
    from fieldpress.scenes.cameras import orbit

    if cameras:
        return [c.scaled(options.significance_width) for c in cameras]
    return orbit(scene, options.significance_views, width=options.significance_width)


def encoded_size(encoded: EncodedScene) -> int:
    """Bytes the container would have, without writing it."""
    from fieldpress.codec.container import encode_container

    return len(encode_container("scene", encoded.header, encoded.streams))


def search_target(scene: Any, scores: np.ndarray, degree: int, target_bytes: int, codec: CodecConfig,
                  prune_floor: float, device: Any = "cpu") -> tuple[float, int]:
    """Smallest prune ratio (and, for it, the largest codebook among K, K/4, K/16) whose file fits.

    Sizes are measured by really encoding the truncated scene; bisection over the prune ratio.
    """
    k0 = codec.vectree.codebook_size
    candidates = sorted({max(16, k0), max(16, k0 // 4), max(16, k0 // 16)}, reverse=True)
    truncated = scene.with_sh_degree(min(degree, scene.sh_degree))

    def size(prune: float, k: int) -> int:
        pruned, keep = prune_scene(truncated, scores, prune)
        cfg = dataclasses.replace(codec, vectree=dataclasses.replace(codec.vectree, codebook_size=k))
        return encoded_size(encode_scene(pruned, scores[keep], cfg, device=device))

    best: tuple[float, int] | None = None
    for k in candidates:
        lo, hi = prune_floor, 0.99
        if size(hi, k) > target_bytes:
            continue
        if size(lo, k) <= target_bytes:
            hi = lo
        else:
            for _ in range(7):
                mid = 0.5 * (lo + hi)
                if size(mid, k) <= target_bytes:
                    hi = mid
                else:
                    lo = mid
        if best is None or hi < best[0] - 1e-9:
            best = (hi, k)
        if scene.sh_degree == 0 or degree == 0:
            break  # no VecTree features: the codebook does not matter
    if best is None:
        raise InputError(f"cannot reach {target_bytes:,} bytes even pruning 99% of the Gaussians")
    return round(best[0], 4), best[1]


def compress(scene: Any, options: CompressOptions, cameras: Sequence[Any] | None = None,
             device: Any = "cpu", progress: Progress = _noop, source: dict[str, Any] | None = None,
             show_progress: bool = False) -> CompressResult:
    """Run the pipeline on a loaded GaussianScene and return the encoded file contents."""
    preset = options.resolved()
    torch.manual_seed(options.seed)
    stages: dict[str, float] = {}
    reports: dict[str, Any] = {}
    scene = scene.detach().to("cpu")
    teacher = scene
    degree = scene.sh_degree if options.sh_degree is None else options.sh_degree
    if options.sh_degree is None and preset.sh_drop:
        degree = max(0, scene.sh_degree - preset.sh_drop)
    degree = min(degree, scene.sh_degree)
    renders = preset.render

    t = time.perf_counter()
    if renders:
        progress("significance")
        sig_cams = significance_cameras(scene, cameras, options)
        scores = significance(scene.to(device), sig_cams)
        reports["significance"] = {"views": len(sig_cams), "width": options.significance_width,
                                   "kind": "rendered"}
    else:
        scores = proxy_significance(scene)
        reports["significance"] = {"kind": "proxy (render-free)"}
    stages["significance"] = time.perf_counter() - t

    prune, codec = preset.prune, preset.codec
    if options.target_bytes is not None:
        t = time.perf_counter()
        progress("target-size search")
        prune, k = search_target(scene, scores, degree, options.target_bytes - HEADER_MARGIN, codec,
                                 preset.prune if options.prune is None else prune, device)
        codec = dataclasses.replace(codec, vectree=dataclasses.replace(codec.vectree, codebook_size=k))
        reports["search"] = {"prune": prune, "codebook": k}
        stages["search"] = time.perf_counter() - t

    t = time.perf_counter()
    pruned, keep = prune_scene(scene, scores, prune)
    scores = scores[keep]
    stages["prune"] = time.perf_counter() - t

    train_cams = None
    fit_cfg = TeacherFitConfig(steps=preset.finetune_steps, width=options.train_width, seed=options.seed)
    if preset.finetune_steps and prune > 0 and preset.render:
        t = time.perf_counter()
        progress("recovery fine-tune")
        train_cams = _train_cameras(scene, cameras, options)
        pruned, reports["recover"] = recover(pruned, teacher, train_cams, fit_cfg, device, show_progress)
        stages["recover"] = time.perf_counter() - t
    if degree < pruned.sh_degree:
        t = time.perf_counter()
        if preset.finetune_steps and preset.render:
            progress("SH distillation")
            train_cams = train_cams or _train_cameras(scene, cameras, options)
            pruned, reports["distill"] = distill_sh(pruned, teacher, degree, train_cams, fit_cfg, device,
                                                    show_progress)
        else:
            pruned = pruned.with_sh_degree(degree)
            reports["distill"] = {"steps": 0, "note": "truncated without distillation"}
        stages["distill"] = time.perf_counter() - t

    t = time.perf_counter()
    progress("VecTree + entropy coding")
    src = dict(source or {})
    src.update({"gaussians": scene.n, "sh_degree": scene.sh_degree})

    def encode(current: Any, current_scores: np.ndarray, ratio: float) -> EncodedScene:
        enc = encode_scene(current, current_scores, codec, device=device, source=src)
        enc.header["pipeline"] = {"preset": preset.name, "prune": ratio, "sh_degree": degree,
                                  "finetune_steps": preset.finetune_steps, "seed": options.seed,
                                  "significance": reports["significance"]["kind"]}
        return enc

    encoded = encode(pruned, scores, prune)
    while options.target_bytes is not None and encoded_size(encoded) > options.target_bytes:
        # header bytes and fine-tuned values move the size a little: drop 1% more until it fits
        if pruned.n <= 1:
            raise InputError(f"cannot reach {options.target_bytes:,} bytes")
        pruned, keep = prune_scene(pruned, scores, 0.01 if pruned.n >= 100 else 1.0 / pruned.n)
        scores = scores[keep]
        prune = round(1.0 - pruned.n / scene.n, 4)
        encoded = encode(pruned, scores, prune)
    stages["encode"] = time.perf_counter() - t
    return CompressResult(encoded, scene.n, pruned.n, scene.sh_degree, degree, prune,
                          {k: round(v, 3) for k, v in stages.items()}, reports)


def _train_cameras(scene: Any, cameras: Sequence[Any] | None, options: CompressOptions) -> list[Any]:
    from fieldpress.scenes.cameras import orbit

    if cameras:
        return list(cameras)
    return orbit(scene, options.significance_views, width=options.train_width)


def eval_cameras(scene: Any, cameras: Sequence[Any] | None, views: int = 16, width: int = 512) -> list[Any]:
    """DESIGN.md's evaluation views (16 orbit cameras at 512 px), or the user's cameras scaled to `width`."""
    from fieldpress.scenes.cameras import orbit

    if cameras:
        return [c.scaled(width) for c in cameras]
    return orbit(scene, views, width=width)


def render_views(scene: Any, cameras: Sequence[Any], device: Any = "cpu") -> np.ndarray:
    """uint8 (T, H, W, 3) renders on a black background (all views must share a size)."""
    from fieldpress.scenes.renderer import render

    s = scene.detach().to(device)
    out = []
    with torch.no_grad():
        for cam in cameras:
            rgb, _ = render(s, cam, cam.width, cam.height)
            out.append((rgb.clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy())
    return np.stack(out)


def evaluate(reference: np.ndarray, scene: Any, cameras: Sequence[Any],
             device: Any = "cpu") -> dict[str, float]:
    """Render PSNR (pooled 8-bit MSE, and mean per view) and SSIM of `scene` against `reference`."""
    from fieldpress.metrics import psnr, ssim

    test = render_views(scene, cameras, device)
    per_view = [psnr(r, t) for r, t in zip(reference, test)]
    return {"render_psnr": round(float(psnr(reference, test)), 3),
            "render_psnr_mean": round(float(np.mean([min(v, 100.0) for v in per_view])), 3),
            "render_ssim": round(float(np.mean([ssim(r, t) for r, t in zip(reference, test)])), 5)}

"""The compress-splat pipeline: presets, significance, pruning + recovery, SH distillation, the
target-size search, VecTree coding, and evaluation of the decoded scene against the input.

Order (LightGaussian): significance -> prune -> recovery fine-tune -> SH distillation -> VecTree.
`compress(input, options, device) -> Result` runs it all: the file's bytes, and metrics measured on
the scene those very bytes decode to (`result.write(path)` writes them).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec.registry import Encoded, Result, encode_file
from fieldpress.errors import InputError
from fieldpress.scenes.codecs import LIGHTGAUSSIAN
from fieldpress.scenes.lightgaussian.codec import CodecConfig, encode_scene
from fieldpress.scenes.lightgaussian.distill import TeacherFitConfig, distill_sh
from fieldpress.scenes.lightgaussian.prune import prune_scene, recover
from fieldpress.scenes.lightgaussian.reduce import ReduceConfig, reduce_count
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
    reduce: str = "prune"  # count reducer: prune | merge | auto (the better at equal count)


_COMPACT = CodecConfig(position_bits=16, opacity_bits=8, scale_bits=8, rotation_bits=8, dc_bits=8,
                       vectree=VecTreeConfig(keep_bits=8))
PRESETS: dict[str, Preset] = {
    # fast: finer attribute bits, no rendering. All presets keep the significant rows' SH at 8 bits + ANS
    # instead of LightGaussian's float16 (--kept-bits 0): on fruit_drops 34 vs 51 B/G at -0.1 dB.
    "fast": Preset("fast", render=False, prune=0.0, sh_drop=0, finetune_steps=0,
                   codec=CodecConfig(vectree=VecTreeConfig(keep_bits=8))),
    "balanced": Preset("balanced", render=True, prune=0.66, sh_drop=0, finetune_steps=0, codec=_COMPACT,
                       reduce="auto"),
    "max": Preset("max", render=True, prune=0.66, sh_drop=1, finetune_steps=200, codec=_COMPACT),
}


@dataclass(frozen=True)
class QualityLevel:
    """One `--quality` rung: the share of Gaussians kept, the count reducer, and the bits of each
    attribute (positions per axis, opacity, log-scales, rotation, DC, kept SH rows)."""

    keep: float
    reduce: str
    position_bits: int
    opacity_bits: int
    scale_bits: int
    rotation_bits: int
    dc_bits: int
    sh_bits: int


# --quality 1..9 (9 is `fast`). Measured on donut, guitar and fruit_drops (issue 18, 4 orbit views at
# 256 px): at mid rates the PSNR is lost to the count reduction far more than to the attribute bits
# (donut at 55% kept: 16/8/8/8/8 bits or 12/7/6/6/7 differ by 0.15 dB for 27% fewer bytes), so the
# mid levels keep more Gaussians at coarser bits. Scales and rotations are the sensitive attributes
# (scales 8 -> 6 bits: -3.2 dB on fruit_drops, 6 -> 5: -5.5 dB on guitar); positions, opacity, DC and
# the kept SH rows are not (fruit_drops: SH 8 -> 5 bits, -0.02 dB for 19% fewer bytes). Merging beat
# pruning only at a third of the count or less (at 55% kept it lost by 3.3 dB): there `auto` judges both.
# Level 2 fills the gap between 2.3 and 3.7 B/G on guitar (16 views at 512 px): at 2.7-2.85 B/G,
# 34% kept at level 1's bits gave 38.0 dB, 32% with 8-bit scales 37.4 and 29% at level 3's bits 36.6,
# so the count again beat the bits; a second 70% level (12-bit positions, 7-bit scales) made room.
QUALITY_LEVELS: dict[int, QualityLevel] = {
    1: QualityLevel(0.28, "auto", 10, 6, 7, 6, 5, 5),
    2: QualityLevel(0.34, "auto", 10, 6, 7, 6, 5, 5),
    3: QualityLevel(0.38, "auto", 11, 6, 8, 7, 6, 6),
    4: QualityLevel(0.5, "prune", 11, 6, 7, 6, 6, 6),
    5: QualityLevel(0.6, "prune", 11, 6, 7, 6, 6, 6),
    6: QualityLevel(0.7, "prune", 13, 7, 8, 7, 7, 7),
    7: QualityLevel(0.85, "prune", 13, 7, 8, 8, 7, 7),
    8: QualityLevel(1.0, "prune", 14, 8, 8, 9, 9, 8),
}


def quality_preset(level: int) -> Preset:
    """The preset `--quality level` (1-9) stands for."""
    if not isinstance(level, int) or not 1 <= level <= 9:
        raise InputError(f"--quality must be an integer 1-9, got {level!r}")
    if level == 9:
        return dataclasses.replace(PRESETS["fast"], name="q9")
    q = QUALITY_LEVELS[level]
    codec = CodecConfig(position_bits=q.position_bits, opacity_bits=q.opacity_bits, scale_bits=q.scale_bits,
                        rotation_bits=q.rotation_bits, dc_bits=q.dc_bits,
                        vectree=VecTreeConfig(keep_bits=q.sh_bits))
    return Preset(f"q{level}", render=q.keep < 1.0, prune=round(1.0 - q.keep, 4), sh_drop=0,
                  finetune_steps=0, codec=codec, reduce=q.reduce)


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
    evaluate: bool = True  # render input and decoded scene on the evaluation views
    eval_views: int = 16
    eval_width: int = 512
    spz_axes: str | None = None  # frame of an SPZ input that does not record one (None: the reader's default)
    reduce: str | None = None  # prune | merge | auto
    quality: int | None = None  # 1..9: replaces the preset
    target_psnr: float | None = None  # dB on the evaluation views: the smallest quality level reaching it

    def resolved(self) -> Preset:
        """The preset with every explicit option applied, validated (InputError on a bad value)."""
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset {self.preset!r}: choose from {', '.join(PRESETS)}")
        p = PRESETS[self.preset] if self.quality is None else quality_preset(self.quality)
        if self.reduce is not None:
            ReduceConfig(self.reduce).validate()
            p = dataclasses.replace(p, reduce=self.reduce)
        if self.target_psnr is not None and (self.target_bytes is not None or not self.target_psnr > 0):
            raise InputError("--target-psnr takes a positive dB value and cannot be combined with "
                             "--target-size")
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
        if self.eval_views < 1 or self.eval_width < 16:
            raise InputError("--eval-views must be >= 1 and --eval-width >= 16")
        if self.spz_axes is not None:
            from fieldpress.scenes.formats.spz import axes_name

            axes_name(self.spz_axes)
        return dataclasses.replace(p, prune=prune, finetune_steps=steps, codec=codec)


@dataclass
class Encoding:
    """The encoded scene (not yet a file) and what happened on the way."""

    encoded: Encoded
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


class _Stages(dict):
    """Seconds per stage: `with stages("prune"): ...`."""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self[name] = time.perf_counter() - t

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.items()}


def significance_cameras(scene: Any, cameras: Sequence[Any] | None, options: CompressOptions) -> list[Any]:
    """The user's cameras (scaled to the significance width) or orbit views."""
    from fieldpress.scenes.cameras import orbit

    if cameras:
        return [c.scaled(options.significance_width) for c in cameras]
    return orbit(scene, options.significance_views, width=options.significance_width)


def encoded_size(encoded: Encoded) -> int:
    """Bytes the file would have (header stamped with the codec), without writing it."""
    return len(encode_file(LIGHTGAUSSIAN, encoded))


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


def _kept_degree(scene: Any, options: CompressOptions, preset: Preset) -> int:
    """The SH degree the file keeps: --sh-degree, else the preset's drop, never above the input's."""
    degree = scene.sh_degree if options.sh_degree is None else options.sh_degree
    if options.sh_degree is None and preset.sh_drop:
        degree = max(0, scene.sh_degree - preset.sh_drop)
    return min(degree, scene.sh_degree)


def _scores(scene: Any, cameras: Sequence[Any] | None, options: CompressOptions, preset: Preset,
            device: Any, progress: Progress,
            given: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-Gaussian significance (rendered, or the render-free proxy) and its report; `given`: the
    rendered significance computed earlier on the same views (reused, e.g. across quality levels)."""
    if not preset.render:
        return proxy_significance(scene), {"kind": "proxy (render-free)"}
    if given is not None:
        given = np.asarray(given, dtype=np.float64).reshape(-1)
        if given.shape != (scene.n,):
            raise InputError(f"given significance has {given.size} values for {scene.n} Gaussians")
        return given, {"views": options.significance_views, "width": options.significance_width,
                       "kind": "rendered"}
    progress("significance")
    sig_cams = significance_cameras(scene, cameras, options)
    scores = significance(scene.to(device), sig_cams)
    return scores, {"views": len(sig_cams), "width": options.significance_width, "kind": "rendered"}


@dataclass
class _Run:
    """One pipeline run's settings and state, passed between its stages."""

    scene: Any  # the input (the teacher of the fine-tunes)
    options: CompressOptions
    preset: Preset
    cameras: Sequence[Any] | None
    device: Any
    progress: Progress
    show_progress: bool
    degree: int
    stages: _Stages = field(default_factory=_Stages)
    reports: dict[str, Any] = field(default_factory=dict)
    resume: Resume | None = None

    def checkpoint(self, stage: str) -> Any:
        """The fine-tune `stage`'s checkpoint (`<output>.<stage>.ckpt/`), or None without an output."""
        from fieldpress.scenes.lightgaussian.distill import StageCheckpoint

        if self.resume is None:
            return None
        r = self.resume
        return StageCheckpoint(Path(f"{r.output}.{stage}"), r.resume, r.every_steps, r.signature)


@dataclass(frozen=True)
class Resume:
    """Checkpoints of the fine-tunes beside `output` (`OUT.fpg.recover.ckpt/`, `OUT.fpg.distill.ckpt/`),
    whether to continue from them, an extra step interval, and what a resume must match."""

    output: Path
    resume: bool = False
    every_steps: int | None = None
    signature: Mapping[str, Any] = field(default_factory=dict)

    def existing(self) -> list[Path]:
        """The fine-tune checkpoints present now."""
        from fieldpress.engine.checkpoint import checkpoint_dir

        return [d for d in (checkpoint_dir(Path(f"{self.output}.{s}")) for s in ("recover", "distill"))
                if d.is_dir()]


def _fine_tune(run: _Run, pruned: Any, prune: float) -> Any:
    """Recovery fine-tune after pruning, then SH distillation (or plain truncation) to the kept degree."""
    preset, options = run.preset, run.options
    train_cams = None
    fit_cfg = TeacherFitConfig(steps=preset.finetune_steps, width=options.train_width, seed=options.seed)
    if preset.finetune_steps and prune > 0 and preset.render:
        with run.stages("recover"):
            run.progress("recovery fine-tune")
            train_cams = _train_cameras(run.scene, run.cameras, options)
            pruned, run.reports["recover"] = recover(pruned, run.scene, train_cams, fit_cfg, run.device,
                                                     run.show_progress, run.checkpoint("recover"))
    if run.degree < pruned.sh_degree:
        with run.stages("distill"):
            if preset.finetune_steps and preset.render:
                run.progress("SH distillation")
                train_cams = train_cams or _train_cameras(run.scene, run.cameras, options)
                pruned, run.reports["distill"] = distill_sh(pruned, run.scene, run.degree, train_cams,
                                                            fit_cfg, run.device, run.show_progress,
                                                            run.checkpoint("distill"))
            else:
                pruned = pruned.with_sh_degree(run.degree)
                run.reports["distill"] = {"steps": 0, "note": "truncated without distillation"}
    return pruned


def _encode_to_fit(run: _Run, pruned: Any, scores: np.ndarray, prune: float, codec: CodecConfig,
                   source: dict[str, Any] | None) -> tuple[Encoded, Any, float]:
    """VecTree + entropy coding; under --target-size, 1% more pruned at a time until the file fits
    (header bytes and fine-tuned values move the size a little). Returns (encoded, scene coded, prune)."""
    options, scene = run.options, run.scene
    src = {**(source or {}), "gaussians": scene.n, "sh_degree": scene.sh_degree}

    def encode(current: Any, current_scores: np.ndarray, ratio: float) -> Encoded:
        enc = encode_scene(current, current_scores, codec, device=run.device, source=src)
        enc.header["pipeline"] = {"preset": run.preset.name, "prune": ratio, "sh_degree": run.degree,
                                  "reduce": run.reports.get("reduce", {}).get("method", "prune"),
                                  "finetune_steps": run.preset.finetune_steps, "seed": options.seed,
                                  "significance": run.reports["significance"]["kind"]}
        return enc

    encoded = encode(pruned, scores, prune)
    while options.target_bytes is not None and encoded_size(encoded) > options.target_bytes:
        if pruned.n <= 1:
            raise InputError(f"cannot reach {options.target_bytes:,} bytes")
        pruned, keep = prune_scene(pruned, scores, 0.01 if pruned.n >= 100 else 1.0 / pruned.n)
        scores = scores[keep]
        prune = round(1.0 - pruned.n / scene.n, 4)
        encoded = encode(pruned, scores, prune)
    return encoded, pruned, prune


def encode_pipeline(scene: Any, options: CompressOptions, cameras: Sequence[Any] | None = None,
                    device: Any = "cpu", progress: Progress = _noop, source: dict[str, Any] | None = None,
                    show_progress: bool = False, resume: Resume | None = None,
                    significance: np.ndarray | None = None) -> Encoding:
    """Run the stages on a loaded GaussianScene and return the encoded file contents (not yet bytes).
    `resume`: checkpoint the fine-tunes (and continue from their checkpoints); `significance`: the
    rendered significance on the options' views, computed earlier (see `significance_cameras`)."""
    preset = options.resolved()
    torch.manual_seed(options.seed)
    scene = scene.detach().to("cpu")
    run = _Run(scene, options, preset, cameras, device, progress, show_progress,
               _kept_degree(scene, options, preset), resume=resume)
    with run.stages("significance"):
        scores, run.reports["significance"] = _scores(scene, cameras, options, preset, device, progress,
                                                       significance)
    prune, codec = preset.prune, preset.codec
    if options.target_bytes is not None:
        with run.stages("search"):
            progress("target-size search")
            prune, k = search_target(scene, scores, run.degree, options.target_bytes - HEADER_MARGIN, codec,
                                     preset.prune if options.prune is None else prune, device)
            codec = dataclasses.replace(codec, vectree=dataclasses.replace(codec.vectree, codebook_size=k))
            run.reports["search"] = {"prune": prune, "codebook": k}
    with run.stages("reduce"):
        progress(f"count reduction ({preset.reduce})")
        judge = ReduceConfig(preset.reduce, min(4, options.significance_views),
                             min(128, options.significance_width))  # small: it renders three scenes
        pruned, scores, run.reports["reduce"] = reduce_count(scene, scores, prune, judge, device)
    pruned = _fine_tune(run, pruned, prune)
    with run.stages("encode"):
        progress("VecTree + entropy coding")
        encoded, pruned, prune = _encode_to_fit(run, pruned, scores, prune, codec, source)
    return Encoding(encoded, scene.n, pruned.n, scene.sh_degree, run.degree, prune, run.stages.rounded(),
                    run.reports)


def load_input(input: Any, spz_axes: str | None = None) -> tuple[Any, dict[str, Any], str | None, float]:
    """(scene, source facts for the header, input path or None, seconds to load) of a path or a scene."""
    from fieldpress.scenes.formats import detect_format, load_scene

    if not isinstance(input, (str, os.PathLike)):
        return input, {}, None, 0.0
    t = time.perf_counter()
    path = Path(input)
    spz = spz_axes is not None and detect_format(path).name == "spz"
    scene = load_scene(path, axes=spz_axes) if spz else load_scene(path)
    source = {"name": path.name, "bytes": path.stat().st_size, "format": scene.meta.get("source_format")}
    spz_meta = scene.meta.get("spz") or {}
    if "axes" in spz_meta:  # `fieldpress info` shows which frame the SPZ was read in, and why
        source["spz_axes"] = f"{spz_meta['axes']} ({spz_meta['axes_from']})"
    return scene, source, str(path), time.perf_counter() - t


def decode_bytes(data: bytes) -> Any:
    """The GaussianScene a `.fpg` file with these bytes decodes to."""
    from fieldpress.scenes.lightgaussian.codec import read_fpg

    return read_fpg(data)


def _file_metrics(options: CompressOptions, run: Encoding, source: dict[str, Any],
                  size: int) -> dict[str, Any]:
    """What compress-splat reports about the file (the DESIGN names among them)."""
    input_bytes = source.get("bytes")
    preset = options.preset if options.quality is None else f"q{options.quality}"
    return {"preset": preset, "input_bytes": input_bytes, "output_bytes": size,
            "ratio": round(input_bytes / max(size, 1), 3) if input_bytes else None,
            "gaussians_in": run.gaussians_in, "gaussians_out": run.gaussians_out,
            "bytes_per_gaussian": round(size / max(run.gaussians_in, 1), 3),
            "sh_degree_in": run.sh_degree_in, "sh_degree_out": run.sh_degree_out, "prune": run.prune}


def compress(input: Any, options: CompressOptions, device: Any = "cpu", *,
             cameras: Sequence[Any] | None = None, progress: Progress = _noop,
             source: dict[str, Any] | None = None, show_progress: bool = False,
             resume: Resume | None = None, significance: np.ndarray | None = None) -> Result:
    """Compress a scene file (path) or a loaded GaussianScene into `.fpg` bytes: `Result.data` is the
    file, and its metrics (gaussians_in/out, bytes_per_gaussian, render_psnr, ...) are measured on the
    scene decoded from those bytes. `source` adds header facts for a scene given without a path;
    `significance` reuses a rendered significance computed earlier on the options' views."""
    if options.target_psnr is not None:
        return _compress_to_psnr(input, options, device, cameras, progress, source, show_progress)
    started = time.perf_counter()
    scene, loaded_from, path, load_s = load_input(input, options.spz_axes)
    source = {**loaded_from, **(source or {})}
    run = encode_pipeline(scene, options, cameras, device, progress, source, show_progress, resume,
                          significance)
    data = encode_file(LIGHTGAUSSIAN, run.encoded)
    metrics = _file_metrics(options, run, source, len(data))
    stages = {"load": round(load_s, 3), **run.stages} if path else dict(run.stages)
    metrics["render_psnr"] = None  # unless evaluated
    if options.evaluate:
        progress("evaluation")
        t = time.perf_counter()
        cams = eval_cameras(scene, cameras, options.eval_views, options.eval_width)
        reference = render_views(scene, cams, device)
        metrics.update(evaluate(reference, decode_bytes(data), cams, device))
        metrics["eval_views"] = len(cams)
        stages["eval"] = round(time.perf_counter() - t, 3)
    metrics["stage_seconds"] = stages
    reported = ("recover", "distill", "search", "reduce")
    metrics.update({k: run.reports[k] for k in reported if k in run.reports})
    return Result(LIGHTGAUSSIAN, data, metrics, input=path, seconds=time.perf_counter() - started,
                  device=str(device))


def _compress_to_psnr(input: Any, options: CompressOptions, device: Any, cameras: Sequence[Any] | None,
                      progress: Progress, source: dict[str, Any] | None, show_progress: bool) -> Result:
    """The file of the lowest --quality level whose render PSNR on the evaluation views reaches
    --target-psnr (bisection over 1-9, assuming PSNR grows with the level; each try is a real file)."""
    started = time.perf_counter()
    options.resolved()
    scene, loaded_from, path, _ = load_input(input, options.spz_axes)
    cams = eval_cameras(scene, cameras, options.eval_views, options.eval_width)
    reference = render_views(scene, cams, device)
    tried: dict[int, Result] = {}
    rendered: list[np.ndarray] = []  # the rendered significance, computed once for every level

    def attempt(level: int) -> float:
        progress(f"quality {level}")
        opts = dataclasses.replace(options, quality=level, target_psnr=None, evaluate=False)
        if opts.resolved().render and not rendered:
            progress("significance")
            rendered.append(significance(scene.to(device), significance_cameras(scene, cameras, options)))
        res = compress(scene, opts, device, cameras=cameras, progress=progress,
                       source={**loaded_from, **(source or {})}, show_progress=show_progress,
                       significance=rendered[0] if rendered and opts.resolved().render else None)
        res.metrics.update(evaluate(reference, decode_bytes(res.data), cams, device))
        res.metrics["eval_views"] = len(cams)
        tried[level] = res
        return float(res.metrics["render_psnr"])

    lo, hi = 1, 9
    reached = attempt(9) >= options.target_psnr
    while reached and lo < hi:
        mid = (lo + hi) // 2
        if attempt(mid) >= float(options.target_psnr):
            hi = mid
        else:
            lo = mid + 1
    best = tried[hi]
    best.metrics["target_psnr"] = {
        "target": options.target_psnr, "reached": reached, "quality": hi,
        "tried": {q: {"bytes": len(r.data), "render_psnr": r.metrics["render_psnr"]}
                  for q, r in sorted(tried.items())}}
    best.input, best.seconds = path, time.perf_counter() - started
    return best


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

"""`compress-splat` and `decompress-splat`: LightGaussian compression of splat scenes into `.fpg`
files, and their decoding back to any scene format fieldpress writes."""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fieldpress.cli import BatchCommand, RunSummary, add_device_arg, entry, input_file, new_parser
from fieldpress.errors import InputError, ResumeError
from fieldpress.runtime import progress_enabled, resolve_device

DESCRIPTION = ("Compress a 3D Gaussian Splatting scene (any readable format) into a .fpg file: "
               "LightGaussian significance pruning, SH distillation and VecTree quantization, with "
               "Morton-ordered position coding and ANS. fast: coding only; balanced: + significance "
               "pruning; max: + recovery fine-tune and SH distillation.")


def _parse_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--prune expects a fraction such as 0.66, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise InputError(f"--prune must be in [0, 1), got {text}")
    return value


def _parse_mb(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--target-size expects megabytes (10^6 bytes) such as 2.5, got {text!r}") from None
    if not value > 0:
        raise InputError(f"--target-size must be positive, got {text}")
    return int(value * 1_000_000)


def load_cameras(path: str) -> list[Any]:
    """Cameras from any camera file the scenes package reads (COLMAP, cameras.json, transforms.json)."""
    from fieldpress.scenes import camera_files

    if not Path(path).exists():
        raise InputError(f"{path}: no such camera file or folder")
    cams = list(camera_files.load_cameras(path))
    if not cams:
        raise InputError(f"{path}: no cameras in the file")
    return cams


def build_parser() -> Any:
    from fieldpress.scenes.lightgaussian.pipeline import PRESETS

    p = new_parser("compress-splat", DESCRIPTION)
    p.add_argument("input", help="scene file: .ply, .compressed.ply, .spz, .splat, .fpg, ...")
    p.add_argument("-o", "--output", help="output .fpg (default: INPUT with .fpg)")
    p.add_argument("--codec", default="lightgaussian", choices=("lightgaussian", "neuralgs"),
                   help="scene codec: lightgaussian (default) or neuralgs (clustered Gaussians with one tiny "
                   "MLP per cluster mapping position to attributes)")
    p.add_argument("--clusters", type=int, help="neuralgs: attribute clusters, one MLP each (default: "
                   "from the scene size and --target-size)")
    p.add_argument("--mlp-width", type=int, help="neuralgs: hidden width of each MLP (default: from "
                   "--quality)")
    p.add_argument("--fit-steps", type=int, help="neuralgs: attribute-fitting steps of the MLPs (1000)")
    p.add_argument("--preset", default="balanced", choices=sorted(PRESETS), help="default: balanced")
    p.add_argument("--prune", type=_parse_fraction, help="fraction of least significant Gaussians removed "
                   "(balanced/max: 0.66)")
    p.add_argument("--sh-degree", type=int, help="SH degree kept (max: one less than the input)")
    p.add_argument("--codebook", type=int, help="VecTree codebook entries (8192; capped at 1/16 of "
                   "the quantized Gaussians)")
    p.add_argument("--kept-bits", type=int, help="bits for the SH of the kept (most significant) Gaussians: "
                   "0 = float16 as LightGaussian, 4-16 = quantized + ANS (default 8)")
    p.add_argument("--finetune-steps", type=int, help="steps of recovery fine-tune and of SH distillation "
                   "(max: 200)")
    p.add_argument("--target-size", type=_parse_mb, metavar="MB",
                   help="search prune ratio and codebook size to land under this many MB (10^6 bytes)")
    p.add_argument("--quality", type=int, choices=range(1, 10), metavar="1..9",
                   help="quality level instead of a preset: 9 = fast (no count reduction), 8 all "
                   "Gaussians at coarser bits, 7..1 keep 85, 70, 60, 50, 38, 34, 28%% at coarser bits")
    p.add_argument("--target-psnr", type=float, metavar="DB", help="the smallest file (quality level) "
                   "whose render PSNR on the evaluation views reaches DB")
    p.add_argument("--reduce", choices=("prune", "merge", "auto"), help="count reducer: significance "
                   "pruning, moment-matched merging, or whichever renders closer (balanced, --quality 1-3: "
                   "auto)")
    p.add_argument("--cameras", help="camera file for significance, fine-tuning and evaluation "
                   "(default: orbit views)")
    p.add_argument("--eval", dest="evaluate", action="store_true", default=True,
                   help="render input and decoded scene on the evaluation views (default)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the evaluation")
    p.add_argument("--eval-views", type=int, default=16, help="orbit views for evaluation (16)")
    p.add_argument("--eval-width", type=int, default=512, help="evaluation render width in pixels (512)")
    p.add_argument("--spz-axes", default=None, help="frame of an SPZ input that does not record one: "
                   "RDF/ply (default) or RUB, or any of LDB..RUF; the file's extension wins")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the fine-tunes from OUTPUT.recover.ckpt/ "
                   "and OUTPUT.distill.ckpt/ after an interruption (same flags and input)")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint the fine-tunes every STEPS steps (default: every 60 s)")
    add_device_arg(p)
    return p


def _resume(args: Any, path: Path, output: Path, options: Any) -> Any:
    """The fine-tunes' checkpoints beside the output; ResumeError when --resume finds none."""
    from fieldpress.scenes.lightgaussian.pipeline import Resume

    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise InputError("--checkpoint-every must be at least 1")
    flags = {k: v for k, v in dataclasses.asdict(options).items()
             if k not in ("evaluate", "eval_views", "eval_width")}
    signature = {"input": str(path.resolve()), "input_bytes": path.stat().st_size, "options": flags,
                 "cameras": args.cameras}
    resume = Resume(output, args.resume, args.checkpoint_every, signature)
    if args.resume and not resume.existing():
        raise ResumeError(f"cannot resume: no fine-tune checkpoint beside {output} "
                          "(rerun without --resume to start over)")
    return resume


def compress_options(args: Any) -> Any:
    """The pipeline's CompressOptions from compress-splat's parsed arguments."""
    from fieldpress.scenes.lightgaussian.pipeline import CompressOptions

    return CompressOptions(preset=args.preset, prune=args.prune, sh_degree=args.sh_degree,
                           codebook=args.codebook, kept_bits=args.kept_bits,
                           finetune_steps=args.finetune_steps, target_bytes=args.target_size, seed=args.seed,
                           evaluate=args.evaluate, eval_views=args.eval_views, eval_width=args.eval_width,
                           spz_axes=args.spz_axes, quality=args.quality, target_psnr=args.target_psnr,
                           reduce=args.reduce)


def output_path(args: Any) -> tuple[Path, Path]:
    """(input, output .fpg) of compress-splat, checked: a .fpg that does not overwrite the input."""
    path = input_file(args.input)
    output = Path(args.output) if args.output else path.with_name(_stem(path) + ".fpg")
    if output.suffix.lower() != ".fpg":
        raise InputError(f"{output}: compress-splat writes .fpg files")
    if output.resolve() == path.resolve():
        raise InputError(f"{output}: the output would overwrite the input")
    return path, output


def compress_splat_command(argv: Sequence[str] | None = None) -> int:
    """compress-splat IN [-o OUT.fpg] [--preset fast|balanced|max] ...: write a .fpg scene."""
    args = build_parser().parse_args(argv)
    run_compress_splat(args).emit(args.json)
    return 0


_NEURALGS_ONLY = ("clusters", "mlp_width", "fit_steps")
_LIGHTGAUSSIAN_ONLY = ("sh_degree", "codebook", "kept_bits", "target_psnr", "reduce", "checkpoint_every")


def _check_codec_flags(args: Any) -> None:
    """Flags of the other codec are refused (one line, exit 2) rather than silently ignored."""
    neural = args.codec == "neuralgs"
    wrong = [n for n in (_LIGHTGAUSSIAN_ONLY if neural else _NEURALGS_ONLY) if getattr(args, n) is not None]
    if neural and args.resume:
        wrong.append("resume")
    if neural and args.preset != "balanced":
        wrong.append("preset")
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise InputError(f"{flags}: not a flag of --codec {args.codec}")


def neuralgs_options(args: Any) -> Any:
    """The NeuralGS pipeline's options from compress-splat's parsed arguments."""
    from fieldpress.scenes.neuralgs.pipeline import NeuralGSOptions

    given = {"prune": args.prune, "clusters": args.clusters, "hidden": args.mlp_width,
             "fit_steps": args.fit_steps, "finetune_steps": args.finetune_steps}
    options = NeuralGSOptions(quality=args.quality, target_bytes=args.target_size, seed=args.seed,
                              evaluate=args.evaluate, eval_views=args.eval_views, eval_width=args.eval_width,
                              spz_axes=args.spz_axes, **{k: v for k, v in given.items() if v is not None})
    options.validate()
    return options


def _run_neuralgs(args: Any) -> RunSummary:
    """compress-splat --codec neuralgs: compress, write atomically, return the summary."""
    from fieldpress.scenes.neuralgs.pipeline import compress

    started = time.perf_counter()
    path, output = output_path(args)
    options = neuralgs_options(args)
    device = resolve_device(args.device)
    show = progress_enabled(args.json)
    cameras = load_cameras(args.cameras) if args.cameras else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compress(path, options, device, cameras=cameras, progress=_logger(show), show_progress=show)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    result.write(output)
    result.seconds = time.perf_counter() - started
    return RunSummary.from_result("compress-splat", result, output)


def run_compress_splat(args: Any) -> RunSummary:
    """compress-splat's work on parsed flags: compress, write the .fpg atomically, return the summary."""
    from fieldpress.scenes.lightgaussian.pipeline import compress

    _check_codec_flags(args)
    if args.codec == "neuralgs":
        return _run_neuralgs(args)
    started = time.perf_counter()
    path, output = output_path(args)
    options = compress_options(args)
    options.resolved()  # bad option values fail before any work
    device = resolve_device(args.device)
    show = progress_enabled(args.json)
    cameras = load_cameras(args.cameras) if args.cameras else None
    resume = _resume(args, path, output, options)
    with warnings.catch_warnings(record=True) as caught:  # reader warnings: one line each
        warnings.simplefilter("always")
        result = compress(path, options, device, cameras=cameras, progress=_logger(show), show_progress=show,
                          resume=resume)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    t = time.perf_counter()
    result.write(output)
    result.metrics["stage_seconds"]["write"] = round(time.perf_counter() - t, 3)
    result.seconds = time.perf_counter() - started
    return RunSummary.from_result("compress-splat", result, output)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".compressed.ply", ".ply", ".spz", ".splat", ".fpg", ".ksplat"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _logger(enabled: bool) -> Any:
    import sys

    def log(stage: str) -> None:
        if enabled:
            print(f"[compress-splat] {stage} ...", file=sys.stderr, flush=True)

    return log


def decompress_splat_command(argv: Sequence[str] | None = None) -> int:
    """decompress-splat IN.fpg -o OUT.ply|.spz|.compressed.ply|.splat: decode a .fpg scene."""
    from fieldpress.scenes.formats import save_scene
    from fieldpress.scenes.lightgaussian.codec import read_fpg

    p = new_parser("decompress-splat", "Decode a .fpg scene written by compress-splat into a standard scene "
                   "file (.ply is the INRIA layout at the stored SH degree).")
    p.add_argument("input", help="a .fpg file")
    p.add_argument("-o", "--output", required=True, help="OUT.ply, OUT.spz, OUT.compressed.ply or OUT.splat")
    p.add_argument("--format", help="output format by name (default: from the suffix)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    path = input_file(args.input)
    scene = read_fpg(path)
    out_bytes = save_scene(scene, args.output, args.format)
    metrics = {"gaussians": scene.n, "sh_degree": scene.sh_degree, "input_bytes": path.stat().st_size}
    RunSummary("decompress-splat", str(path), str(args.output), out_bytes, time.perf_counter() - started,
               "cpu", metrics).emit(args.json)
    return 0


def _fpg_name(path: Path) -> str:
    """compress-splat's default output name: scene.ply -> scene.fpg."""
    return _stem(path) + ".fpg"


def _parse_compress(argv: Sequence[str]) -> Any:
    """compress-splat's flags parsed (for `fieldpress batch`)."""
    return build_parser().parse_args(argv)


# `fieldpress batch --command compress-splat`: the same parser and body, over many scenes
BATCH = BatchCommand("compress-splat", (".ply", ".spz", ".splat"), _fpg_name,
                     _parse_compress, run_compress_splat)

compress_splat_main = entry(compress_splat_command)
decompress_splat_main = entry(decompress_splat_command)

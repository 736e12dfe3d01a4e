"""``fit-video`` (clip -> .fpv) and ``decode-video`` (.fpv -> mp4 or PNG folder)."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fieldpress.cli import (
    BatchCommand,
    RunSummary,
    add_device_arg,
    entry,
    input_file,
    new_parser,
    parse_count,
    parse_crop,
    parse_frames,
    parse_wxh,
)
from fieldpress.errors import InputError
from fieldpress.runtime import cpu_threads, progress_enabled, resolve_device, torch_threads


def _fit_parser():  # noqa: ANN202
    from fieldpress.video.methods import METHODS
    from fieldpress.video.models import MODELS
    from fieldpress.video.presets import PRESETS

    p = new_parser("fit-video", "Fit a neural video representation (NeRV, HNeRV, NeRV++, NIRVANA) to a clip "
                                "and write it as a compact .fpv file.")
    p.add_argument("input", help="any video ffmpeg reads (mp4, mkv, mov, ...)")
    p.add_argument("-o", "--output", help="output .fpv (default: beside the input)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="preview (CPU default: the latent codec, time-capped), hnerv-preview, default (GPU "
                        "default), paper, hinerv-preview, hinerv-paper")
    p.add_argument("--model", choices=sorted([*MODELS, *METHODS]),
                   help="model (preset: latent for preview, hnerv for default and paper)")
    p.add_argument("--size", help="parameters stored (decoder + embeddings), e.g. 0.35M, 1.5M")
    p.add_argument("--target-bpp", type=float,
                   help="land near this many bits/pixel: chooses the size (not with --size), or with --rd "
                        "steers lambda; latent/nirvana: searches lambda")
    p.add_argument("--epochs", type=int, help="fit epochs (preset)")
    p.add_argument("--minutes", type=float,
                   help="cap on fitting (caps --epochs; wall-clock; --model latent and nirvana: a CPU-time "
                        "budget that sets the steps, over --epochs)")
    p.add_argument("--frames", help="frame range START:END (end exclusive)")
    p.add_argument("--resize", help="resize frames to WxH (before --crop)")
    p.add_argument("--crop", help="crop WxH[+X+Y] (centred without +X+Y)")
    p.add_argument("--bits", type=int, help="weight bits, per channel (preset: 6 for preview, else 8)")
    p.add_argument("--embed-bits", type=int, default=6, help="HNeRV embedding bits (default 6)")
    p.add_argument("--prune", type=float, help="prune this fraction of weights, then fine-tune (e.g. 0.4)")
    p.add_argument("--prune-epochs", type=int, help="fine-tune epochs after pruning (default epochs/3)")
    p.add_argument("--qat-epochs", type=int, help="quantization-aware fine-tune epochs at --bits")
    p.add_argument("--cam", action=argparse.BooleanOptionalAction, default=None,
                   help="coordinate-aware modulation (CAM) in every decoder block (preset: on for preview)")
    p.add_argument("--lr", type=float, help="learning rate (default: the model's paper value)")
    p.add_argument("--batch-size", type=int, help="frames per step (default: the model's paper value)")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="fp32 (default) or bf16 (preset)")
    p.add_argument("--patch", type=int, help="hinerv: train on PATCH x PATCH crops (0 = whole frames; "
                                             "default 48, the preset's)")
    p.add_argument("--group-size", type=int, help="nirvana: frames per group (default 4)")
    p.add_argument("--key-every", type=int, help="nirvana: a key group every N groups (default 8)")
    groups = p.add_mutually_exclusive_group()
    groups.add_argument("--adaptive-groups", dest="adaptive_groups", action="store_true", default=True,
                        help="nirvana: start a new (key) group at scene cuts (default)")
    groups.add_argument("--fixed-groups", dest="adaptive_groups", action="store_false",
                        help="nirvana: groups of exactly --group-size frames")
    rd = p.add_mutually_exclusive_group()
    rd.add_argument("--lambda", dest="lmbda", type=float,
                    help="train the rate: loss = distortion + LAMBDA x bpp (latent, nirvana; hnerv, nerv, "
                         "nervpp: an rd stage after the fit, every stored tensor range-coded)")
    rd.add_argument("--quality", type=int,
                    help="train the rate at quality 1..8, fewest bits at 1 (a fixed lambda ladder; "
                         "latent/nirvana default 4)")
    p.add_argument("--rd", action="store_true",
                   help="hnerv, nerv, nervpp, hinerv: train the rate in an rd stage; with --target-bpp, "
                        "lambda is steered to that rate (starting from --lambda/--quality, else quality 8's) "
                        "and the model keeps --size or the preset's size")
    p.add_argument("--rd-epochs", type=int,
                   help="hnerv/nerv/nervpp/hinerv with --rd/--lambda/--quality: rd stage epochs (default "
                        "epochs/3)")
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt/ after an interruption")
    return p


def fit_video_command(argv: Sequence[str] | None = None) -> int:
    """Fit a video INR to a clip and write a .fpv."""
    args = _fit_parser().parse_args(argv)
    summary = run_fit_video(args)
    if summary is not None:
        summary.emit(args.json)
    return 0


def run_fit_video(args: argparse.Namespace) -> RunSummary | None:
    """fit-video's work on parsed flags: fit (resuming with --resume), write the .fpv, return the summary.
    Under torchrun every rank fits; rank 0 alone encodes, measures and writes while the others wait
    at a barrier, and get None (they print nothing)."""
    from fieldpress.engine.distributed import command_group, host_barrier
    from fieldpress.video.io import read_video, show_warnings_as_lines
    from fieldpress.video.pipeline import compress, write

    show_warnings_as_lines()
    path = input_file(args.input)
    device = resolve_device(args.device)
    pre, output = _fit_preset_and_output(args, path, device)
    frames, resize, crop = _clip_selection(args, path, pre)
    t0 = time.perf_counter()
    clip = read_video(path, frames=frames, resize=resize, crop=crop)
    opts = _fit_options(args, pre, clip)
    signature = {"input": str(path.resolve()), "input_bytes": path.stat().st_size, "frames": args.frames,
                 "resize": list(resize) if resize else None, "crop": args.crop}
    with command_group(device) as dist:
        result = compress(clip, opts, device, output=output, resume=args.resume, signature=signature,
                          show_progress=progress_enabled(args.json), input=str(path))
        if result is not None:
            write(result, output)
        host_barrier(dist)
    if result is None:
        return None
    result.seconds = time.perf_counter() - t0
    return RunSummary.from_result("fit-video", result, output)


def _parse_fit(argv: Sequence[str]) -> argparse.Namespace:
    """fit-video's flags parsed (for `fieldpress batch`)."""
    return _fit_parser().parse_args(argv)


def _fpv_name(path: Path) -> str:
    """fit-video's default output name: clip.mp4 -> clip.fpv."""
    from fieldpress.video.fit import default_output

    return default_output(path).name


def _fit_preset_and_output(args: argparse.Namespace, path: Path, device: Any) -> tuple[Any, Path]:
    """The preset (preview on the CPU, default elsewhere) with its --bits filled in, the checked
    output path, and the flags' ranges checked (InputError)."""
    from fieldpress.video.fit import default_output
    from fieldpress.video.presets import preset

    pre = preset(args.preset or ("preview" if device.type == "cpu" else "default"))
    output = Path(args.output) if args.output else default_output(path)
    if output.suffix.lower() != ".fpv":
        raise InputError(f"{output}: the output of fit-video is a .fpv file")
    if output.resolve() == path.resolve():
        raise InputError("the output would overwrite the input")
    if args.bits is None:
        args.bits = pre.bits
    for name in ("bits", "embed_bits"):
        if not 2 <= getattr(args, name) <= 16:
            raise InputError(f"--{name.replace('_', '-')} must be in 2..16")
    if args.prune is not None and not 0 <= args.prune < 1:
        raise InputError("--prune is a fraction in [0, 1)")
    if args.patch is not None and args.patch < 0:
        raise InputError(f"--patch must be 0 (whole frames) or a side in pixels, got {args.patch}")
    if args.epochs is not None and args.epochs < 1:
        raise InputError("--epochs must be at least 1")
    if args.target_bpp is not None and not (math.isfinite(args.target_bpp) and args.target_bpp > 0):
        raise InputError(f"--target-bpp must be a positive number, got {args.target_bpp}")
    if args.target_bpp is not None and args.size and not args.rd:
        raise InputError("--target-bpp chooses the size: give it or --size, not both (or add --rd to steer "
                         "lambda to the target at --size)")
    _check_group_flags(args)
    return pre, output


def _check_group_flags(args: argparse.Namespace) -> None:
    """The range checks of the group and rate-distortion flags (InputError, exit 2)."""
    from fieldpress.codec.rate_control import check_lambda, quality_lambda

    if args.group_size is not None and args.group_size < 1:
        raise InputError(f"--group-size must be at least 1, got {args.group_size}")
    if args.key_every is not None and args.key_every < 1:
        raise InputError(f"--key-every must be at least 1, got {args.key_every}")
    if args.lmbda is not None:
        check_lambda(args.lmbda)
    if args.quality is not None:
        quality_lambda(args.quality)


def _clip_selection(args: argparse.Namespace, path: Path, pre: Any) -> tuple[Any, Any, Any]:
    """(--frames, --resize, --crop) parsed; a preset downscales wide inputs by itself for a weight model
    (the latent codec and NIRVANA fit the clip's own resolution)."""
    from fieldpress.video.fit import downscale_for
    from fieldpress.video.methods import METHODS

    frames = parse_frames(args.frames) if args.frames else None
    resize = parse_wxh(args.resize) if args.resize else None
    crop = parse_crop(args.crop) if args.crop else None
    weight_model = (args.model or pre.model) not in METHODS
    if resize is None and crop is None and pre.max_width is not None and weight_model:
        resize = _preview_resize(path, pre.max_width, downscale_for)
    return frames, resize, crop


def _fit_options(args: argparse.Namespace, pre: Any, clip: Any) -> Any:
    """`FitOptions` from the flags, the preset filling what they leave open."""
    from fieldpress.video.fit import FitOptions
    from fieldpress.video.methods import METHODS

    model = args.model or pre.model
    rd = args.rd or args.lmbda is not None or args.quality is not None
    if model not in METHODS:
        _check_inr_rd_flags(args, rd)
    elif args.rd_epochs is not None:
        raise InputError(f"--rd-epochs applies to hnerv, nerv, nervpp and hinerv, not {model}")
    if args.patch is not None and model != "hinerv":
        raise InputError(f"--patch applies to --model hinerv, not {model}")
    sized_by_target = args.target_bpp is not None and not args.rd
    return FitOptions(
        model=model,
        size=parse_count(args.size) if args.size else (None if sized_by_target else pre.size),
        target_bpp=args.target_bpp,
        epochs=args.epochs or pre.epochs,
        minutes=args.minutes if args.minutes is not None else (
            None if args.epochs else pre.minutes_for(clip.count * clip.width * clip.height)),
        bits=args.bits, embed_bits=args.embed_bits,
        prune=args.prune if args.prune is not None else pre.prune,
        prune_epochs=args.prune_epochs,
        qat_epochs=args.qat_epochs if args.qat_epochs is not None else (0 if rd else pre.qat_epochs),
        precision=args.precision or pre.precision, seed=args.seed, patch=args.patch,
        batch_size=args.batch_size, lr=args.lr,
        cam=pre.cam if args.cam is None else args.cam,
        group_size=args.group_size, key_every=args.key_every, adaptive_groups=args.adaptive_groups,
        lmbda=args.lmbda, quality=args.quality, rd_epochs=args.rd_epochs, rate_trained=bool(args.rd),
    )


def _check_inr_rd_flags(args: argparse.Namespace, rd: bool) -> None:
    """The rate-distortion flags of a `VideoINR` model (InputError, exit 2): --rd-epochs needs --rd,
    --lambda or --quality, and --qat-epochs does not combine with a trained rate (the rd stage already
    trains quantized; a preset's QAT, as hinerv-paper's, is dropped instead)."""
    if args.rd_epochs is not None and not rd:
        raise InputError("--rd-epochs needs --rd, --lambda or --quality")
    if args.rd_epochs is not None and args.rd_epochs < 1:
        raise InputError("--rd-epochs must be at least 1")
    if rd and args.qat_epochs:  # a preset's QAT stage gives way to the rd stage
        raise InputError("--qat-epochs does not combine with --rd/--lambda/--quality: the rd stage trains "
                         "the quantized model itself")


def _preview_resize(path: Path, max_width: int, downscale_for) -> tuple[int, int] | None:  # noqa: ANN001
    """The preview preset's automatic downscale for wide inputs (with a notice)."""
    import av

    from fieldpress.video.io import warn

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None
            w, h = c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height
    except (av.error.FFmpegError, OSError):
        return None  # read_video reports the problem
    size = downscale_for(int(w), int(h), max_width)
    if size is not None:
        warn(f"preview: fitting at {size[0]}x{size[1]} instead of {w}x{h} (use --resize, --crop or "
             "another --preset for full size)")
    return size


def _decode_parser():  # noqa: ANN202
    p = new_parser("decode-video", "Decode a fieldpress video (.fpv) to an mp4 or a folder of PNG frames.")
    p.add_argument("input", help="a .fpv file written by fit-video")
    p.add_argument("-o", "--output", required=True, help="OUT.mp4, or a folder (frame_000000.png ...)")
    p.add_argument("--frames", help="decode only frames START:END (end exclusive; random access)")
    p.add_argument("--lossless", action="store_true", help="lossless RGB mp4 (libx264rgb) instead of CRF 18")
    add_device_arg(p)
    return p


def decode_video_command(argv: Sequence[str] | None = None) -> int:
    """Decode a .fpv to an mp4 or a folder of PNG frames."""
    from fieldpress.video.codec import open_video
    from fieldpress.video.io import is_folder_output, write_video

    args = _decode_parser().parse_args(argv)
    path = input_file(args.input)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    with torch_threads(cpu_threads() if device.type == "cpu" else 0):
        decoder = open_video(path, device=device)
        start, end = parse_frames(args.frames) if args.frames else (0, None)
        end = decoder.frames if end is None else end
        if end > decoder.frames or start >= decoder.frames:
            raise InputError(f"--frames {start}:{end} is outside the file's {decoder.frames} frames")
        t1 = time.perf_counter()
        frames = decoder.decode(start, end)
        decode_s = time.perf_counter() - t1
    nbytes = write_video(frames, args.output, decoder.fps, lossless=args.lossless,
                         first_index=decoder.frame_start + start)
    kind = "png folder" if is_folder_output(args.output) else "mp4"
    RunSummary("decode-video", str(path), str(args.output), nbytes, time.perf_counter() - t0, str(device),
               metrics={"frames": int(frames.shape[0]), "size": f"{decoder.width}x{decoder.height}",
                        "decode_fps": round(frames.shape[0] / max(decode_s, 1e-9), 2), "format": kind,
                        "model": decoder.name}).emit(args.json)
    return 0


# `fieldpress batch --command fit-video`: the same parser and body, over many clips; a checkpoint
# left by an interrupted batch is resumed with --resume
BATCH = BatchCommand("fit-video", (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".y4m"), _fpv_name,
                     _parse_fit, run_fit_video, resume_flag="--resume")

fit_video_main = entry(fit_video_command)
decode_video_main = entry(decode_video_command)

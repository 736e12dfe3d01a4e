"""`fit-image` and `decode-image`: code an image as a neural field into a `.fpi` container and back."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fieldpress.cli import (
    BatchCommand,
    RunSummary,
    add_device_arg,
    entry,
    input_file,
    new_parser,
    parse_count,
)
from fieldpress.errors import InputError
from fieldpress.runtime import progress_enabled, resolve_device

if TYPE_CHECKING:
    from fieldpress.fields.pipeline import ImageOptions

__all__ = ["decode_image_command", "decode_image_main", "fit_image_command", "fit_image_main"]

DEFAULT_PARAMS = "60k"


def _fit_parser():
    from fieldpress.fields.pipeline import AUTO, DEFAULT_FIELD, DEFAULT_RGB8, model_names

    p = new_parser("fit-image", "Fit an overfitted latent-grid codec or a neural field to an image and "
                   "write it as a compact .fpi file.")
    p.add_argument(
        "input", help="image file (PNG, JPEG, ...; 8 or 16 bits; grey, RGB, with or without alpha)"
    )
    p.add_argument("-o", "--output", help="output .fpi (default: INPUT with .fpi)")
    p.add_argument("--model", default=AUTO, choices=[AUTO, *model_names()],
                   help=f"codec/architecture (default {AUTO}: {DEFAULT_RGB8} for 8-bit RGB images, where it "
                   f"beats JPEG; {DEFAULT_FIELD} for grey, alpha and 16-bit images, which {DEFAULT_RGB8} "
                   "does not code)")
    p.add_argument(
        "--params",
        default=DEFAULT_PARAMS,
        help=f"field models: learned-parameter budget, e.g. 60k or 0.2M (default {DEFAULT_PARAMS})",
    )
    p.add_argument("--steps", type=int, help="optimizer steps (fields: default 2000, or what --minutes "
                   "allows; latent: default what --minutes allows)")
    p.add_argument("--minutes", type=float,
                   help="time budget for the fit (fields: wall time; latent: CPU time, default 5)")
    p.add_argument(
        "--bits",
        type=int,
        default=6,
        help="field models: weight quantization bits, 2-16 (default 6: at equal bytes a larger field at "
        "6 bits beat a smaller one at 8 on every Kodak image and model measured)",
    )
    rd = p.add_argument_group("rate-distortion models (--model latent)")
    rd.add_argument("--lambda", dest="lmbda", type=float,
                    help="loss = MSE + LAMBDA x bpp (larger: fewer bits; 0.04 .. 3e-4)")
    rd.add_argument("--quality", type=int, help="1 (fewest bits) .. 8, a fixed lambda ladder (default 4)")
    rd.add_argument("--target-bpp", type=float, help="search lambda for this many bits per pixel "
                    "(short probe fits, then the full fit)")
    rc = p.add_argument_group("RECOMBINER (--model recombiner)")
    rc.add_argument("--prior", help="prior .safetensors (default: the one shipped with fieldpress)")
    rc.add_argument("--kl-budget", type=float, help="bits per pixel spent on REC indices (default 0.5)")
    rc.add_argument("--block-bits", type=int, help="bits per REC block: 2^B candidates (default 16)")
    rc.add_argument("--finetune-chunks", type=int,
                    help="code the blocks in this many chunks, fine-tuning after each (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for a CPU fit (default: $OMP_NUM_THREADS, else 1: small batches run fastest)",
    )
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT.ckpt/ after an interruption (same flags and image)")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint every STEPS steps (default: every 60 s)")
    add_device_arg(p)
    return p


def _fpi_output(src: Path, output: str | None) -> Path:
    """-o, or INPUT with .fpi; a folder is refused (fit-image writes one file)."""
    path = Path(output) if output else src.with_suffix(".fpi")
    if path.is_dir() or str(output or "").endswith("/"):
        raise InputError(f"{path}: -o must be a file path (.fpi)")
    return path


def _image_options(args: argparse.Namespace) -> ImageOptions:
    """The pipeline's options from the parsed flags (InputError, exit 2, on bad values)."""
    from fieldpress.fields.pipeline import ImageOptions

    return ImageOptions(model=args.model, params=parse_count(args.params), steps=args.steps,
                        minutes=args.minutes, bits=args.bits, seed=args.seed, threads=args.threads,
                        lmbda=args.lmbda, quality=args.quality, target_bpp=args.target_bpp,
                        prior=args.prior, kl_budget=args.kl_budget, block_bits=args.block_bits,
                        finetune_chunks=args.finetune_chunks)


def fit_image_command(argv: Sequence[str] | None = None) -> int:
    """fit-image IN [-o OUT.fpi] [--model ...] [--params N] [--steps N] [--minutes M] [--bits B]."""
    args = _fit_parser().parse_args(argv)
    run_fit_image(args).emit(args.json)
    return 0


def run_fit_image(args: argparse.Namespace) -> RunSummary:
    """fit-image's work on parsed flags: fit, write the .fpi atomically, return the summary."""
    from fieldpress.fields.pipeline import compress

    src = input_file(args.input)
    output = _fpi_output(src, args.output)
    options = _image_options(args)
    device = resolve_device(args.device)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise InputError("--checkpoint-every must be at least 1")
    if output.resolve() == src.resolve():
        raise InputError("the output would overwrite the input")
    result = compress(src, options, device, progress=progress_enabled(args.json), checkpoint=output,
                      resume=args.resume, checkpoint_every_steps=args.checkpoint_every)
    result.write(output)
    return RunSummary.from_result("fit-image", result, output)


def _fpi_name(path: Path) -> str:
    """fit-image's default output name: photo.png -> photo.fpi."""
    return path.with_suffix(".fpi").name


def _parse_fit(argv: Sequence[str]) -> argparse.Namespace:
    """fit-image's flags parsed (for `fieldpress batch`)."""
    return _fit_parser().parse_args(argv)


def _decode_parser():
    p = new_parser("decode-image", "Decode a .fpi image field back to a PNG in the original size and mode.")
    p.add_argument("input", help=".fpi file written by fit-image")
    p.add_argument(
        "-o", "--output", help="output PNG (default: INPUT.decoded.png, never the original's name)"
    )
    p.add_argument("--prior", help="recombiner files: the prior they were coded with (default: the shipped "
                   "one)")
    add_device_arg(p)
    return p


def _png_output(src: Path, output: str | None) -> Path:
    path = Path(output) if output else src.with_suffix(".decoded.png")
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: decode-image writes PNG; give an output ending in .png")
    return path


def decode_image_command(argv: Sequence[str] | None = None) -> int:
    """decode-image IN.fpi -o OUT.png: render the field back to a PNG of the original size and mode."""
    from fieldpress.fields.image_io import write_png
    from fieldpress.fields.pipeline import decode

    args = _decode_parser().parse_args(argv)
    start = time.perf_counter()
    src = input_file(args.input)
    output = _png_output(src, args.output)
    device = resolve_device(args.device)
    decoded = decode(src, device, **({"prior": args.prior} if args.prior else {}))
    n_bytes = write_png(output, decoded.pixels, decoded.info)
    info = decoded.info
    metrics = {"codec": decoded.codec, "size": f"{info.width}x{info.height}", "mode": info.mode,
               "bit_depth": info.bit_depth, "psnr_at_encode": decoded.header.get("psnr")}
    RunSummary("decode-image", str(src), str(output), n_bytes, time.perf_counter() - start, str(device),
               metrics=metrics).emit(args.json)
    return 0


# `fieldpress batch --command fit-image`: the same parser and body, over many images
BATCH = BatchCommand("fit-image", (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"),
                     _fpi_name, _parse_fit, run_fit_image)

fit_image_main = entry(fit_image_command)
decode_image_main = entry(decode_image_command)

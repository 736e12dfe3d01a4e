"""`fit-image` and `decode-image`: code an image as a neural field into a `.fpi` container and back."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from fieldpress.cli import RunSummary, add_device_arg, entry, input_file, new_parser, parse_count
from fieldpress.errors import InputError
from fieldpress.runtime import cpu_threads, progress_enabled, resolve_device

__all__ = ["decode_image_command", "decode_image_main", "fit_image_command", "fit_image_main"]

DEFAULT_PARAMS = "60k"


def _fit_parser():
    from fieldpress.fields.presets import MODELS

    p = new_parser("fit-image", "Fit a neural field to an image and write it as a compact .fpi file.")
    p.add_argument(
        "input", help="image file (PNG, JPEG, ...; 8 or 16 bits; grey, RGB, with or without alpha)"
    )
    p.add_argument("-o", "--output", help="output .fpi (default: INPUT with .fpi)")
    p.add_argument("--model", default="cam-ffn", choices=list(MODELS), help="architecture (default cam-ffn)")
    p.add_argument(
        "--params",
        default=DEFAULT_PARAMS,
        help=f"learned-parameter budget, e.g. 60k or 0.2M (default {DEFAULT_PARAMS})",
    )
    p.add_argument("--steps", type=int, help="optimizer steps (default 2000, or what --minutes allows)")
    p.add_argument("--minutes", type=float, help="wall-time budget for the fit")
    p.add_argument(
        "--bits",
        type=int,
        default=6,
        help="weight quantization bits, 2-16 (default 6: at equal bytes a larger field at 6 bits "
        "beat a smaller one at 8 on every Kodak image and model measured)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for a CPU fit (default: $OMP_NUM_THREADS, else 1: small batches run fastest)",
    )
    add_device_arg(p)
    return p


def fit_image_command(argv: Sequence[str] | None = None) -> int:
    """fit-image IN [-o OUT.fpi] [--model ...] [--params N] [--steps N] [--minutes M] [--bits B]."""
    import torch

    from fieldpress.codec.container import write_container
    from fieldpress.fields.image import decode_model, encode_image, fit_image, image_psnr, render
    from fieldpress.fields.image_io import read_image
    from fieldpress.fields.presets import plan_model

    args = _fit_parser().parse_args(argv)
    start = time.perf_counter()
    src = input_file(args.input)
    output = Path(args.output) if args.output else src.with_suffix(".fpi")
    if output.is_dir() or str(args.output or "").endswith("/"):
        raise InputError(f"{output}: -o must be a file path (.fpi)")
    budget = parse_count(args.params)
    if not 2 <= args.bits <= 16:
        raise InputError(f"--bits must be in 2..16, got {args.bits}")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be positive, got {args.steps}")
    if args.minutes is not None and not args.minutes > 0:
        raise InputError(f"--minutes must be positive, got {args.minutes}")
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(args.threads, small_batches=True))
    array, info = read_image(src)
    plan = plan_model(args.model, budget, info.width, info.height, info.channels)
    torch.manual_seed(args.seed)

    fit = fit_image(
        array,
        info,
        plan,
        steps=args.steps,
        minutes=args.minutes,
        seed=args.seed,
        device=device,
        show_progress=progress_enabled(args.json),
        started=start,
    )
    psnr_float = image_psnr(array, render(fit.model, info), info.bit_depth)
    streams, header = encode_image(fit.model, plan, info, bits=args.bits, seed=args.seed)
    # measure exactly what the decoder will reproduce: the dequantized model, rendered on the CPU
    decoded, _ = decode_model(header, streams)
    recon = render(decoded, info, "cpu")
    psnr = image_psnr(array, recon, info.bit_depth)
    header.update(
        {"psnr": round(psnr, 4), "psnr_channels": f"{info.mode} at {info.bit_depth} bits", "steps": fit.steps}
    )
    n_bytes = write_container(output, "image", header, streams)
    bpp = n_bytes * 8.0 / (info.width * info.height)
    RunSummary(
        "fit-image",
        str(src),
        str(output),
        n_bytes,
        time.perf_counter() - start,
        str(device),
        metrics={
            "psnr": round(psnr, 3),
            "psnr_before_quant": round(psnr_float, 3),
            "psnr_channels": info.mode,
            "psnr_bit_depth": info.bit_depth,
            "bpp": round(bpp, 4),
            "model": plan.name,
            "params": plan.n_params,
            "steps": fit.steps,
            "fit_seconds": round(fit.seconds, 2),
            "size": f"{info.width}x{info.height}",
        },
    ).emit(args.json)
    return 0


def decode_image_command(argv: Sequence[str] | None = None) -> int:
    """decode-image IN.fpi -o OUT.png: render the field back to a PNG of the original size and mode."""
    from fieldpress.codec.container import open_container
    from fieldpress.fields.image import ImageDecoder
    from fieldpress.fields.image_io import write_png

    p = new_parser("decode-image", "Decode a .fpi image field back to a PNG in the original size and mode.")
    p.add_argument("input", help=".fpi file written by fit-image")
    p.add_argument(
        "-o", "--output", help="output PNG (default: INPUT.decoded.png, never the original's name)"
    )
    add_device_arg(p)
    args = p.parse_args(argv)
    start = time.perf_counter()
    src = input_file(args.input)
    output = Path(args.output) if args.output else src.with_suffix(".decoded.png")
    if output.suffix.lower() != ".png":
        raise InputError(f"{output}: decode-image writes PNG; give an output ending in .png")
    device = resolve_device(args.device)
    container = open_container(src)
    if container.kind != "image":
        raise InputError(
            f"{src}: a {container.kind} container, not an image (use the {container.kind} decoder)"
        )
    decoder = ImageDecoder(container)
    pixels = decoder.image(device)
    n_bytes = write_png(output, pixels, decoder.info)
    info = decoder.info
    RunSummary(
        "decode-image",
        str(src),
        str(output),
        n_bytes,
        time.perf_counter() - start,
        str(device),
        metrics={
            "size": f"{info.width}x{info.height}",
            "mode": info.mode,
            "bit_depth": info.bit_depth,
            "psnr_at_encode": container.header.get("psnr"),
        },
    ).emit(args.json)
    return 0


fit_image_main = entry(fit_image_command)
decode_image_main = entry(decode_image_command)

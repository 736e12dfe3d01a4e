"""`render-splat` (render a scene file to a PNG: one orbit view, a contact sheet of several, or the
cameras of a file) and `fieldpress convert` (between every scene format, through GaussianScene)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.cli import RunSummary, add_device_arg, entry, input_file, new_parser
from fieldpress.errors import InputError
from fieldpress.io import atomic_path
from fieldpress.runtime import resolve_device

MAX_SIDE = 8192  # largest rendered image side, in pixels
_VIEWS = re.compile(r"^\s*orbit(?::(\d+))?\s*$")


def parse_views(text: str) -> int:
    """'orbit:8' -> 8 views; 'orbit' -> 16 (the evaluation set of DESIGN.md)."""
    match = _VIEWS.match(text or "")
    if not match:
        raise InputError(f"--views expects orbit:N (e.g. orbit:16), got {text!r}")
    n = int(match.group(1) or 16)
    if not 1 <= n <= 1024:
        raise InputError(f"--views: the number of views must be 1-1024, got {n}")
    return n


def grid_shape(n: int) -> tuple[int, int]:
    """(columns, rows) of the contact sheet for n views: ceil(sqrt(n)) columns."""
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def contact_sheet(images: Sequence[np.ndarray]) -> np.ndarray:
    """Tile uint8 HxWx3 images row-major into a fixed grid (cells as large as the largest image)."""
    cols, rows = grid_shape(len(images))
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    sheet = np.zeros((rows * cell_h, cols * cell_w, 3), np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * cell_h: r * cell_h + im.shape[0], c * cell_w: c * cell_w + im.shape[1]] = im
    return sheet


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.detach().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _render_parser() -> Any:
    parser = new_parser("render-splat", "Render a Gaussian Splatting scene (any readable format) to a PNG: "
                        "orbit views around the scene, or the cameras of a file.")
    parser.add_argument("input", help="scene file: .ply, .compressed.ply, .spz, .splat, .fpg")
    parser.add_argument("-o", "--output", required=True, help="output image (PNG)")
    parser.add_argument("--views", default=None, help="orbit:N views around the up axis (default orbit:1)")
    parser.add_argument("--width", type=int, default=512, help="image width in pixels (default 512)")
    parser.add_argument("--cameras", default=None, help="render exactly these cameras: INRIA cameras.json, "
                        "NeRF transforms.json, COLMAP cameras/images .bin/.txt or folder")
    parser.add_argument("--save-cameras", default=None, help="write the cameras used (INRIA cameras.json)")
    parser.add_argument("--sh-degree", type=int, default=None, help="evaluate SH up to this degree (0-3)")
    parser.add_argument("--background", default="0,0,0", help="background R,G,B in [0,1] (default black)")
    parser.add_argument("--format", default=None, help="input format (default: detected)")
    parser.add_argument("--spz-axes", default=None, help=SPZ_AXES_HELP)
    parser.add_argument("--up", default=None, help="world up axis for orbit views: -y (INRIA/COLMAP, the "
                        "default), +y, +z, -z, +x, -x or X,Y,Z")
    add_device_arg(parser)
    return parser


_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def parse_up(text: str) -> tuple[float, float, float]:
    """'-y' -> (0,-1,0); '0,0,1' -> (0,0,1)."""
    t = text.strip().lower()
    if len(t) in (1, 2) and t[-1] in _AXES and t[:-1] in ("", "+", "-"):
        sign = -1.0 if t.startswith("-") else 1.0
        x, y, z = (sign * v for v in _AXES[t[-1]])
        return x, y, z
    try:
        vec = [float(v) for v in t.split(",")]
    except ValueError:
        vec = []
    if len(vec) != 3 or not all(math.isfinite(v) for v in vec) or not any(vec):
        raise InputError(f"--up expects an axis such as -y or +z, or X,Y,Z, got {text!r}")
    return vec[0], vec[1], vec[2]


SPZ_AXES_HELP = ("frame of an SPZ that does not record one: RDF/ply (default: what Niantic's ply_to_spz "
                 "and splat-transform write) or RUB (the SPZ README's), or any of LDB..RUF; the "
                 "file's coordinate-system extension wins when present")


def load_with_warnings(path: Path, fmt: str | None, spz_axes: str | None = None) -> Any:
    """load_scene, with the readers' warnings (e.g. trailing bytes) printed as one line each."""
    import sys
    import warnings

    from fieldpress.scenes.formats import load_scene

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_scene(path, fmt, **_spz_option(path, fmt, spz_axes))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return scene


def _spz_option(path: Path, fmt: str | None, spz_axes: str | None) -> dict[str, Any]:
    """{"axes": ...} when --spz-axes is given and the input is an SPZ; the flag is ignored otherwise."""
    if spz_axes is None:
        return {}
    from fieldpress.scenes.formats import detect_format, get_format
    from fieldpress.scenes.formats.spz import axes_name

    axes_name(spz_axes)
    name = get_format(fmt).name if fmt else detect_format(path).name
    return {"axes": spz_axes} if name == "spz" else {}


def axes_note(scene: Any) -> str | None:
    """"RDF (extension)" etc. for a scene read from SPZ: which frame its data was read in, and why."""
    info = scene.meta.get("spz") or {}
    return f"{info['axes']} ({info['axes_from']})" if "axes" in info else None


def _background(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--background expects R,G,B in [0,1], got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise InputError(f"--background expects R,G,B in [0,1], got {text!r}")
    return values[0], values[1], values[2]


def render_splat_command(argv: Sequence[str] | None = None) -> int:
    """Render IN to OUT.png; several views become a contact sheet in a ceil(sqrt(n))-column grid."""
    from fieldpress.scenes.camera_files import load_cameras, write_inria_json
    from fieldpress.scenes.cameras import orbit
    from fieldpress.scenes.renderer import render

    args = _render_parser().parse_args(argv)
    t0 = time.perf_counter()
    path = input_file(args.input)
    if not 16 <= args.width <= MAX_SIDE:
        raise InputError(f"--width must be 16-{MAX_SIDE}, got {args.width}")
    if args.sh_degree is not None and not 0 <= args.sh_degree <= 3:
        raise InputError(f"--sh-degree must be 0-3, got {args.sh_degree}")
    if args.cameras and args.views:
        raise InputError("give either --views or --cameras, not both")
    background = _background(args.background)
    out = Path(args.output)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise InputError(f"{out}: the output must be an image (.png, .jpg, .webp)")
    up = parse_up(args.up) if args.up else None
    device = resolve_device(args.device)
    scene = load_with_warnings(path, args.format, args.spz_axes)
    if args.cameras:
        if args.up:
            raise InputError("--up applies to orbit views, not to --cameras")
        cameras = [c.scaled(args.width) for c in load_cameras(args.cameras)]
        tallest = max(c.height for c in cameras)
        if tallest > MAX_SIDE:
            raise InputError(f"--cameras: at width {args.width} a view would be {tallest} px tall "
                             f"(aspect ratio too extreme; the limit is {MAX_SIDE})")
    else:
        cameras = orbit(scene, parse_views(args.views or "orbit:1"), width=args.width, up=up)
    scene = scene.to(device)
    t_render = time.perf_counter()
    images = []
    with torch.no_grad():
        for cam in cameras:
            rgb, _ = render(scene, cam, sh_degree=args.sh_degree, background=background)
            images.append(to_uint8(rgb))
    per_view = (time.perf_counter() - t_render) / len(cameras)
    sheet = images[0] if len(images) == 1 else contact_sheet(images)
    from PIL import Image

    with atomic_path(out) as tmp:
        Image.fromarray(sheet).save(tmp, format=Image.registered_extensions()[out.suffix.lower()])
    if args.save_cameras:
        write_inria_json(cameras, args.save_cameras)
    cols, rows = grid_shape(len(cameras))
    summary = RunSummary("render-splat", str(path), str(out), out.stat().st_size, time.perf_counter() - t0,
                         str(device), metrics={
                             "gaussians_in": scene.n, "views": len(cameras), "grid": f"{cols}x{rows}",
                             "width": cameras[0].width, "height": cameras[0].height,
                             "seconds_per_view": round(per_view, 3),
                             "sh_degree": scene.sh_degree if args.sh_degree is None
                             else min(args.sh_degree, scene.sh_degree)})
    summary.emit(args.json)
    return 0


def convert_command(argv: Sequence[str] | None = None) -> int:
    """`fieldpress convert IN OUT [--format F]`: read any scene format, write the one OUT's suffix names."""
    from fieldpress.scenes.formats import formats, save_scene

    known = ", ".join(sorted(f"{f.name} ({'/'.join(f.suffixes)})" for f in formats().values() if f.write))
    parser = new_parser("fieldpress convert", f"Convert a Gaussian Splatting scene between formats: {known}.")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--format", default=None, help="output format by name (default: from OUT's suffix)")
    parser.add_argument("--input-format", default=None, help="input format (default: detected)")
    parser.add_argument("--sh-degree", type=int, default=None, help="truncate SH to this degree (0-3)")
    parser.add_argument("--spz-version", type=int, default=None, choices=(2, 3, 4),
                        help="SPZ version to write (default 3: gzip, readable everywhere)")
    parser.add_argument("--spz-axes", default=None, help=SPZ_AXES_HELP)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = input_file(args.input)
    scene = load_with_warnings(path, args.input_format, args.spz_axes)
    n_in = scene.n
    if args.sh_degree is not None:
        if not 0 <= args.sh_degree <= 3:
            raise InputError(f"--sh-degree must be 0-3, got {args.sh_degree}")
        scene = scene.with_sh_degree(min(args.sh_degree, scene.sh_degree))
    from fieldpress.scenes.formats import writer_for

    fmt = writer_for(args.output, args.format)
    options: dict[str, Any] = {}
    if args.spz_version is not None:
        if fmt.name != "spz":
            raise InputError("--spz-version applies to SPZ output only")
        options["version"] = args.spz_version
    size = save_scene(scene, args.output, fmt.name, **options)
    seconds = time.perf_counter() - t0
    summary = RunSummary("convert", str(path), str(args.output), size, seconds, "cpu", metrics={
        "format": fmt.name, "gaussians_in": n_in, "gaussians_out": scene.n, "sh_degree": scene.sh_degree,
        "spz_axes": axes_note(scene),
        "bytes_per_gaussian": round(size / n_in, 3) if n_in else None})  # DESIGN: over the input count
    summary.emit(args.json)
    return 0


render_splat_main = entry(render_splat_command)
convert_main = entry(convert_command)

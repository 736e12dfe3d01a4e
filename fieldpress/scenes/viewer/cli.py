"""`view-splat`: look at a Gaussian scene (or two, side by side) in the browser, or export a static viewer.

    view-splat scene.ply                       # serve http://127.0.0.1:8080/ until Ctrl-C
    view-splat scene.ply --compare scene.fpg   # A/B toggle or side by side, sizes, render PSNR button
    view-splat scene.ply --export site/        # static folder: index.html + scene.viser, no Python needed
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fieldpress.cli import RunSummary, entry, input_file, new_parser
from fieldpress.errors import InputError


def _parser() -> Any:
    parser = new_parser("view-splat", "Show a Gaussian Splatting scene (any readable format, .fpg included) "
                        "in a browser viewer built on viser; compare it with another file, or export a "
                        "static viewer.")
    add = parser.add_argument
    add("input", help="scene file: INRIA .ply, compressed .ply, .spz, .splat, .fpg ...")
    add("--compare", metavar="OTHER", help="a second scene to compare with (e.g. the decoded file)")
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    add("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    add("--open", action="store_true", help="open the page in the default web browser")
    add("--export", metavar="DIR", help="write a static viewer folder instead of serving")
    add("--format", default=None, help="read IN with this format instead of detecting it")
    add("--chunk", type=int, default=131_072, help="Gaussians per upload message (progress steps)")
    add("--psnr-width", type=int, default=256, help="render width of the PSNR button (pixels)")
    return parser


def _load(path: Path, fmt: str | None = None) -> Any:
    from fieldpress.scenes import load_scene

    return load_scene(path, format=fmt)


def _install_sigterm() -> Any:
    """SIGTERM behaves like Ctrl-C (clean stop); returns the previous handler (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, _raise)


def view_splat_command(argv: Sequence[str] | None = None) -> int:
    """Serve the viewer until Ctrl-C (exit 0) or write a static export; exit 2 on bad input or busy port."""
    args = _parser().parse_args(argv)
    path = input_file(args.input)
    other = input_file(args.compare) if args.compare else None
    if args.chunk < 1:
        raise InputError("--chunk must be positive")
    if not 64 <= args.psnr_width <= 4096:
        raise InputError("--psnr-width must be 64-4096")
    if args.export:
        return _export(args, path)
    return _serve(args, path, other)


def _export(args: Any, path: Path) -> int:
    from fieldpress.scenes.viewer.export import export_static

    if args.compare:
        raise InputError("--export writes one scene; drop --compare")
    t0 = time.perf_counter()
    scene = _load(path, args.format)
    result = export_static(scene, args.export, source_name=path.name)
    summary = RunSummary("view-splat", str(path), str(result.directory), result.bytes,
                         time.perf_counter() - t0, "cpu",
                         metrics={"gaussians_in": scene.n, "files": [p.name for p in result.files]})
    if args.json:
        summary.emit(True)
    else:
        print(f"view-splat: wrote {result.directory}/index.html + scene.viser ({result.bytes:,} bytes, "
              f"{scene.n:,} Gaussians); serve the folder with any static web server, e.g. "
              f"`python -m http.server -d {result.directory}`")
    return 0


def _serve(args: Any, path: Path, other: Path | None) -> int:
    from fieldpress.scenes.viewer.server import SplatViewer, ViewerConfig

    t0 = time.perf_counter()
    config = ViewerConfig(host=args.host, port=args.port, chunk=args.chunk, psnr_width=args.psnr_width)
    viewer = SplatViewer(config)
    previous = _install_sigterm()
    try:
        url = viewer.start()
        if not args.json:
            print(f"view-splat: serving at {url} (Ctrl-C to stop)", flush=True)
        if args.open:
            webbrowser.open(url)
        a = viewer.load("A", path, lambda p: _load(p, args.format))
        if other is not None:
            viewer.load("B", other, _load)
        viewer.show()
        ready = time.perf_counter() - t0
        metrics: dict[str, Any] = {"url": url, "port": viewer.port, "gaussians_in": a.scene.n,
                                   "load_seconds": round(a.load_seconds, 3)}
        if other is not None:
            b = viewer.scenes[1]
            metrics.update(compare=str(b.path), compare_bytes=b.file_bytes, gaussians_compare=b.scene.n,
                           size_ratio=round(a.file_bytes / max(b.file_bytes, 1), 4))
        summary = RunSummary("view-splat", str(path), url, a.file_bytes, ready, "browser (WebGL)",
                             metrics=metrics)
        if args.json:
            summary.emit(True)
        else:
            names = f"{path.name} vs {other.name}" if other is not None else path.name
            n = sum(s.scene.n for s in viewer.scenes)
            print(f"view-splat: {names} ready ({n:,} Gaussians, {ready:.1f} s) at {url}", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("view-splat: stopped", file=sys.stderr, flush=True)
        return 0
    finally:
        viewer.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


view_splat_main = entry(view_splat_command)

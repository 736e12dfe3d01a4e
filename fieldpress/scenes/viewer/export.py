"""`view-splat IN --export DIR`: a static folder (index.html + scene.viser) that any static web server
shows without Python.

viser can record its scene messages into a `.viser` file, and its prebuilt client (one self-contained
HTML file shipped inside the viser wheel; its licence file is copied beside it) plays such a
recording back from `?playbackPath=`.
So the export needs no third-party JavaScript vendored here: `index.html` is viser's client with a
two-line script that points it at `scene.viser` beside it.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldpress.errors import InputError
from fieldpress.io import atomic_path, atomic_write_bytes, atomic_write_text
from fieldpress.scenes.viewer.camera import initial_view, set_initial_camera
from fieldpress.scenes.viewer.splats import add_splats, iter_chunks

DATA_NAME = "scene.viser"
# Runs before viser's app reads the URL: default the playback file to the recording beside the page.
_PLAYBACK_SCRIPT = (
    "<script>(function(){var u=new URL(window.location.href);"
    "if(!u.searchParams.has('playbackPath')){u.searchParams.set('playbackPath','%s');"
    "window.history.replaceState(null,'',u.toString());}})();</script>"
)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the folder, its files and their total size."""

    directory: Path
    files: tuple[Path, ...]
    bytes: int
    gaussians: int


def viser_client_html() -> Path:
    """The prebuilt viser client page inside the installed viser package."""
    try:
        import viser
    except ImportError:
        raise InputError("view-splat --export needs viser: pip install 'fieldpress[viewer]'") from None
    path = Path(viser.__file__).resolve().parent / "client" / "build" / "index.html"
    if not path.is_file():
        raise InputError(f"this viser installation has no prebuilt client ({path} missing)")
    return path


def record_scene(scene: Any, chunk: int = 131_072) -> bytes:
    """The scene (and a framing initial camera) as a viser `.viser` recording."""
    import viser

    with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner with its URL
        server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        serializer = server.get_scene_serializer()
        server.gui.configure_theme(dark_mode=True, show_logo=False)  # recorded too: a dark canvas
        view = initial_view(scene)
        set_initial_camera(server, view)
        for i, part in enumerate(iter_chunks(scene, chunk)):
            add_splats(server.scene, f"/A/splats_{i:04d}", part)
        return bytes(serializer.serialize())
    finally:
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints "Server stopped" on stdout
            server.stop()


def export_static(scene: Any, directory: str | Path, source_name: str = "scene") -> ExportResult:
    """Write `directory/index.html` + `directory/scene.viser` (+ a LICENSE note for the viser client)."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    client = viser_client_html()
    page = client.read_text(encoding="utf-8")
    head_end = page.find("</head>")
    if head_end < 0:
        raise InputError(f"{client}: unexpected viser client page (no </head>)")
    title = f"<title>{html.escape(source_name)} (fieldpress view-splat)</title>"
    page = page[:head_end] + (_PLAYBACK_SCRIPT % DATA_NAME) + title + page[head_end:]

    data_bytes = atomic_write_bytes(out / DATA_NAME, record_scene(scene))
    page_bytes = atomic_write_text(out / "index.html", page)
    import viser

    licence = out / "VISER_LICENSE.txt"
    meta = Path(viser.__file__).resolve().parent
    found = next((p for p in meta.parent.glob("viser-*.dist-info/licenses/LICENSE*")), None) or next(
        (p for p in meta.parent.glob("viser-*.dist-info/LICENSE*")), None)
    if found is not None:
        with atomic_path(licence) as tmp:
            shutil.copyfile(found, tmp)
    else:
        atomic_write_text(licence, "index.html is the viser web client "
                                   "(https://github.com/viser-project/viser); see its repository for the "
                                   "licence.\n")
    info = {"source": source_name, "gaussians": int(scene.n), "sh_degree": int(scene.sh_degree),
            "viser": viser.__version__, "colours": "SH DC baked (view-independent)"}
    atomic_write_text(out / "fieldpress-export.json", json.dumps(info, indent=2) + "\n")
    files = (out / "index.html", out / DATA_NAME, licence, out / "fieldpress-export.json")
    for f in files:  # atomic writes create private files; a web server must be able to read them
        os.chmod(f, 0o644)
    total = data_bytes + page_bytes + licence.stat().st_size + (out / "fieldpress-export.json").stat().st_size
    return ExportResult(out, files, total, int(scene.n))

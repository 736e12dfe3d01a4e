"""The `view-splat` server: one or two Gaussian scenes in a viser page, streamed in chunks with progress,
plus the compare panel (sizes, counts, ratio, A/B toggle or side by side, render PSNR from the view).

The browser renders with WebGL (viser's splat renderer), so this process needs no GPU; the PSNR
button renders both scenes with our own renderer from the browser's current camera.
"""

from __future__ import annotations

import contextlib
import errno
import io
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fieldpress.errors import InputError
from fieldpress.scenes.viewer.camera import InitialView, camera_from_viser, initial_view, set_initial_camera
from fieldpress.scenes.viewer.splats import add_splats, iter_chunks, viser_supports_sh

LAYOUTS = ("A", "B", "side by side")


@dataclass(frozen=True)
class ViewerConfig:
    """How the viewer serves: address, chunking of the splat upload, PSNR render width."""

    host: str = "127.0.0.1"
    port: int = 8080
    chunk: int = 131_072  # Gaussians per message: progressive display, bounded memory per step
    psnr_width: int = 256  # our CPU renderer needs seconds to minutes per view; CUDA is used when present
    title: str = "fieldpress view-splat"


@dataclass(frozen=True)
class LoadedScene:
    """A scene and where it came from: UI label, file, its size, and how long it took to read."""

    label: str
    path: Path
    file_bytes: int
    scene: Any  # GaussianScene
    load_seconds: float

    @property
    def name(self) -> str:
        return self.path.name


def check_port_free(host: str, port: int) -> None:
    """Raise InputError when `host:port` cannot be bound (viser would silently move to another port)."""
    if port == 0:
        return
    if not 0 < port < 65536:
        raise InputError(f"--port must be 1-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is fine
        try:
            sock.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"port {port} on {host} is already in use (pick another with --port)") \
                    from None
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def url_for(host: str, port: int) -> str:
    """The address to open: wildcard hosts are reached through localhost."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def human_bytes(n: int) -> str:
    """1234567 -> '1.18 MiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def compare_table(a: LoadedScene, b: LoadedScene) -> str:
    """The compare panel: files, bytes, Gaussians, bytes per input Gaussian, SH degree, ratios."""

    def row(name: str, fa: str, fb: str) -> str:
        return f"| {name} | {fa} | {fb} |"

    lines = [
        f"**A**: {a.name}  ", f"**B**: {b.name}", "",
        "| | A | B |", "|---|---|---|",
        row("size", human_bytes(a.file_bytes), human_bytes(b.file_bytes)),
        row("bytes", f"{a.file_bytes:,}", f"{b.file_bytes:,}"),
        row("Gaussians", f"{a.scene.n:,}", f"{b.scene.n:,}"),
        # DESIGN: bytes per Gaussian divide by the *input* (A's) count, so B's figure is comparable
        row("bytes / input Gaussian", f"{a.file_bytes / max(a.scene.n, 1):.2f}",
            f"{b.file_bytes / max(a.scene.n, 1):.2f}"),
        row("SH degree", str(a.scene.sh_degree), str(b.scene.sh_degree)),
    ]
    ratio = a.file_bytes / max(b.file_bytes, 1)
    lines.append("")
    kept = b.scene.n / max(a.scene.n, 1)
    lines.append(f"**size ratio A/B: {ratio:.2f}x** &nbsp; Gaussians B/A: {kept:.3f}")
    return "\n".join(lines)


def colour_note(scenes: list[LoadedScene], sh_rendered: bool) -> str:
    """What the browser shows of the SH, said plainly in the UI."""
    degrees = ", ".join(f"{s.label}: SH degree {s.scene.sh_degree}" for s in scenes)
    if sh_rendered:
        return f"Colours: full view-dependent SH ({degrees})."
    return (f"Colours: view-independent, baked from the SH DC term (0.5 + C0*dc): viser does not render "
            f"spherical harmonics yet ({degrees}). The PSNR button uses the full SH.")


class SplatViewer:
    """A viser server showing one scene, or two for comparison. Start it, load scenes, `stop()` at the end."""

    def __init__(self, config: ViewerConfig) -> None:
        self.config = config
        self.server: Any = None
        self.scenes: list[LoadedScene] = []
        self.handles: dict[str, list[Any]] = {}
        self.view: InitialView | None = None
        self.layout = "A"
        self.last_psnr: dict[str, Any] | None = None
        self._psnr_lock = threading.Lock()
        self._status: Any = None
        self._progress: Any = None
        self._gui: dict[str, Any] = {}
        self._labels: dict[str, Any] = {}
        self._label_home = np.zeros(3)  # label position above the scene before any side-by-side shift
        self.ready = threading.Event()

    # ------------------------------------------------------------------ server lifecycle
    def start(self) -> str:
        """Bind the port (checked free first) and start serving; returns the URL."""
        try:
            import viser
        except ImportError:
            raise InputError("view-splat needs viser: pip install 'fieldpress[viewer]'") from None
        cfg = self.config
        check_port_free(cfg.host, cfg.port)
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints its own banner; we print the URL
            self.server = viser.ViserServer(host=cfg.host, port=cfg.port, label=cfg.title, verbose=False)
        port = self.server.get_port()
        if cfg.port and port != cfg.port:  # someone took the port between the check and the bind
            self.stop()
            raise InputError(f"port {cfg.port} on {cfg.host} is already in use (pick another with --port)")
        self.server.gui.configure_theme(dark_mode=True, control_width="medium", show_logo=False)
        self._status = self.server.gui.add_markdown("Starting ...")
        self._progress = self.server.gui.add_progress_bar(0.0, animated=True)
        return url_for(cfg.host, port)

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self.server is not None:
            # viser announces "Server stopped" on stdout; keep stdout clean for --json output
            with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
                self.server.stop()
            self.server = None

    def status(self, text: str, progress: float | None = None, busy: bool = True) -> None:
        """Show a line of status in the page, with the progress bar (None: indeterminate) while `busy`."""
        if self._status is not None:
            self._status.content = text
        if self._progress is not None:
            self._progress.visible = busy
            if not busy:
                return
            self._progress.animated = progress is None
            self._progress.value = 100.0 if progress is None else float(np.clip(progress * 100.0, 0, 100))

    # ------------------------------------------------------------------ loading
    def load(self, label: str, path: Path, loader: Callable[[Path], Any]) -> LoadedScene:
        """Read a scene (status shown in the page meanwhile) and remember it under `label`."""
        self.status(f"Reading **{path.name}** ...", None)
        t0 = time.perf_counter()
        scene = loader(path)
        entry = LoadedScene(label, path, path.stat().st_size, scene, time.perf_counter() - t0)
        self.scenes.append(entry)
        return entry

    def show(self) -> float:
        """Send every loaded scene to the browser in chunks and build the panels; returns seconds spent."""
        if not self.scenes:
            raise InputError("no scene to show")
        t0 = time.perf_counter()
        first = self.scenes[0].scene
        self.view = initial_view(first)
        self._set_camera(self.view)
        total = sum(s.scene.n for s in self.scenes)
        done = 0
        sh = viser_supports_sh(self.server.scene)
        for entry in self.scenes:
            handles: list[Any] = []
            visible = entry.label == "A"
            for i, chunk in enumerate(iter_chunks(entry.scene, self.config.chunk, with_sh=sh)):
                handles.append(add_splats(self.server.scene, f"/{entry.label}/splats_{i:04d}", chunk,
                                          visible=visible))
                done += chunk.n
                self.status(f"Sending **{entry.name}** to the browser: {done:,} / {total:,} Gaussians",
                            done / max(total, 1))
            self.handles[entry.label] = handles
        if len(self.scenes) > 1:
            self._add_labels()
        self._build_panels(sh)
        names = " vs ".join(s.name for s in self.scenes)
        self.status(f"Showing {names}: {total:,} Gaussians.", busy=False)
        self.ready.set()
        return time.perf_counter() - t0

    def _set_camera(self, view: InitialView) -> None:
        server = self.server
        cam = set_initial_camera(server, view)
        cam.near = max(0.01 * view.extent, 1e-4)
        cam.far = 100.0 * max(view.extent, 1.0) + float(np.linalg.norm(view.position))
        for client in server.get_clients().values():
            client.camera.up_direction = view.up
            client.camera.look_at = view.look_at
            client.camera.position = view.position

    # ------------------------------------------------------------------ panels
    def _build_panels(self, sh_rendered: bool) -> None:
        gui = self.server.gui
        if len(self.scenes) == 1:
            s = self.scenes[0]
            with gui.add_folder("Scene"):
                gui.add_markdown(
                    f"| | |\n|---|---|\n| file | {s.name} |\n| size | {human_bytes(s.file_bytes)} "
                    f"({s.file_bytes:,} B) |\n| Gaussians | {s.scene.n:,} |\n| bytes/Gaussian | "
                    f"{s.file_bytes / max(s.scene.n, 1):.2f} |\n| SH degree | {s.scene.sh_degree} |")
        else:
            a, b = self.scenes[0], self.scenes[1]
            with gui.add_folder("Compare"):
                gui.add_markdown(compare_table(a, b))
                layout = gui.add_button_group("Show", options=list(LAYOUTS))
                layout.on_click(lambda event: self.set_layout(event.target.value))
                self._gui["layout_label"] = gui.add_markdown("Showing **A**")
                width = gui.add_number("PSNR render width", initial_value=self.config.psnr_width,
                                       min=64, max=2048, step=32)
                button = gui.add_button("Measure render PSNR (this view)")
                result = gui.add_markdown("PSNR: press the button to render both scenes from your camera.")
                self._gui.update(psnr_width=width, psnr_button=button, psnr_result=result)
                button.on_click(self._on_psnr_click)
        gui.add_markdown(colour_note(self.scenes, sh_rendered))

    def _add_labels(self) -> None:
        """3D labels above each scene, shown in side-by-side mode so A and B are never confused."""
        assert self.view is not None
        means = np.asarray(self.scenes[0].scene.means.detach().cpu().numpy(), dtype=np.float64)
        heights = (means - self.view.look_at) @ self.view.up
        top = float(np.percentile(heights, 99.5)) if len(heights) else 0.0
        self._label_home = self.view.look_at + self.view.up * top * 1.08
        for entry in self.scenes:
            self._labels[entry.label] = self.server.scene.add_label(
                f"/labels/{entry.label}", f"{entry.label}: {entry.name}", visible=False,
                position=tuple(float(v) for v in self._label_home), anchor="bottom-center")

    def set_layout(self, layout: str) -> None:
        """Show A, B, or both side by side (B shifted along the first view's screen-right axis)."""
        if layout not in LAYOUTS or len(self.scenes) < 2:
            return
        self.layout = layout
        assert self.view is not None
        offset = self.view.right * self.view.extent * 1.1
        for label, handles in self.handles.items():
            show = layout == "side by side" or layout == label
            if layout == "side by side":
                pos = tuple(float(v) for v in (-0.5 * offset if label == "A" else 0.5 * offset))
            else:
                pos = (0.0, 0.0, 0.0)
            for handle in handles:
                handle.position = pos
                handle.visible = show
            text = self._labels.get(label)
            if text is not None:
                text.position = tuple(float(v) for v in np.asarray(pos) + self._label_home)
                text.visible = layout == "side by side"
        label = self._gui.get("layout_label")
        if label is not None:
            label.content = ("Showing **A** and **B** side by side (A left)" if layout == "side by side"
                             else f"Showing **{layout}**: {self.scenes['AB'.index(layout)].name}")

    # ------------------------------------------------------------------ PSNR
    def _on_psnr_click(self, event: Any) -> None:
        client = event.client
        if client is None:
            return
        width = int(self._gui["psnr_width"].value)
        button, result = self._gui["psnr_button"], self._gui["psnr_result"]
        if not self._psnr_lock.acquire(blocking=False):
            return
        button.disabled = True
        result.content = "Rendering both scenes from your camera with our renderer (slow on a CPU) ..."
        try:
            cam = client.camera
            self.last_psnr = self.measure_psnr(cam.wxyz, cam.position, cam.fov, cam.aspect, width)
            r = self.last_psnr
            result.content = (f"**PSNR {r['psnr']:.2f} dB** (B against A) at {r['width']}x{r['height']}, "
                              f"full SH, black background; {r['seconds']:.1f} s on {r['device']}.")
        except Exception as exc:  # noqa: BLE001 - show the failure in the page, keep serving
            result.content = f"PSNR failed: {type(exc).__name__}: {exc}"
        finally:
            button.disabled = False
            self._psnr_lock.release()

    def measure_psnr(self, wxyz: Any, position: Any, fov_y: float, aspect: float,
                     width: int) -> dict[str, Any]:
        """Render A and B with our renderer from a browser camera; PSNR of B against A (8-bit RGB).

        In side-by-side mode the camera is taken relative to A (B is rendered at its own place).
        """
        from fieldpress.scenes.viewer.measure import render_psnr

        position = np.asarray(position, dtype=np.float64)
        if self.layout == "side by side" and self.view is not None:
            position = position + 0.5 * self.view.right * self.view.extent * 1.1  # undo A's shift
        camera = camera_from_viser(wxyz, position, fov_y, aspect, width)
        return render_psnr(self.scenes[0].scene, self.scenes[1].scene, camera)

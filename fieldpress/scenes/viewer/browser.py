"""Headless Chromium driven over the DevTools protocol: open the viewer, take screenshots.

Used by the end-to-end test, the load-time benchmark and the `docs/compare.png` screenshot. It
needs only a Chromium binary and the `websockets` package that viser already depends on.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_DEVTOOLS = re.compile(r"DevTools listening on (ws://[^\s]+)")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($FIELDPRESS_CHROMIUM first), or None."""
    env = os.environ.get("FIELDPRESS_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless Chromium page at a fixed window size, controlled over the DevTools protocol.

    `with HeadlessChromium(url, (960, 640)) as page: img = page.screenshot()` gives an RGB uint8
    array. WebGL runs on SwiftShader, so it works on machines without a GPU.
    """

    def __init__(self, url: str, size: tuple[int, int] = (960, 640), binary: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url, self.size, self.timeout = url, size, timeout
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError("no Chromium binary found (install Debian's `chromium`)")
        self._proc: subprocess.Popen[str] | None = None
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._profile: tempfile.TemporaryDirectory[str] | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> HeadlessChromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory(prefix="fieldpress-chromium-")
        w, h = self.size
        cmd = [
            str(self.binary), "--headless", "--no-sandbox", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run",
            "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self._profile.name}",
            f"--window-size={w},{h}", "--remote-debugging-port=0", "--remote-allow-origins=*", self.url,
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        browser_ws = self._read_devtools_url()
        port = int(re.search(r":(\d+)/", browser_ws).group(1))  # type: ignore[union-attr]
        page_ws = self._page_target(port)
        self._ws = connect(page_ws, max_size=256 * 1024 * 1024, open_timeout=self.timeout)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})

    def _read_devtools_url(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with code {self._proc.returncode}")
                continue
            match = _DEVTOOLS.search(line)
            if match:
                # keep draining stderr so Chromium never blocks on a full pipe
                import threading

                threading.Thread(target=self._drain, daemon=True).start()
                return match.group(1)
        raise TimeoutError("chromium did not report its DevTools endpoint")

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for _ in self._proc.stderr:
            pass

    def _page_target(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                targets = json.loads(resp.read())
            for target in targets:
                if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                    return str(target["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise TimeoutError("chromium opened no page target")

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket is fine
                pass
            self._ws = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    # ------------------------------------------------------------------ protocol
    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        assert self._ws is not None, "browser not started"
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"DevTools call {method} timed out")
            reply = json.loads(self._ws.recv(timeout=remaining))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page and return its JSON value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 4,
             pause: float = 0.0) -> None:
        """Drag with the left mouse button from `start` to `end` (page pixels), as a user orbits."""
        def mouse(kind: str, x: float, y: float, buttons: int) -> None:
            clicks = 0 if kind == "mouseMoved" else 1
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                   "buttons": buttons, "clickCount": clicks})

        mouse("mouseMoved", *start, 0)
        mouse("mousePressed", *start, 1)
        for i in range(1, steps + 1):
            t = i / steps
            mouse("mouseMoved", start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]), 1)
            time.sleep(pause)
        mouse("mouseReleased", *end, 0)

    def click_button(self, text: str) -> bool:
        """Click the first <button> whose text is `text`; False when there is none (yet)."""
        script = ("(() => { const b = Array.from(document.querySelectorAll('button'))"
                  f".find(e => e.textContent.trim() === {json.dumps(text)}); if (!b) return false;"
                  " b.click(); return true; })()")
        return bool(self.evaluate(script))

    def text(self) -> str:
        """The visible text of the page (panels, notifications)."""
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def screenshot(self) -> np.ndarray:
        """The page as an (H, W, 3) uint8 RGB array."""
        from PIL import Image

        data = self.call("Page.captureScreenshot", {"format": "png"}, timeout=60)["data"]
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            return np.asarray(img.convert("RGB"))

    def save_screenshot(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Take a screenshot and write it as PNG (atomically); returns the pixels."""
        from PIL import Image

        from fieldpress.io import atomic_path

        pixels = self.screenshot()
        with atomic_path(path) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
        return pixels


def scene_region(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """The middle of the viewer canvas, clear of viser's control panel (right) and notices (top left)."""
    h, w = shape[0], shape[1]
    return slice(int(0.3 * h), int(0.95 * h)), slice(int(0.2 * w), int(0.58 * w))


def canvas_background(pixels: np.ndarray) -> tuple[int, int, int] | None:
    """The canvas colour at the bottom-left corner; None while the page is still blank white (not loaded)."""
    corner = tuple(int(v) for v in pixels[-3, 3, :3])
    return None if min(corner) >= 250 else corner  # type: ignore[return-value]


def wait_until_drawn(page: HeadlessChromium, timeout: float = 60.0, min_fraction: float = 0.02,
                     interval: float = 0.25) -> tuple[float, np.ndarray, float]:
    """Poll screenshots until the scene covers `min_fraction` of the canvas middle.

    Returns (seconds waited, pixels, drawn fraction); raises TimeoutError when nothing is drawn in time.
    """
    start = time.monotonic()
    fraction = 0.0
    while time.monotonic() - start < timeout:
        try:
            pixels = page.screenshot()
        except RuntimeError:  # the page is still being swapped in
            time.sleep(interval)
            continue
        background = canvas_background(pixels)
        if background is not None:
            fraction = drawn_fraction(pixels, background, scene_region(pixels.shape))
            if fraction >= min_fraction:
                return time.monotonic() - start, pixels, fraction
        time.sleep(interval)
    raise TimeoutError(f"no scene drawn within {timeout:.0f} s (drawn fraction {fraction:.3f})")


def drawn_fraction(pixels: np.ndarray, background: tuple[int, int, int],
                   region: tuple[slice, slice] | None = None, tolerance: int = 12) -> float:
    """Fraction of pixels in `region` whose colour differs from `background` by more than `tolerance`."""
    view = pixels if region is None else pixels[region]
    diff = np.abs(view.astype(np.int16) - np.asarray(background, dtype=np.int16)).max(axis=-1)
    return float((diff > tolerance).mean())

"""view-splat load times: from starting the command to the first frame drawn in a (headless) browser.

For each scene it starts `view-splat FILE --port 0 --json`, records when the server is ready (file read,
converted, queued for the browser), opens the page in headless Chromium (SwiftShader WebGL, i.e. a
software GPU) and polls screenshots until the scene covers part of the canvas. Writes
bench/results/viewer_load.json. It can also take the `--compare` screenshot for the docs.

    flock /tmp/fieldpress-heavy.lock python bench/viewer_load.py                      # guitar + 1M synthetic
    flock /tmp/fieldpress-heavy.lock python bench/viewer_load.py --compare-shot docs/compare.png \\
        ../shared/data/gaussians/guitar.compressed.ply guitar.fpg --psnr
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FIELDPRESS_SHARED_DATA", REPO.parent / "shared" / "data"))


def start_viewer(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any], float, float]:
    """Start view-splat; return (process, its --json summary, start time, seconds until ready)."""
    cmd = [sys.executable, "-m", "fieldpress", "view-splat", *args, "--port", "0", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line:
        raise RuntimeError(f"view-splat failed: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line), t0, time.perf_counter() - t0


def stop_viewer(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def time_scene(path: Path, size: tuple[int, int], timeout: float) -> dict[str, Any]:
    """Start-to-ready and start-to-first-drawn-frame for one scene file."""
    from fieldpress.scenes.viewer.browser import HeadlessChromium, wait_until_drawn

    proc, info, t0, ready = start_viewer(str(path))
    try:
        with HeadlessChromium(info["url"], size, timeout=60) as page:
            opened = time.perf_counter() - t0
            _, _, fraction = wait_until_drawn(page, timeout=timeout)
            first = time.perf_counter() - t0
    finally:
        stop_viewer(proc)
    return {"file": path.name, "file_bytes": path.stat().st_size, "gaussians": info["gaussians_in"],
            "read_seconds": info["load_seconds"], "ready_seconds": round(ready, 2),
            "browser_open_seconds": round(opened, 2), "first_frame_seconds": round(first, 2),
            "drawn_fraction": round(fraction, 3), "window": f"{size[0]}x{size[1]}"}


def compare_shot(out: Path, a: Path, b: Path, psnr: bool, size: tuple[int, int],
                 timeout: float) -> dict[str, Any]:
    """Screenshot of `view-splat A --compare B` side by side (and the PSNR button's result with --psnr)."""
    from fieldpress.scenes.viewer.browser import HeadlessChromium, wait_until_drawn

    proc, info, t0, _ = start_viewer(str(a), "--compare", str(b))
    result: dict[str, Any] = {"a": str(a), "b": str(b), "size_ratio": info.get("size_ratio")}
    try:
        with HeadlessChromium(info["url"], size, timeout=60) as page:
            wait_until_drawn(page, timeout=timeout)
            page.evaluate("document.querySelectorAll('.mantine-Notification-closeButton')"
                          ".forEach(b => b.click())")  # the 'software WebGL' notice
            if not page.click_button("side by side"):
                raise RuntimeError("no 'side by side' button in the page")
            if psnr:
                page.click_button("Measure render PSNR (this view)")
                deadline = time.perf_counter() + timeout * 10
                while time.perf_counter() < deadline and "dB" not in page.text():
                    time.sleep(2.0)
                text = page.text()
                line = next((s for s in text.splitlines() if "dB" in s), "")
                result["psnr_text"] = line.strip()
            time.sleep(4.0)  # let the layout change and fade-in settle
            page.save_screenshot(out)
    finally:
        stop_viewer(proc)
    result["screenshot"] = str(out)
    return result


def machine() -> dict[str, Any]:
    import viser

    from fieldpress.scenes.viewer.browser import find_chromium

    chromium = find_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip() \
        if chromium else None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "viser": viser.__version__,
            "browser": version, "webgl": "SwiftShader (software) in headless Chromium"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="*", default=None, help="scene files (default: guitar + synthetic)")
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="synthetic scene size (0: none)")
    parser.add_argument("--size", default="1024x576", help="browser window WxH")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the first frame")
    parser.add_argument("--compare-shot", nargs=3, metavar=("OUT", "A", "B"), help="compare screenshot")
    parser.add_argument("--psnr", action="store_true", help="press the PSNR button before the shot")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "viewer_load.json"))
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    if args.compare_shot:
        out, a, b = (Path(p) for p in args.compare_shot)
        print(json.dumps(compare_shot(out, a, b, args.psnr, (w, h), args.timeout), indent=2))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="viewer-load-") as tmp:
        scenes = [Path(p) for p in args.scenes] if args.scenes else []
        if not args.scenes:
            guitar = SHARED / "gaussians" / "guitar.compressed.ply"
            if guitar.is_file():
                scenes.append(guitar)
            if args.synthetic:
                from fieldpress.scenes import save_scene
                from fieldpress.scenes.synthetic import synthetic_scene

                path = Path(tmp) / f"synthetic_{args.synthetic}.ply"
                save_scene(synthetic_scene(args.synthetic, sh_degree=0), path)
                scenes.append(path)
        for path in scenes:
            row = time_scene(path, (w, h), args.timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {"benchmark": "viewer_load", "machine": machine(), "results": rows}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""view-splat: splat conversion, camera conversion, the viser server (in process), bad input, the static
export, and an end-to-end run in headless Chromium (skipped without Chromium or viser)."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_file

pytest.importorskip("viser")

from fieldpress.cli import run_command  # noqa: E402
from fieldpress.errors import InputError  # noqa: E402
from fieldpress.scenes import save_scene  # noqa: E402
from fieldpress.scenes.cameras import Camera, look_at  # noqa: E402
from fieldpress.scenes.synthetic import synthetic_scene  # noqa: E402
from fieldpress.scenes.viewer import browser  # noqa: E402
from fieldpress.scenes.viewer.camera import (  # noqa: E402
    camera_from_viser,
    initial_view,
    matrix_to_quat_wxyz,
    quat_wxyz_to_matrix,
    world_to_camera_from_pose,
)
from fieldpress.scenes.viewer.cli import view_splat_command  # noqa: E402
from fieldpress.scenes.viewer.export import DATA_NAME, export_static  # noqa: E402
from fieldpress.scenes.viewer.server import (  # noqa: E402
    LoadedScene,
    SplatViewer,
    ViewerConfig,
    check_port_free,
    compare_table,
)
from fieldpress.scenes.viewer.splats import (  # noqa: E402
    SH_C0,
    covariances_from,
    dc_colours,
    iter_chunks,
    scene_to_splats,
    sigmoid,
)

GUITAR = "gaussians/guitar.compressed.ply"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- splat arrays
def test_covariance_matches_rotation_and_scales() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    s = rng.normal(size=(50, 3)) - 2
    cov = covariances_from(s, q)
    for i in range(50):
        r = quat_wxyz_to_matrix(q[i])
        expect = r @ np.diag(np.exp(2 * s[i])) @ r.T
        np.testing.assert_allclose(cov[i], expect, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(cov, np.transpose(cov, (0, 2, 1)), atol=1e-9)
    # quaternions are normalised for the covariance only: scaling one changes nothing
    np.testing.assert_allclose(covariances_from(s, q * 3.7), cov, rtol=1e-5, atol=1e-9)
    # a zero quaternion is the identity rotation, not NaN
    zero = covariances_from(np.zeros((1, 3)), np.zeros((1, 4)))
    np.testing.assert_allclose(zero[0], np.eye(3), atol=1e-6)


def test_colours_and_opacities() -> None:
    dc = np.array([[0.0, 0.0, 0.0], [10.0, -10.0, 1.0]])
    rgb = dc_colours(dc)
    np.testing.assert_allclose(rgb[0], 0.5)
    np.testing.assert_allclose(rgb[1], [1.0, 0.0, 0.5 + SH_C0], atol=1e-6)
    np.testing.assert_allclose(sigmoid(np.array([0.0, 100.0, -100.0])), [0.5, 1.0, 0.0], atol=1e-6)


def test_chunks_cover_the_scene_in_order() -> None:
    scene = synthetic_scene(1000, sh_degree=1)
    whole = scene_to_splats(scene, with_sh=True)
    parts = list(iter_chunks(scene, 300, with_sh=True))
    assert [p.n for p in parts] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate([p.centers for p in parts]), whole.centers)
    np.testing.assert_array_equal(np.concatenate([p.covariances for p in parts]), whole.covariances)
    assert whole.sh is not None and whole.sh.shape == (1000, 4, 3)
    np.testing.assert_allclose(whole.sh[:, 0], scene.sh_dc.numpy())
    assert whole.opacities.shape == (1000, 1) and whole.rgbs.dtype == np.float32


# ----------------------------------------------------------------------------- cameras
def test_viser_pose_round_trips_to_our_camera() -> None:
    eye, target, up = np.array([2.0, -1.0, 3.0]), np.array([0.1, 0.2, -0.3]), np.array([0.0, -1.0, 0.0])
    w2c = look_at(eye, target, up)
    c2w = np.linalg.inv(w2c)
    wxyz = matrix_to_quat_wxyz(c2w[:3, :3])
    np.testing.assert_allclose(world_to_camera_from_pose(wxyz, c2w[:3, 3]), w2c, atol=1e-9)
    cam = camera_from_viser(wxyz, c2w[:3, 3], math.radians(60), aspect=1.5, width=300)
    assert isinstance(cam, Camera) and (cam.width, cam.height) == (300, 200)
    assert cam.fy == pytest.approx(100 / math.tan(math.radians(30)))
    # the look-at target projects to the image centre
    p = cam.world_to_camera.double() @ torch.tensor([*target, 1.0], dtype=torch.float64)
    assert cam.fx * p[0] / p[2] + cam.cx == pytest.approx(150, abs=1e-3)
    assert cam.fy * p[1] / p[2] + cam.cy == pytest.approx(100, abs=1e-3)


def test_matrix_to_quat_handles_half_turns() -> None:
    half_turns = [np.diag(d) for d in ([1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0])]
    for rot in [*half_turns, np.eye(3)]:
        np.testing.assert_allclose(quat_wxyz_to_matrix(matrix_to_quat_wxyz(rot)), rot, atol=1e-9)


def test_initial_view_frames_the_scene() -> None:
    scene = synthetic_scene(2000)
    view = initial_view(scene)
    np.testing.assert_allclose(view.up, [0, -1, 0])
    lo, hi = (b.numpy() for b in scene.bounds(1.0))
    np.testing.assert_allclose(view.look_at, 0.5 * (lo + hi), atol=1e-6)
    assert np.linalg.norm(view.position - view.look_at) > 0.5 * np.linalg.norm(hi - lo)
    assert abs(view.right @ view.up) < 1e-9 and view.extent > 0


# ----------------------------------------------------------------------------- server, in process
def test_port_check_refuses_a_busy_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(InputError, match="already in use"):
            check_port_free("127.0.0.1", s.getsockname()[1])
    with pytest.raises(InputError):
        check_port_free("127.0.0.1", 70000)


def test_viewer_streams_chunks_and_switches_layout(tmp_path: Path) -> None:
    a, b = synthetic_scene(700, seed=0), synthetic_scene(500, seed=1, sh_degree=0)
    viewer = SplatViewer(ViewerConfig(port=0, chunk=256))
    url = viewer.start()
    try:
        assert url.startswith("http://127.0.0.1:") and viewer.port > 0
        for label, scene in (("A", a), ("B", b)):
            path = tmp_path / f"{label}.bin"
            path.write_bytes(b"x" * (1000 if label == "A" else 250))
            viewer.load(label, path, lambda _p, s=scene: s)
        viewer.show()
        assert viewer.ready.is_set()
        assert len(viewer.handles["A"]) == 3 and len(viewer.handles["B"]) == 2
        assert all(h.visible for h in viewer.handles["A"]) and not any(h.visible for h in viewer.handles["B"])
        viewer.set_layout("B")
        assert not any(h.visible for h in viewer.handles["A"]) and all(h.visible for h in viewer.handles["B"])
        viewer.set_layout("side by side")
        pa, pb = np.asarray(viewer.handles["A"][0].position), np.asarray(viewer.handles["B"][0].position)
        assert all(h.visible for hs in viewer.handles.values() for h in hs)
        np.testing.assert_allclose(pa, -pb)
        assert len(viewer._labels) == 2 and all(t.visible for t in viewer._labels.values())
        assert np.linalg.norm(pa - pb) > 0.5 * viewer.view.extent
        table = compare_table(viewer.scenes[0], viewer.scenes[1])
        assert "4.00x" in table and "700" in table and "500" in table
        per_input = viewer.scenes[1].file_bytes / viewer.scenes[0].scene.n  # DESIGN: the input count
        assert "bytes / input Gaussian" in table and f"{per_input:.2f}" in table
    finally:
        viewer.stop()


def test_measure_psnr_from_a_browser_camera(tmp_path: Path) -> None:
    from fieldpress.metrics import psnr

    a = synthetic_scene(200, seed=0, sh_degree=1)
    b = a.replace(sh_dc=a.sh_dc + 0.3)
    viewer = SplatViewer(ViewerConfig(port=0))
    viewer.scenes = [LoadedScene("A", tmp_path / "a", 1, a, 0.0), LoadedScene("B", tmp_path / "b", 1, b, 0.0)]
    view = initial_view(a)
    c2w = np.linalg.inv(look_at(view.position, view.look_at, view.up))
    r = viewer.measure_psnr(matrix_to_quat_wxyz(c2w[:3, :3]), c2w[:3, 3], math.radians(50), 1.5, 48)
    assert (r["width"], r["height"]) == (48, 32)
    img_a, img_b = r["images"]
    assert (img_a.max(axis=-1) > 0).mean() > 0.05  # the scene is in view
    assert r["psnr"] == pytest.approx(psnr(img_a, img_b)) and 5 < r["psnr"] < 60


# ----------------------------------------------------------------------------- command line
def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(view_splat_command, [str(tmp_path / "missing.ply")]) == 2
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"this is not a scene\n" * 10)
    assert run_command(view_splat_command, [str(junk), "--port", "0"]) == 2
    scene = tmp_path / "s.ply"
    save_scene(synthetic_scene(50), scene)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        assert run_command(view_splat_command, [str(scene), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "no such file" in err[0] and "already in use" in err[2]


def _sigint_default() -> None:
    """In the viewer's child: Ctrl-C as in a terminal, even when pytest itself runs as a background job
    (a shell starts those with SIGINT ignored, and the child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_serve_prints_url_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    scene = tmp_path / "s.ply"
    save_scene(synthetic_scene(2000), scene)
    cmd = [sys.executable, "-m", "fieldpress", "view-splat", str(scene), "--port", "0", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["command"] == "view-splat" and info["gaussians_in"] == 2000
        assert info["url"].startswith("http://127.0.0.1:")
        import urllib.request

        with urllib.request.urlopen(info["url"], timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read(2000).lower()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read() == ""  # nothing after the JSON line (viser's own prints are silenced)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_export_writes_a_static_viewer(tmp_path: Path) -> None:
    import msgspec
    import zstandard

    scene = synthetic_scene(1500)
    out = tmp_path / "site"
    result = export_static(scene, out, "syn.ply")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["index.html", DATA_NAME, "VISER_LICENSE.txt", "fieldpress-export.json"])
    page = (out / "index.html").read_text()
    assert "playbackPath" in page and DATA_NAME in page and "<html" in page.lower()
    blob = (out / DATA_NAME).read_bytes()
    size = int.from_bytes(blob[:8], "little")
    inner = zstandard.ZstdDecompressor().decompress(blob[8:], max_output_size=size)
    meta_len = int.from_bytes(inner[:8], "little")
    meta = msgspec.msgpack.decode(inner[8:8 + meta_len])
    assert sum(meta["binaryBufferLengths"]) >= 32 * scene.n  # 32 bytes per Gaussian in viser's buffers
    assert result.gaussians == 1500 and result.bytes == sum(p.stat().st_size for p in out.iterdir())
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # readable by a web server


# ----------------------------------------------------------------------------- end to end in Chromium
@pytest.mark.timeout(240)
def test_end_to_end_guitar_in_headless_chromium() -> None:
    if browser.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    guitar = shared_file(GUITAR)
    port = _free_port()
    cmd = [sys.executable, "-m", "fieldpress", "view-splat", str(guitar), "--port", str(port), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    try:
        info = json.loads(proc.stdout.readline() or "{}")
        assert info.get("gaussians_in") == 90854, proc.stderr.read() if proc.poll() is not None else info
        with browser.HeadlessChromium(info["url"], (800, 450), timeout=60) as page:
            _, first, fraction = browser.wait_until_drawn(page, timeout=150)
            assert fraction > 0.02
            time.sleep(1.5)  # splats fade in; let the picture settle
            before = page.screenshot()
            page.drag((240, 300), (380, 285))
            time.sleep(2.0)
            after = page.screenshot()
        region = browser.scene_region(before.shape)
        background = browser.canvas_background(before)
        assert background is not None
        assert browser.drawn_fraction(before, background, region) > 0.02
        changed = np.abs(before[region].astype(int) - after[region].astype(int)).max(axis=-1) > 16
        assert changed.mean() > 0.01, "the image did not change after the camera moved"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_export_opens_from_a_static_web_server(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    if browser.find_chromium() is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    export_static(synthetic_scene(20_000), tmp_path / "site", "torus")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        with browser.HeadlessChromium(url, (800, 450), timeout=60) as page:
            _, pixels, fraction = browser.wait_until_drawn(page, timeout=200)
        assert fraction > 0.02
    finally:
        httpd.shutdown()
        httpd.server_close()

"""Pinhole cameras, orbit views, and the camera file readers/writers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldpress.errors import FormatError, InputError
from fieldpress.scenes import render
from fieldpress.scenes.camera_files import (
    load_cameras,
    read_colmap,
    write_colmap_bin,
    write_inria_json,
)
from fieldpress.scenes.cameras import MAX_CAMERA_SIZE, Camera, orbit
from fieldpress.scenes.synthetic import synthetic_scene


def _same_camera(a: Camera, b: Camera, atol: float = 1e-5) -> None:
    assert torch.allclose(a.world_to_camera, b.world_to_camera, atol=atol)
    assert (a.width, a.height) == (b.width, b.height)
    for key in ("fx", "fy", "cx", "cy"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-6)


def test_orbit_views_look_at_the_centre_around_minus_y() -> None:
    scene = synthetic_scene(2000, sh_degree=0)
    cams = orbit(scene, 16)
    assert len(cams) == 16 and all(c.width == 512 and c.height == 512 for c in cams)
    lo, hi = scene.bounds(2.0)
    centre = (0.5 * (lo + hi)).double()
    heights = []
    for cam in cams:
        w2c = cam.world_to_camera.double()
        c = w2c[:3, :3] @ centre + w2c[:3, 3]
        assert abs(float(c[0])) < 1e-4 and abs(float(c[1])) < 1e-4 and float(c[2]) > 0  # centre on the axis
        assert torch.allclose(w2c[:3, :3] @ w2c[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-5)
        up_in_cam = w2c[:3, :3] @ torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64)
        assert float(up_in_cam[1]) < 0  # world up (-y) points up on screen (camera -y)
        heights.append(float(cam.position[1]))
    assert np.allclose(heights, heights[0]) and heights[0] < float(centre[1])  # cameras above, same height
    dists = [float((c.position.double() - centre).norm()) for c in cams]
    assert np.allclose(dists, dists[0], rtol=1e-4)


def test_orbit_frames_the_scene() -> None:
    scene = synthetic_scene(3000, sh_degree=0)
    for cam in orbit(scene, 4, width=48):
        _, alpha = render(scene, cam)
        covered = alpha > 0.5
        assert 0.05 < float(covered.float().mean()) < 0.9
        border = torch.cat([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
        assert float(border.max()) < 0.5  # nothing cut off at the edges


def test_camera_scaled_and_validation() -> None:
    cam = orbit(synthetic_scene(100, sh_degree=0), 1, width=200, height=100)[0]
    half = cam.scaled(100)
    assert (half.width, half.height) == (100, 50)
    assert half.fx == pytest.approx(cam.fx / 2) and half.cy == pytest.approx(cam.cy / 2)
    with pytest.raises(InputError):
        Camera(torch.eye(3), 1, 1, 0, 0, 10, 10)
    with pytest.raises(InputError):
        Camera(torch.eye(4), -1, 1, 0, 0, 10, 10)


def test_inria_cameras_json_round_trip(tmp_path: Path) -> None:
    cams = orbit(synthetic_scene(100, sh_degree=0), 5, width=64)
    off = Camera(cams[0].world_to_camera, 50.0, 60.0, 30.0, 20.0, 64, 48, name="off")
    write_inria_json(cams + [off], tmp_path / "cameras.json")
    data = json.loads((tmp_path / "cameras.json").read_text())
    assert set(data[0]) >= {"id", "img_name", "width", "height", "position", "rotation", "fx", "fy"}
    back = load_cameras(tmp_path / "cameras.json")
    for a, b in zip(cams + [off], back, strict=True):
        _same_camera(a, b)


def test_inria_json_position_is_camera_centre(tmp_path: Path) -> None:
    cam = orbit(synthetic_scene(100, sh_degree=0), 1, width=32)[0]
    write_inria_json([cam], tmp_path / "c.json")
    entry = json.loads((tmp_path / "c.json").read_text())[0]
    assert np.allclose(entry["position"], cam.position.numpy(), atol=1e-5)


def test_nerf_transforms_json(tmp_path: Path) -> None:
    # a camera at z=+4 looking down -z (OpenGL), i.e. at the origin
    c2w = np.eye(4)
    c2w[2, 3] = 4.0
    data = {"camera_angle_x": 2 * math.atan(0.5), "w": 100, "h": 80,
            "frames": [{"file_path": "./r_0", "transform_matrix": c2w.tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    (cam,) = load_cameras(tmp_path / "transforms.json")
    assert cam.fx == pytest.approx(100.0) and (cam.width, cam.height) == (100, 80)
    origin = cam.world_to_camera.double() @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(origin[:3], torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64), atol=1e-6)
    above = cam.world_to_camera.double() @ torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    assert float(above[1]) < 0  # world +y (OpenGL up) is up in the image


def test_colmap_bin_and_txt(tmp_path: Path) -> None:
    cams = orbit(synthetic_scene(100, sh_degree=0), 3, width=40)
    write_colmap_bin(cams, tmp_path / "sparse" / "0")
    back = load_cameras(tmp_path)
    for a, b in zip(sorted(cams, key=lambda c: c.name), back, strict=True):
        _same_camera(a, b)
    # the same model as text, with SIMPLE_RADIAL intrinsics
    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "cameras.txt").write_text("# comment\n1 SIMPLE_RADIAL 40 40 30.0 20.0 20.0 0.01\n")
    w2c = cams[1].world_to_camera.double().numpy()
    from fieldpress.scenes.camera_files import _rot_to_qvec

    q = _rot_to_qvec(w2c[:3, :3])
    line = " ".join(str(v) for v in [1, *q, *w2c[:3, 3], 1, "img one.png"])
    (txt / "images.txt").write_text(f"# images\n{line}\n1.0 2.0 -1\n")
    (cam,) = read_colmap(txt / "images.txt")
    assert cam.name == "img one.png" and cam.fx == cam.fy == 30.0
    assert torch.allclose(cam.world_to_camera, cams[1].world_to_camera, atol=1e-5)


def test_bad_camera_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FormatError):
        load_cameras(tmp_path / "bad.json")
    (tmp_path / "c.json").write_text(json.dumps([{"width": 10}]))
    with pytest.raises(FormatError, match="lacks"):
        load_cameras(tmp_path / "c.json")
    (tmp_path / "cameras.bin").write_bytes((10**9).to_bytes(8, "little"))
    (tmp_path / "images.bin").write_bytes(bytes(8))
    with pytest.raises(FormatError, match="more than the file holds"):
        load_cameras(tmp_path / "cameras.bin")


def test_hostile_camera_values_are_format_errors(tmp_path: Path) -> None:
    eye = np.eye(4).tolist()
    pose = {"position": [0, 0, 0], "rotation": np.eye(3).tolist(), "fx": 5, "fy": 5}
    nerf = {"frames": [{"transform_matrix": eye}]}
    cases = {
        "angle_zero.json": ({"camera_angle_x": 0, **nerf}, "camera_angle_x"),
        "angle_pi.json": ({"camera_angle_x": math.pi, **nerf}, "camera_angle_x"),
        "huge_w.json": ({"fl_x": 100, "w": 1e300, "h": 10, **nerf}, "w must"),
        "text_w.json": ([{"width": "x", "height": 10, **pose}], "width is not a number"),
        "frac_h.json": ([{"width": 8, "height": 2.5, **pose}], "height must"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(FormatError, match=message):
            load_cameras(tmp_path / name)
    with pytest.raises(InputError, match="camera size"):
        Camera(torch.eye(4), 10.0, 10.0, 5.0, 5.0, MAX_CAMERA_SIZE + 1, 10)

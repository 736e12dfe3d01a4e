"""Cameras between the browser and our renderer: viser's client camera -> `fieldpress.scenes` Camera,
and the first view of a scene (look-at point, distance, up axis) framed from its robust bounds.

viser reports a camera as `P_world = R p_camera + t` (wxyz, position) in OpenCV axes (x right,
y down, z forward) with a vertical field of view; our Camera holds world_to_camera in the same
OpenCV axes plus pinhole intrinsics, so the conversion is an inverse and fy = (H/2) / tan(fov/2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def quat_wxyz_to_matrix(wxyz: Any) -> np.ndarray:
    """3x3 rotation matrix of a (normalised here) w,x,y,z quaternion."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / max(float(np.linalg.norm(wxyz)), 1e-12)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat_wxyz(rot: Any) -> np.ndarray:
    """w,x,y,z unit quaternion (w >= 0) of a 3x3 rotation matrix (Shepperd's method, stable for any angle)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = (trace, m[0, 0], m[1, 1], m[2, 2])
    k = int(np.argmax(candidates))
    if k == 0:
        s = 2.0 * np.sqrt(max(1.0 + trace, 1e-12))
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif k == 1:
        s = 2.0 * np.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 1e-12))
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif k == 2:
        s = 2.0 * np.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 1e-12))
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 1e-12))
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    quat = np.asarray(q) / np.linalg.norm(q)
    return quat if quat[0] >= 0 else -quat


def world_to_camera_from_pose(wxyz: Any, position: Any) -> np.ndarray:
    """4x4 world->camera (OpenCV axes) from a camera->world pose given as quaternion + position."""
    rot = quat_wxyz_to_matrix(wxyz)
    t = np.asarray(position, dtype=np.float64).reshape(3)
    w2c = np.eye(4)
    w2c[:3, :3] = rot.T
    w2c[:3, 3] = -rot.T @ t
    return w2c


def intrinsics_from_fov(fov_y: float, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a pinhole camera with vertical field of view `fov_y` (radians), square pixels."""
    fy = 0.5 * height / np.tan(0.5 * float(fov_y))
    return float(fy), float(fy), 0.5 * width, 0.5 * height


def render_size(aspect: float, width: int) -> tuple[int, int]:
    """(width, height) at `width` pixels keeping the browser's aspect ratio (height at least 1)."""
    aspect = aspect if np.isfinite(aspect) and aspect > 0 else 1.0
    return int(width), max(1, int(round(width / aspect)))


def camera_from_viser(wxyz: Any, position: Any, fov_y: float, aspect: float, width: int) -> Any:
    """Our `Camera` for what the browser shows, rendered `width` pixels wide at the browser's aspect."""
    import torch

    from fieldpress.scenes.cameras import Camera

    w, h = render_size(aspect, width)
    fx, fy, cx, cy = intrinsics_from_fov(fov_y, w, h)
    w2c = torch.as_tensor(world_to_camera_from_pose(wxyz, position), dtype=torch.float32)
    return Camera(world_to_camera=w2c, fx=fx, fy=fy, cx=cx, cy=cy, width=w, height=h)


@dataclass(frozen=True)
class InitialView:
    """Where the browser camera starts: it looks at `look_at` from `position`, with `up` up."""

    look_at: np.ndarray
    position: np.ndarray
    up: np.ndarray
    right: np.ndarray  # screen-right direction of this first view (side-by-side offsets go along it)
    extent: float  # robust size of the scene (for offsets)


def initial_view(scene: Any, fov_y: float = np.deg2rad(50.0), up: np.ndarray | None = None) -> InitialView:
    """A first view that frames the robust (1-99 percentile) bounds of the scene."""
    lo, hi = (np.asarray(b.detach().cpu().numpy() if hasattr(b, "detach") else b, dtype=np.float64)
              for b in scene.bounds(1.0))
    centre = 0.5 * (lo + hi)
    from fieldpress.scenes.cameras import estimate_up

    up = estimate_up(scene) if up is None else np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), 1e-3)
    # look along a horizontal direction (perpendicular to up), slightly from above
    helper = np.array([0.0, 0.0, 1.0]) if abs(up[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    horizontal = helper - up * (helper @ up)
    horizontal /= np.linalg.norm(horizontal)
    direction = horizontal * np.cos(np.deg2rad(20.0)) + up * np.sin(np.deg2rad(20.0))
    distance = radius / np.sin(0.5 * fov_y) * 1.1
    position = centre + direction * distance
    forward = -direction
    right = np.cross(forward, up)
    right /= max(np.linalg.norm(right), 1e-12)
    extent = float(np.abs((hi - lo) @ right))
    return InitialView(look_at=centre, position=position, up=up, right=right, extent=max(extent, radius))


def set_initial_camera(server: Any, view: InitialView) -> Any:
    """Point a viser server's up direction and initial camera (50 degree FOV) at `view`; the camera."""
    server.scene.set_up_direction(tuple(float(v) for v in view.up))
    cam = server.initial_camera
    cam.up = view.up
    cam.look_at = view.look_at
    cam.position = view.position
    cam.fov = float(np.deg2rad(50.0))
    return cam

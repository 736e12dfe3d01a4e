"""Pinhole cameras (OpenCV convention: x right, y down, z forward; pixel centres at +0.5) and the
orbit views DESIGN.md evaluates scenes on: `n` cameras around the scene's up axis, framed by robust
percentile bounds. Readers/writers of camera files live in `camera_files.py`."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from fieldpress.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from fieldpress.scenes.scene import GaussianScene

# INRIA/COLMAP scenes are y-down: world "up" is -y unless the file says otherwise (scene.meta["up"]).
DEFAULT_UP = (0.0, -1.0, 0.0)
# Largest image side a camera may have: bounds what a hostile camera file can make a renderer allocate.
MAX_CAMERA_SIZE = 1 << 16


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: world_to_camera (4,4) float32 tensor and intrinsics for width x height pixels."""

    world_to_camera: Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        w2c = torch.as_tensor(np.asarray(self.world_to_camera, dtype=np.float64)
                              if not isinstance(self.world_to_camera, Tensor) else self.world_to_camera)
        w2c = w2c.detach().to(torch.float32).cpu()
        if tuple(w2c.shape) != (4, 4) or not bool(torch.isfinite(w2c).all()):
            raise InputError("camera world_to_camera must be a finite 4x4 matrix")
        object.__setattr__(self, "world_to_camera", w2c)
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(float(v)) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise InputError(f"camera intrinsics must be finite with positive focal lengths, got {values}")
        if not (1 <= int(self.width) <= MAX_CAMERA_SIZE and 1 <= int(self.height) <= MAX_CAMERA_SIZE):
            raise InputError(f"camera size must be 1..{MAX_CAMERA_SIZE} pixels a side, "
                             f"got {self.width}x{self.height}")
        for key in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, key, float(getattr(self, key)))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def K(self) -> Tensor:  # noqa: N802 - the usual name of the intrinsics matrix
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def rotation(self) -> Tensor:
        return self.world_to_camera[:3, :3]

    @property
    def translation(self) -> Tensor:
        return self.world_to_camera[:3, 3]

    @property
    def position(self) -> Tensor:
        """The camera centre in world coordinates."""
        return -(self.rotation.T @ self.translation)

    def camera_to_world(self) -> Tensor:
        return torch.linalg.inv(self.world_to_camera.double()).float()

    def scaled(self, width: int, height: int | None = None) -> Camera:
        """The same view for a `width` x `height` image (height keeps the aspect ratio when omitted)."""
        sx = width / self.width
        if height is None:
            height = max(1, round(self.height * sx))
        sy = height / self.height
        return dataclasses.replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
                                   width=width, height=height)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV axes) for a camera at `eye` looking at `target` with `up` on screen."""
    forward = target - eye
    forward = forward / max(np.linalg.norm(forward), 1e-12)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking along the up axis: pick any perpendicular
        other = np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        right = np.cross(forward, other)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])
    w2c = np.eye(4)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ eye
    return w2c


def estimate_up(scene: GaussianScene) -> np.ndarray:
    """The scene's up direction: `meta["up"]` when a reader knows it, else -y (INRIA/COLMAP are y-down)."""
    up = scene.meta.get("up")
    vec = np.asarray(up if up is not None else DEFAULT_UP, dtype=np.float64).reshape(-1)
    if vec.shape != (3,) or not np.isfinite(vec).all() or np.linalg.norm(vec) == 0:
        vec = np.asarray(DEFAULT_UP)
    return vec / np.linalg.norm(vec)


def orbit(scene: GaussianScene, n: int = 16, width: int = 512, height: int | None = None,
          fov_deg: float = 50.0, elevation_deg: float = 20.0, percentile: float = 2.0, margin: float = 1.1,
          up: tuple[float, float, float] | None = None) -> list[Camera]:
    """`n` cameras evenly around the up axis, looking at the centre of the robust bounds.

    The distance fits the bounding sphere of the `percentile`..`100-percentile` box in the field of
    view (times `margin`); cameras sit `elevation_deg` above the horizontal plane.
    """
    if n < 1:
        raise InputError(f"orbit needs at least one view, got {n}")
    height = width if height is None else height
    lo, hi = (b.numpy().astype(np.float64) for b in scene.bounds(percentile))
    center = 0.5 * (lo + hi)
    # tiny or single-Gaussian scenes: frame at least the typical Gaussian's 3-sigma extent
    typical = 3.0 * float(torch.exp(scene.scales.detach().float().amax(1)).median()) if scene.n else 1.0
    radius = max(0.5 * float(np.linalg.norm(hi - lo)), typical if math.isfinite(typical) else 0.0, 1e-3)
    up_vec = np.asarray(up, dtype=np.float64) / np.linalg.norm(up) if up is not None else estimate_up(scene)
    half = math.radians(fov_deg) / 2
    focal = 0.5 * width / math.tan(half)
    fov_min = min(half, math.atan(0.5 * height / focal))
    distance = radius * margin / math.sin(fov_min)
    # an orthonormal basis (a, b) of the horizontal plane
    a = np.cross(up_vec, [1.0, 0.0, 0.0] if abs(up_vec[0]) < 0.9 else [0.0, 0.0, 1.0])
    a /= np.linalg.norm(a)
    b = np.cross(up_vec, a)
    elev = math.radians(elevation_deg)
    cams = []
    for i in range(n):
        phi = 2 * math.pi * i / n
        direction = math.cos(elev) * (math.cos(phi) * a + math.sin(phi) * b) + math.sin(elev) * up_vec
        eye = center + distance * direction
        cams.append(Camera(torch.from_numpy(look_at(eye, center, up_vec)), fx=focal, fy=focal, cx=width / 2,
                           cy=height / 2, width=width, height=height, name=f"orbit_{i:03d}"))
    return cams

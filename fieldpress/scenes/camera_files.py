"""Camera files users already have: INRIA `cameras.json` (read and write), NeRF `transforms.json`,
and COLMAP `cameras.bin`/`images.bin` or their `.txt` forms. All become OpenCV-convention `Camera`s
(distortion parameters are ignored: the renderer is a pinhole)."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.errors import FormatError, InputError
from fieldpress.scenes.cameras import MAX_CAMERA_SIZE, Camera

MAX_CAMERA_FILE = 256 << 20
# COLMAP camera models: id -> (name, number of parameters); params start f[,f2],cx,cy
COLMAP_MODELS = {0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
                 4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
                 8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12)}
MODEL_IDS = {name: (mid, count) for mid, (name, count) in COLMAP_MODELS.items()}
SINGLE_FOCAL = {"SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "FOV", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"}


def _read_limited(path: Path) -> bytes:
    if path.stat().st_size > MAX_CAMERA_FILE:
        raise FormatError(f"{path}: camera file larger than {MAX_CAMERA_FILE >> 20} MiB")
    return path.read_bytes()


def _json(path: Path) -> Any:
    try:
        return json.loads(_read_limited(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None


def load_cameras(path: str | os.PathLike[str]) -> list[Camera]:
    """Read cameras from an INRIA cameras.json, a NeRF transforms.json, or COLMAP files/folder."""
    p = Path(path)
    if p.is_dir():
        for sub in (p, p / "sparse" / "0", p / "sparse", p / "0"):
            for name in ("images.bin", "images.txt"):
                if (sub / name).is_file():
                    return read_colmap(sub / name)
        raise InputError(f"{p}: no COLMAP images.bin/images.txt in this folder")
    if not p.is_file():
        raise InputError(f"{p}: no such camera file")
    if p.name.lower() in ("cameras.bin", "images.bin", "cameras.txt", "images.txt", "points3d.bin"):
        return read_colmap(p)
    data = _json(p)
    if isinstance(data, list):
        return read_inria_json(p, data)
    if isinstance(data, dict) and "frames" in data:
        return read_nerf_transforms(p, data)
    raise FormatError(f"{p}: not a cameras.json (a list) or transforms.json (with frames)")


def _num(value: Any, what: str, path: Path) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: {what} is not a number") from None
    if not math.isfinite(out):
        raise FormatError(f"{path}: {what} is not finite")
    return out


def _size(value: Any, what: str, path: Path) -> int:
    """An image dimension: a whole number of pixels in 1..MAX_CAMERA_SIZE."""
    out = _num(value, what, path)
    if not (out.is_integer() and 1 <= out <= MAX_CAMERA_SIZE):
        raise FormatError(f"{path}: {what} must be a whole number of pixels in 1..{MAX_CAMERA_SIZE}, "
                          f"got {value!r}")
    return int(out)


def _focal_from_angle(pixels: int, value: Any, what: str, path: Path) -> float:
    """Focal length in pixels from a field of view in radians, which must lie in (0, pi)."""
    angle = _num(value, what, path)
    if not 0.0 < angle < math.pi:
        raise FormatError(f"{path}: {what} must be an angle in (0, pi) radians, got {value!r}")
    return 0.5 * pixels / math.tan(0.5 * angle)


def _matrix(value: Any, shape: tuple[int, int], what: str, path: Path) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FormatError(f"{path}: {what} is not a numeric matrix") from None
    if m.shape != shape or not np.isfinite(m).all():
        raise FormatError(f"{path}: {what} must be a finite {shape[0]}x{shape[1]} matrix")
    return m


def read_inria_json(path: Path, data: list[Any] | None = None) -> list[Camera]:
    """INRIA cameras.json: [{id, img_name, width, height, position, rotation (camera-to-world), fx, fy}]."""
    data = _json(path) if data is None else data
    cams = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise FormatError(f"{path}: camera {i} is not an object")
        try:
            width, height = _size(entry["width"], "width", path), _size(entry["height"], "height", path)
            rot = _matrix(entry["rotation"], (3, 3), f"camera {i} rotation", path)
            pos = _matrix([entry["position"]], (1, 3), f"camera {i} position", path)[0]
            fx, fy = _num(entry["fx"], "fx", path), _num(entry["fy"], "fy", path)
        except KeyError as exc:
            raise FormatError(f"{path}: camera {i} lacks {exc.args[0]!r}") from None
        w2c = np.eye(4)
        w2c[:3, :3] = rot.T
        w2c[:3, 3] = -rot.T @ pos
        cx = _num(entry.get("cx", width / 2), "cx", path)
        cy = _num(entry.get("cy", height / 2), "cy", path)
        cams.append(Camera(torch.from_numpy(w2c), fx, fy, cx, cy, width, height,
                           name=str(entry.get("img_name", f"{i:05d}"))))
    if not cams:
        raise FormatError(f"{path}: no cameras in the file")
    return cams


def write_inria_json(cameras: Sequence[Camera], path: str | os.PathLike[str]) -> int:
    """Write cameras in the INRIA cameras.json layout (plus cx, cy when off-centre); atomic."""
    from fieldpress.io import atomic_write_text

    out = []
    for i, cam in enumerate(cameras):
        w2c = cam.world_to_camera.double().numpy()
        rot = w2c[:3, :3].T
        pos = -rot @ w2c[:3, 3]
        entry: dict[str, Any] = {"id": i, "img_name": cam.name or f"{i:05d}", "width": cam.width,
                                 "height": cam.height, "position": pos.tolist(),
                                 "rotation": [row.tolist() for row in rot], "fy": cam.fy, "fx": cam.fx}
        if abs(cam.cx - cam.width / 2) > 1e-6 or abs(cam.cy - cam.height / 2) > 1e-6:
            entry.update(cx=cam.cx, cy=cam.cy)
        out.append(entry)
    return atomic_write_text(path, json.dumps(out, indent=1))


def read_nerf_transforms(path: Path, data: dict[str, Any] | None = None) -> list[Camera]:
    """NeRF/instant-ngp transforms.json: camera-to-world in OpenGL axes, focal from fl_x or camera_angle_x."""
    data = _json(path) if data is None else data
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise FormatError(f"{path}: transforms.json has no frames")
    cams = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "transform_matrix" not in frame:
            raise FormatError(f"{path}: frame {i} has no transform_matrix")

        def get(key: str, default: Any = None, frame: dict[str, Any] = frame) -> Any:
            return frame.get(key, data.get(key, default))

        width, height = get("w"), get("h")
        if width is None or height is None:
            width = height = 800  # the Blender synthetic scenes leave the size out
        width, height = _size(width, "w", path), _size(height, "h", path)
        if get("fl_x") is not None:
            fx = _num(get("fl_x"), "fl_x", path)
            fy = _num(get("fl_y", fx), "fl_y", path)
        elif get("camera_angle_x") is not None:
            fx = _focal_from_angle(width, get("camera_angle_x"), "camera_angle_x", path)
            fy = fx if get("camera_angle_y") is None else \
                _focal_from_angle(height, get("camera_angle_y"), "camera_angle_y", path)
        else:
            raise FormatError(f"{path}: frame {i} has no focal length (fl_x or camera_angle_x)")
        c2w = _matrix(frame["transform_matrix"], (4, 4), f"frame {i} transform_matrix", path).copy()
        c2w[:3, 1:3] *= -1.0  # OpenGL (y up, z back) -> OpenCV (y down, z forward)
        try:
            w2c = np.linalg.inv(c2w)
        except np.linalg.LinAlgError:
            raise FormatError(f"{path}: frame {i} transform_matrix is singular") from None
        cx = _num(get("cx", width / 2), "cx", path)
        cy = _num(get("cy", height / 2), "cy", path)
        cams.append(Camera(torch.from_numpy(w2c), fx, fy, cx, cy, width, height,
                           name=str(frame.get("file_path", f"{i:05d}"))))
    return cams


# ----------------------------------------------------------------------------- COLMAP
def _intrinsics(model: str, params: Sequence[float]) -> tuple[float, float, float, float]:
    if model in SINGLE_FOCAL:
        f, cx, cy = params[0], params[1], params[2]
        return f, f, cx, cy
    return params[0], params[1], params[2], params[3]


def _qvec_to_rot(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


class _Reader:
    """Bounds-checked little-endian reads from a bytes buffer."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise FormatError(f"{self.path}: COLMAP file is truncated")
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise FormatError(f"{self.path}: COLMAP file is truncated (image name)")
        name = self.data[self.pos:end].decode("utf-8", "replace")
        self.pos = end + 1
        return name


def _colmap_cameras_bin(path: Path) -> dict[int, tuple[str, int, int, list[float]]]:
    r = _Reader(_read_limited(path), path)
    (count,) = r.take("<Q")
    if count * 24 > len(r.data):
        raise FormatError(f"{path}: declares {count} cameras, more than the file holds")
    cams = {}
    for _ in range(count):
        cam_id, model_id, width, height = r.take("<iiQQ")
        if model_id not in COLMAP_MODELS:
            raise FormatError(f"{path}: unknown COLMAP camera model {model_id}")
        name, n_params = COLMAP_MODELS[model_id]
        cams[cam_id] = (name, width, height, list(r.take(f"<{n_params}d")))
    return cams


def _colmap_cameras_txt(path: Path) -> dict[int, tuple[str, int, int, list[float]]]:
    cams = {}
    for line in _read_limited(path).decode("utf-8", "replace").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            cam_id, model, width, height = int(words[0]), words[1], int(words[2]), int(words[3])
            params = [float(w) for w in words[4:]]
        except (ValueError, IndexError):
            raise FormatError(f"{path}: bad COLMAP camera line {line.strip()[:60]!r}") from None
        if model not in MODEL_IDS or len(params) != MODEL_IDS[model][1]:
            raise FormatError(f"{path}: unknown COLMAP model or parameter count in {line.strip()[:60]!r}")
        cams[cam_id] = (model, width, height, params)
    return cams


def _colmap_images_bin(path: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    r = _Reader(_read_limited(path), path)
    (count,) = r.take("<Q")
    if count * 64 > len(r.data):
        raise FormatError(f"{path}: declares {count} images, more than the file holds")
    images = []
    for _ in range(count):
        _, qw, qx, qy, qz, tx, ty, tz, cam_id = r.take("<i7di")
        name = r.cstring()
        (n_points,) = r.take("<Q")
        if n_points * 24 > len(r.data) - r.pos:
            raise FormatError(f"{path}: image {name!r} declares more 2D points than the file holds")
        r.pos += n_points * 24
        images.append((name, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), cam_id))
    return images


def _colmap_images_txt(path: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    lines = [ln for ln in _read_limited(path).decode("utf-8", "replace").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    images = []
    for line in lines[::2]:  # every image line is followed by its 2D points line
        words = line.split()
        try:
            values = [float(w) for w in words[1:8]]
            cam_id, name = int(words[8]), " ".join(words[9:])
        except (ValueError, IndexError):
            raise FormatError(f"{path}: bad COLMAP image line {line.strip()[:60]!r}") from None
        images.append((name, np.array(values[:4]), np.array(values[4:7]), cam_id))
    return images


def read_colmap(path: str | os.PathLike[str]) -> list[Camera]:
    """Cameras of a COLMAP model, given any of its files (cameras.* and images.* side by side)."""
    p = Path(path)
    ext = ".bin" if p.suffix.lower() == ".bin" else ".txt"
    cam_file, img_file = p.parent / f"cameras{ext}", p.parent / f"images{ext}"
    for f in (cam_file, img_file):
        if not f.is_file():
            raise InputError(f"{f}: missing (COLMAP models need cameras{ext} and images{ext} together)")
    intr = _colmap_cameras_bin(cam_file) if ext == ".bin" else _colmap_cameras_txt(cam_file)
    images = _colmap_images_bin(img_file) if ext == ".bin" else _colmap_images_txt(img_file)
    cams = []
    for name, q, t, cam_id in sorted(images, key=lambda item: item[0]):
        if cam_id not in intr:
            raise FormatError(f"{img_file}: image {name!r} refers to missing camera {cam_id}")
        model, width, height, params = intr[cam_id]
        if not (np.isfinite(q).all() and np.isfinite(t).all()) or np.linalg.norm(q) == 0:
            raise FormatError(f"{img_file}: image {name!r} has an invalid pose")
        w2c = np.eye(4)
        w2c[:3, :3] = _qvec_to_rot(q)
        w2c[:3, 3] = t
        fx, fy, cx, cy = _intrinsics(model, params)
        cams.append(Camera(torch.from_numpy(w2c), fx, fy, cx, cy, width, height, name=name))
    if not cams:
        raise FormatError(f"{img_file}: no registered images")
    return cams


def write_colmap_bin(cameras: Sequence[Camera], folder: str | os.PathLike[str]) -> None:
    """Write cameras.bin + images.bin (PINHOLE, no points; each atomically) for tests and COLMAP tools."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cam_bytes = [struct.pack("<Q", len(cameras))]
    img_bytes = [struct.pack("<Q", len(cameras))]
    for i, cam in enumerate(cameras):
        cam_bytes.append(struct.pack("<iiQQ4d", i + 1, 1, cam.width, cam.height,
                                     cam.fx, cam.fy, cam.cx, cam.cy))
        w2c = cam.world_to_camera.double().numpy()
        q = _rot_to_qvec(w2c[:3, :3])
        img_bytes.append(struct.pack("<i7di", i + 1, *q, *w2c[:3, 3], i + 1))
        img_bytes.append((cam.name or f"{i:05d}").encode() + b"\0" + struct.pack("<Q", 0))
    from fieldpress.io import atomic_write_bytes

    atomic_write_bytes(folder / "cameras.bin", b"".join(cam_bytes))
    atomic_write_bytes(folder / "images.bin", b"".join(img_bytes))


def _rot_to_qvec(rot: np.ndarray) -> np.ndarray:
    m = rot
    trace = np.trace(m)
    if trace > 0:
        s = 0.5 / math.sqrt(trace + 1.0)
        q = [0.25 / s, (m[2, 1] - m[1, 2]) * s, (m[0, 2] - m[2, 0]) * s, (m[1, 0] - m[0, 1]) * s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    return np.asarray(q)

"""Render a `GaussianScene` from a `Camera`: gsplat on CUDA, our own tile rasterizer on the CPU.

Both follow gsplat's conventions: EWA projection with the Jacobian's x/z, y/z clamped to 1.3x the
field of view, a 0.3 px low-pass added to the 2D covariance (with opacity compensation only for
antialiased scenes), a 3-sigma radius binned into 16x16 tiles, per pixel alpha = min(0.99,
o * exp(-sigma)), alphas below 1/255 skipped, compositing stopped before transmittance drops to 1e-4,
colours from SH to the chosen degree (+0.5, clamped at 0). The CPU path is differentiable.
`render_reference` is a slow per-pixel loop over the same rules, the test oracle.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from fieldpress.errors import InputError
from fieldpress.runtime import torch_threads
from fieldpress.scenes.cameras import Camera
from fieldpress.scenes.scene import GaussianScene
from fieldpress.scenes.sh import eval_sh

EPS2D = 0.3
NEAR, FAR = 0.01, 1e10
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
EXTENT_SIGMAS = 3.0
TILE = 16
CHUNK = 256  # Gaussians composited at once per tile
RENDER_THREADS = int(os.environ.get("FIELDPRESS_RENDER_THREADS", "1"))  # 0: leave torch's setting


@dataclasses.dataclass(frozen=True)
class Projected:
    """Visible Gaussians in front-to-back order, in pixel space."""

    index: Tensor  # (M,) indices into the scene
    means2d: Tensor  # (M,2)
    conics: Tensor  # (M,3) a, b, c of the inverse 2D covariance
    opacities: Tensor  # (M,) activated (times the antialiasing compensation when used)
    log_opacities: Tensor  # (M,) log of the above
    colors: Tensor  # (M,3)
    depths: Tensor  # (M,)
    radii: Tensor  # (M,) pixels, int64


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(N,4) wxyz quaternions (normalised here) -> (N,3,3) rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def project(scene: GaussianScene, camera: Camera, sh_degree: int, antialiased: bool = False) -> Projected:
    """EWA-project every Gaussian, cull the invisible ones, sort by depth and evaluate their colours."""
    device = scene.means.device
    w2c = camera.world_to_camera.to(device)
    rot_w, t_w = w2c[:3, :3], w2c[:3, 3]
    mean_c = scene.means @ rot_w.T + t_w
    z = mean_c[:, 2]
    visible = (z > NEAR) & (z < FAR)
    idx = torch.nonzero(visible, as_tuple=False).reshape(-1)
    mean_c, z = mean_c[idx], z[idx]
    rot = quat_to_rotmat(scene.quats[idx])
    m = rot * torch.exp(scene.scales[idx])[:, None, :]
    cov_w = m @ m.transpose(1, 2)
    cov_c = rot_w @ cov_w @ rot_w.T
    fx, fy, cx, cy, width, height = camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    x, y = mean_c[:, 0], mean_c[:, 1]
    tx = z * torch.clamp(x / z, -lim_xn, lim_xp)
    ty = z * torch.clamp(y / z, -lim_yn, lim_yp)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1)
    jac = jac.reshape(-1, 2, 3)
    cov2d = jac @ cov_c @ jac.transpose(1, 2)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det_orig = a * c - b * b
    a, c = a + EPS2D, c + EPS2D
    det = a * c - b * b
    log_opac = F.logsigmoid(scene.opacities[idx])
    if antialiased:
        log_opac = log_opac + 0.5 * torch.log(torch.clamp(det_orig / det, min=1e-30))
    opac = torch.exp(log_opac)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    with torch.no_grad():
        half = 0.5 * (a + c)
        v1 = half + torch.sqrt(torch.clamp(half * half - det, min=0.01))
        radii = torch.ceil(EXTENT_SIGMAS * torch.sqrt(v1)).to(torch.int64)
        ok = (det > 0) & (radii > 0) & torch.isfinite(means2d).all(-1) & (opac >= ALPHA_MIN)
        mx, my = means2d[:, 0], means2d[:, 1]
        ok &= (mx + radii > 0) & (mx - radii < width) & (my + radii > 0) & (my - radii < height)
        keep = torch.nonzero(ok, as_tuple=False).reshape(-1)
        order = keep[torch.argsort(z[keep], stable=True)]
    det_k = det[order]
    conics = torch.stack([c[order] / det_k, -b[order] / det_k, a[order] / det_k], -1)
    gidx = idx[order]
    dirs = scene.means[gidx] - camera.position.to(device)
    colors = eval_sh(scene.sh_dc[gidx], scene.sh_rest[gidx], dirs, sh_degree)
    return Projected(gidx, means2d[order], conics, opac[order], log_opac[order], colors, z[order],
                     radii[order])


def tile_ranges(p: Projected, width: int, height: int, tile: int = TILE) -> tuple[Tensor, ...]:
    """Per Gaussian the tile rectangle [x0,x1) x [y0,y1) its 3-sigma square touches (gsplat's rule)."""
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    mean = p.means2d.detach()
    r = p.radii.to(mean.dtype)
    x0 = torch.clamp(torch.floor((mean[:, 0] - r) / tile), 0, tiles_x).to(torch.int64)
    x1 = torch.clamp(torch.ceil((mean[:, 0] + r) / tile), 0, tiles_x).to(torch.int64)
    y0 = torch.clamp(torch.floor((mean[:, 1] - r) / tile), 0, tiles_y).to(torch.int64)
    y1 = torch.clamp(torch.ceil((mean[:, 1] + r) / tile), 0, tiles_y).to(torch.int64)
    return x0, x1, y0, y1


def _background(background: Sequence[float] | Tensor, device: torch.device) -> Tensor:
    bg = torch.as_tensor(background, dtype=torch.float32, device=device).reshape(-1)
    if bg.numel() == 1:
        bg = bg.expand(3)
    if bg.numel() != 3:
        raise InputError(f"background must be one or three values, got {bg.numel()}")
    return bg


def _prepare(scene: GaussianScene, camera: Camera, width: int | None, height: int | None,
             sh_degree: int | None) -> tuple[Camera, int]:
    if width is not None and (width != camera.width or (height is not None and height != camera.height)):
        camera = camera.scaled(width, height)
    elif height is not None and height != camera.height:
        camera = camera.scaled(camera.width, height)
    degree = scene.sh_degree if sh_degree is None else int(sh_degree)
    if not 0 <= degree <= 3:
        raise InputError(f"SH degree must be 0-3, got {degree}")
    return camera, min(degree, scene.sh_degree)


def render(scene: GaussianScene, camera: Camera, width: int | None = None, height: int | None = None,
           sh_degree: int | None = None, background: Sequence[float] | Tensor = (0.0, 0.0, 0.0),
           backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Render to (rgb (H,W,3) float in [0,1]-ish, alpha (H,W)); differentiable w.r.t. the scene tensors.

    The camera's intrinsics are scaled to `width` (and `height`, default: the camera's aspect).
    `backend`: "auto" (gsplat for CUDA scenes when installed, else CPU), "gsplat" or "cpu".
    """
    if backend not in ("auto", "gsplat", "cpu"):
        raise InputError(f"unknown render backend {backend!r}: auto, gsplat or cpu")
    camera, degree = _prepare(scene, camera, width, height, sh_degree)
    use_gsplat = backend == "gsplat" or (backend == "auto" and scene.means.is_cuda and _has_gsplat())
    if use_gsplat:
        return _render_gsplat(scene, camera, degree, background)
    with torch_threads(RENDER_THREADS):
        return _render_cpu(scene, camera, degree, background)


def _has_gsplat() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def _render_gsplat(scene: GaussianScene, camera: Camera, degree: int,
                   background: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """gsplat.rasterization on CUDA (classic mode unless the scene is antialiased)."""
    try:
        from gsplat import rasterization
    except ImportError:
        raise InputError("the gsplat renderer was asked for but gsplat is not installed") from None
    device = scene.means.device
    k = (degree + 1) ** 2
    coeffs = torch.cat([scene.sh_dc[:, None, :], scene.sh_rest[:, : k - 1]], dim=1)
    colors, alphas, _ = rasterization(
        means=scene.means, quats=scene.quats, scales=torch.exp(scene.scales),
        opacities=torch.sigmoid(scene.opacities), colors=coeffs,
        viewmats=camera.world_to_camera.to(device)[None], Ks=camera.K.to(device)[None],
        width=camera.width, height=camera.height, near_plane=NEAR, far_plane=FAR, eps2d=EPS2D,
        sh_degree=degree, backgrounds=_background(background, device)[None], tile_size=TILE,
        rasterize_mode="antialiased" if scene.antialiased else "classic")
    return colors[0], alphas[0, ..., 0]


def _render_cpu(scene: GaussianScene, camera: Camera, degree: int,
                background: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """Vectorised tile rasterizer: pairs (tile, Gaussian) sorted by tile then depth, composited per tile
    in chunks of CHUNK Gaussians x 256 pixels, stopping a tile once every pixel is saturated."""
    width, height = camera.width, camera.height
    device = scene.means.device
    bg = _background(background, device)
    p = project(scene, camera, degree, scene.antialiased)
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    n_tiles = tiles_x * tiles_y
    x0, x1, y0, y1 = tile_ranges(p, width, height)
    counts = (x1 - x0).clamp_min(0) * (y1 - y0).clamp_min(0)
    total = int(counts.sum())
    gauss = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - torch.repeat_interleave(starts, counts)
    span = (x1 - x0).clamp_min(1)[gauss]
    tile_id = (y0[gauss] + local // span) * tiles_x + x0[gauss] + local % span
    # sort by tile, stable so Gaussians stay front to back inside a tile
    order = torch.argsort(tile_id, stable=True)
    gauss, tile_id = gauss[order], tile_id[order]
    per_tile = torch.bincount(tile_id, minlength=n_tiles)
    offsets = (torch.cumsum(per_tile, 0) - per_tile).tolist()
    per_tile_list = per_tile.tolist()
    features = _tile_features(device)
    empty_rgb = bg.expand(TILE * TILE, 3)
    empty_alpha = torch.zeros(TILE * TILE, device=device)
    rgb_tiles, alpha_tiles = [], []
    for t in range(n_tiles):
        count = per_tile_list[t]
        if count == 0:
            rgb_tiles.append(empty_rgb)
            alpha_tiles.append(empty_alpha)
            continue
        origin = torch.tensor([(t % tiles_x) * TILE, (t // tiles_x) * TILE], dtype=torch.float32,
                              device=device)
        ids = gauss[offsets[t]: offsets[t] + count]
        color, acc = _composite_tile(origin, features, ids, p)
        rgb_tiles.append(color + (1.0 - acc)[:, None] * bg)
        alpha_tiles.append(acc)
    rgb = torch.stack(rgb_tiles).reshape(tiles_y, tiles_x, TILE, TILE, 3).permute(0, 2, 1, 3, 4)
    alpha = torch.stack(alpha_tiles).reshape(tiles_y, tiles_x, TILE, TILE).permute(0, 2, 1, 3)
    rgb = rgb.reshape(tiles_y * TILE, tiles_x * TILE, 3)[:height, :width]
    alpha = alpha.reshape(tiles_y * TILE, tiles_x * TILE)[:height, :width]
    return rgb, alpha


def _composite_tile(origin: Tensor, features: Tensor, ids: Tensor, p: Projected) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of Gaussians `ids` (depth order) over one tile's pixels.

    The exponent sigma - log(opacity) is a quadratic in the pixel position, so it is evaluated for all
    (pixel, Gaussian) pairs as one matmul of tile-local monomials `features` (P,6) with per-Gaussian
    coefficients; local coordinates keep float32 precise.
    """
    n_pix = features.shape[0]
    color = features.new_zeros(n_pix, 3)
    acc = features.new_zeros(n_pix)
    carry = features.new_ones(n_pix, 1)
    alive = torch.ones(n_pix, 1, dtype=torch.bool, device=features.device)
    for start in range(0, ids.numel(), CHUNK):
        chunk = ids[start: start + CHUNK]
        con = p.conics[chunk]
        a, b, c = con[:, 0], con[:, 1], con[:, 2]
        m = p.means2d[chunk] - origin
        mx, my = m[:, 0], m[:, 1]
        coef = torch.stack([0.5 * a, 0.5 * c, b, -(a * mx + b * my), -(c * my + b * mx),
                            0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my - p.log_opacities[chunk]], 0)
        alpha = torch.clamp(torch.exp(-(features @ coef)), max=ALPHA_MAX)  # (P,C)
        alpha = torch.where((alpha >= ALPHA_MIN) & alive, alpha, torch.zeros_like(alpha))
        one_minus = 1.0 - alpha
        t_incl = torch.cumprod(one_minus, dim=1) * carry
        included = t_incl > T_MIN
        weights = torch.where(included, alpha * (t_incl / one_minus), torch.zeros_like(alpha))
        color = color + weights @ p.colors[chunk]
        acc = acc + weights.sum(1)
        alive = alive & included[:, -1:]
        carry = t_incl[:, -1:]
        if not bool(alive.any()):
            break
    return color, acc


def _tile_features(device: torch.device) -> Tensor:
    """Monomials (x^2, y^2, xy, x, y, 1) of the pixel centres of one tile, in tile-local coordinates."""
    ys, xs = torch.meshgrid(torch.arange(TILE, device=device, dtype=torch.float32),
                            torch.arange(TILE, device=device, dtype=torch.float32), indexing="ij")
    x, y = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5
    return torch.stack([x * x, y * y, x * y, x, y, torch.ones_like(x)], -1)


def render_reference(scene: GaussianScene, camera: Camera, width: int | None = None,
                     height: int | None = None, sh_degree: int | None = None,
                     background: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Slow per-pixel oracle (float64 numpy loops) for tests; same projection and inclusion rules."""
    camera, degree = _prepare(scene, camera, width, height, sh_degree)
    with torch.no_grad():
        p = project(scene.detach(), camera, degree, scene.antialiased)
        x0, x1, y0, y1 = (v.numpy() for v in tile_ranges(p, camera.width, camera.height))
    means = p.means2d.double().numpy()
    conics = p.conics.double().numpy()
    opac = p.opacities.double().numpy()
    colors = p.colors.double().numpy()
    bg = np.asarray(background, dtype=np.float64)
    rgb = np.zeros((camera.height, camera.width, 3))
    alpha_img = np.zeros((camera.height, camera.width))
    for py in range(camera.height):
        for px in range(camera.width):
            tx, ty = px // TILE, py // TILE
            cand = np.nonzero((x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1))[0]
            t, out = 1.0, np.zeros(3)
            for g in cand:
                dx, dy = means[g, 0] - (px + 0.5), means[g, 1] - (py + 0.5)
                a, b, c = conics[g]
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                if sigma < 0:
                    continue
                alpha = min(ALPHA_MAX, opac[g] * np.exp(-sigma))
                if alpha < ALPHA_MIN:
                    continue
                next_t = t * (1 - alpha)
                if next_t <= T_MIN:
                    break
                out += alpha * t * colors[g]
                t = next_t
            rgb[py, px] = out + t * bg
            alpha_img[py, px] = 1 - t
    return rgb, alpha_img

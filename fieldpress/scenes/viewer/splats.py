"""GaussianScene -> the arrays a browser splat renderer draws (centres, covariances, colours, opacities).

viser (and most web renderers) take a covariance per Gaussian instead of scale + rotation, an RGB
colour instead of spherical harmonics, and an opacity instead of a logit; this module does those
conversions in numpy, chunk by chunk, so a million-Gaussian scene converts without a memory spike.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

SH_C0 = 0.28209479177387814  # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))


@dataclass(frozen=True)
class SplatArrays:
    """One chunk of Gaussians in renderer form (all float32).

    `sh` holds the full SH coefficients (N, K+1, 3), DC first, for renderers that evaluate view
    dependent colour; `rgbs` is the view-independent colour baked from the DC term.
    """

    centers: np.ndarray  # (N, 3)
    covariances: np.ndarray  # (N, 3, 3)
    rgbs: np.ndarray  # (N, 3) in [0, 1]
    opacities: np.ndarray  # (N, 1) in [0, 1]
    sh: np.ndarray | None = None  # (N, K+1, 3) or None

    @property
    def n(self) -> int:
        return int(self.centers.shape[0])


def _numpy(t: Any) -> np.ndarray:
    """A float32 numpy view of a torch tensor or array (the scene keeps torch tensors on the CPU)."""
    if hasattr(t, "detach"):
        t = t.detach().to("cpu").numpy()
    return np.asarray(t, dtype=np.float32)


def covariances_from(log_scales: np.ndarray, quats_wxyz: np.ndarray) -> np.ndarray:
    """Sigma = R diag(exp(s))^2 R^T, with R from the quaternion normalised here (only for this).

    Formats keep quaternions as stored (DESIGN.md), but a covariance needs a rotation, so a copy is
    normalised; a zero quaternion becomes the identity rotation instead of NaNs.
    """
    q = np.asarray(quats_wxyz, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    q = np.where(norm > 1e-12, q / np.maximum(norm, 1e-12), identity)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    rot = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=1,
    ).reshape(-1, 3, 3)
    scale = np.exp(np.asarray(log_scales, dtype=np.float64))
    m = rot * scale[:, None, :]  # R @ diag(s)
    return np.einsum("nij,nkj->nik", m, m).astype(np.float32)


def dc_colours(sh_dc: np.ndarray) -> np.ndarray:
    """View-independent RGB from the SH DC term: clamp(0.5 + C0 * dc, 0, 1)."""
    return np.clip(0.5 + SH_C0 * np.asarray(sh_dc, dtype=np.float32), 0.0, 1.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Opacity from its logit, computed without overflow warnings for large negative logits."""
    x = np.asarray(x, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def scene_to_splats(scene: Any, start: int = 0, stop: int | None = None,
                    with_sh: bool = False) -> SplatArrays:
    """Gaussians [start, stop) of a GaussianScene in renderer form.

    `with_sh=True` also returns the SH coefficients (DC first) for renderers that can use them.
    """
    stop = scene.n if stop is None else min(stop, scene.n)
    sl = slice(start, stop)
    dc = _numpy(scene.sh_dc[sl]).reshape(-1, 3)
    sh = None
    if with_sh:
        rest = _numpy(scene.sh_rest[sl]) if scene.sh_rest is not None else np.zeros((dc.shape[0], 0, 3))
        sh = np.concatenate([dc[:, None, :], rest.reshape(dc.shape[0], -1, 3)], axis=1).astype(np.float32)
    return SplatArrays(
        centers=np.ascontiguousarray(_numpy(scene.means[sl]).reshape(-1, 3)),
        covariances=covariances_from(_numpy(scene.scales[sl]).reshape(-1, 3),
                                     _numpy(scene.quats[sl]).reshape(-1, 4)),
        rgbs=dc_colours(dc),
        opacities=sigmoid(_numpy(scene.opacities[sl]).reshape(-1))[:, None],
        sh=sh,
    )


def iter_chunks(scene: Any, chunk: int, with_sh: bool = False) -> Iterator[SplatArrays]:
    """The scene in renderer form, `chunk` Gaussians at a time (for progress and bounded memory)."""
    if chunk < 1:
        raise ValueError("chunk must be positive")
    for start in range(0, scene.n, chunk):
        yield scene_to_splats(scene, start, start + chunk, with_sh=with_sh)


def viser_supports_sh(scene_api: Any) -> bool:
    """True when this viser's `add_gaussian_splats` takes SH coefficients (`sh_coeffs`, viser PR #736).

    Released viser (1.x) does not, so colours are baked from the DC term; when it does, the viewer
    sends the full SH instead without any other change.
    """
    try:
        params = inspect.signature(scene_api.add_gaussian_splats).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return "sh_coeffs" in params


def add_splats(scene_api: Any, name: str, arrays: SplatArrays, *, visible: bool = True,
               position: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Any:
    """Add one chunk to a viser scene; passes SH when both the chunk and viser carry it."""
    kwargs: dict[str, Any] = {"visible": visible, "position": position}
    if arrays.sh is not None and arrays.sh.shape[1] > 1 and viser_supports_sh(scene_api):
        kwargs["sh_coeffs"] = arrays.sh
    return scene_api.add_gaussian_splats(name, centers=arrays.centers, covariances=arrays.covariances,
                                         rgbs=arrays.rgbs, opacities=arrays.opacities, **kwargs)

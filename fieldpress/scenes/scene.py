"""`GaussianScene`: one 3D Gaussian Splatting scene in the INRIA parameterisation, as torch tensors.

Every format reader produces one and every writer consumes one, so conversions, renderers and
compressors share a single in-memory layout: means (N,3), log-scales (N,3), quaternions (N,4, wxyz,
kept as stored), opacity logits (N,), SH DC (N,3) and SH rest (N,K,3) with K in {0,3,8,15}, plus any
other per-Gaussian property by name with its own numpy dtype (`extras`) and file metadata (`meta`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fieldpress.errors import InputError

SH_C0 = 0.28209479177387814
REST_COUNTS = {0: 0, 1: 3, 2: 8, 3: 15}
DEGREE_OF_REST = {k: d for d, k in REST_COUNTS.items()}
MAX_SH_DEGREE = 3


def sh_degree_of(rest_count: int) -> int:
    """SH degree from the number of non-DC coefficients per channel (0, 3, 8, 15)."""
    if rest_count not in DEGREE_OF_REST:
        raise InputError(f"{rest_count} SH coefficients per channel beyond DC is not a degree 0-3 layout "
                         "(expected 0, 3, 8 or 15)")
    return DEGREE_OF_REST[rest_count]


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianScene:
    """A 3DGS scene. Tensors are float32 and share one device; `extras` are numpy arrays (N,) or (N,...)."""

    means: Tensor  # (N,3) world positions
    scales: Tensor  # (N,3) log standard deviations
    quats: Tensor  # (N,4) w,x,y,z as stored (not normalised)
    opacities: Tensor  # (N,) logits
    sh_dc: Tensor  # (N,3)
    sh_rest: Tensor  # (N,K,3), K in {0,3,8,15}
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, means: Any, scales: Any, quats: Any, opacities: Any, sh_dc: Any,
                    sh_rest: Any | None = None, extras: Mapping[str, np.ndarray] | None = None,
                    meta: Mapping[str, Any] | None = None) -> GaussianScene:
        """Build a scene from numpy arrays or tensors (copied to float32 CPU tensors) and validate it."""

        def t(x: Any) -> Tensor:
            if isinstance(x, Tensor):
                return x.detach().to(torch.float32)
            return torch.from_numpy(np.array(x, dtype=np.float32))

        dc = t(sh_dc)
        rest = t(sh_rest) if sh_rest is not None else torch.zeros((dc.shape[0], 0, 3), dtype=torch.float32)
        scene = cls(means=t(means), scales=t(scales), quats=t(quats), opacities=t(opacities).reshape(-1),
                    sh_dc=dc, sh_rest=rest, extras={k: np.asarray(v) for k, v in (extras or {}).items()},
                    meta=dict(meta or {}))
        scene.validate(finite=False)
        return scene

    def replace(self, **changes: Any) -> GaussianScene:
        """A copy with some fields replaced (the dataclass is frozen)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ properties
    @property
    def n(self) -> int:
        return int(self.means.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def sh_degree(self) -> int:
        return sh_degree_of(int(self.sh_rest.shape[1]))

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def antialiased(self) -> bool:
        """Whether the scene was trained with the antialiased (Mip-Splatting style) rasterizer."""
        return bool(self.meta.get("antialiased", False))

    def __repr__(self) -> str:
        extras = ", ".join(f"{k}:{v.dtype}" for k, v in self.extras.items())
        return (f"GaussianScene(n={self.n}, sh_degree={self.sh_degree}, device={self.device}"
                + (f", extras=[{extras}]" if extras else "") + ")")

    # ------------------------------------------------------------------ transforms
    def tensors(self) -> dict[str, Tensor]:
        """The six attribute tensors by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("extras", "meta")}

    def to(self, device: torch.device | str) -> GaussianScene:
        """The same scene with its tensors on `device` (extras stay numpy)."""
        return self.replace(**{k: v.to(device) for k, v in self.tensors().items()})

    def detach(self) -> GaussianScene:
        return self.replace(**{k: v.detach() for k, v in self.tensors().items()})

    def subset(self, selection: Any) -> GaussianScene:
        """The Gaussians picked by a boolean mask (N,) or an integer index array, extras included."""
        sel = torch.as_tensor(np.asarray(selection) if not isinstance(selection, Tensor) else selection)
        if sel.dtype == torch.bool:
            if sel.shape != (self.n,):
                raise InputError(f"subset mask has shape {tuple(sel.shape)}, expected ({self.n},)")
            index = torch.nonzero(sel, as_tuple=False).reshape(-1)
        else:
            if sel.dtype.is_floating_point and sel.numel():
                raise InputError("subset index must be integers or a boolean mask")
            index = sel.reshape(-1).to(torch.int64)
            if index.numel() and (int(index.min()) < -self.n or int(index.max()) >= self.n):
                raise InputError(f"subset index out of range for {self.n} Gaussians")
        idx_np = index.cpu().numpy()
        fields = {k: v[index.to(v.device)] for k, v in self.tensors().items()}
        return self.replace(**fields, extras={k: v[idx_np] for k, v in self.extras.items()})

    def with_sh_degree(self, degree: int) -> GaussianScene:
        """Truncate (or zero-pad) the SH coefficients to `degree` (0-3)."""
        if degree not in REST_COUNTS:
            raise InputError(f"SH degree must be 0-3, got {degree}")
        k_new, k_old = REST_COUNTS[degree], self.sh_rest.shape[1]
        if k_new <= k_old:
            rest = self.sh_rest[:, :k_new]
        else:
            pad = self.sh_rest.new_zeros((self.n, k_new - k_old, 3))
            rest = torch.cat([self.sh_rest, pad], dim=1)
        return self.replace(sh_rest=rest)

    # ------------------------------------------------------------------ geometry
    def bounds(self, percentile: float = 1.0) -> tuple[Tensor, Tensor]:
        """Robust axis-aligned bounds of the means: the `percentile`-th and (100-percentile)-th per axis."""
        if self.n == 0:
            zero = torch.zeros(3)
            return zero, zero
        if not 0.0 <= percentile < 50.0:
            raise InputError(f"bounds percentile must be in [0, 50), got {percentile}")
        pts = self.means.detach().cpu().numpy()
        finite = np.isfinite(pts).all(axis=1)
        pts = pts[finite] if finite.any() else np.zeros((1, 3), np.float32)
        lo = np.percentile(pts, percentile, axis=0)
        hi = np.percentile(pts, 100.0 - percentile, axis=0)
        return torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)

    def colors_dc(self) -> Tensor:
        """View-independent RGB in [0,1] from the DC term (0.5 + C0 * dc), as viewers without SH show it."""
        return (0.5 + SH_C0 * self.sh_dc).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ validation
    def validate(self, finite: bool = True) -> GaussianScene:
        """Check shapes, dtypes and (with `finite`) that every value is finite; raise InputError if not."""
        n = self.n
        expect = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh_dc": (n, 3)}
        for name, shape in expect.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise InputError(f"scene.{name} must be a torch tensor")
            if tuple(value.shape) != shape:
                raise InputError(f"scene.{name} has shape {tuple(value.shape)}, expected {shape}")
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise InputError(f"scene.means has shape {tuple(self.means.shape)}, expected (N,3)")
        rest = self.sh_rest
        if rest.ndim != 3 or rest.shape[0] != n or rest.shape[2] != 3:
            raise InputError(f"scene.sh_rest has shape {tuple(rest.shape)}, expected (N,K,3)")
        sh_degree_of(int(rest.shape[1]))
        for name, value in self.extras.items():
            if not isinstance(value, np.ndarray) or value.ndim < 1 or value.shape[0] != n:
                raise InputError(f"extra property {name!r} must be a numpy array with {n} rows")
        if finite:
            for name, value in self.tensors().items():
                if value.numel() and not bool(torch.isfinite(value).all()):
                    bad = int((~torch.isfinite(value)).reshape(n, -1).any(dim=1).sum()) if n else 0
                    raise InputError(f"scene has non-finite values (NaN/inf) in {name} for {bad} Gaussians")
        return self


def concat(scenes: list[GaussianScene]) -> GaussianScene:
    """Concatenate scenes with the same SH degree and extras (metadata from the first)."""
    if not scenes:
        raise InputError("nothing to concatenate")
    first = scenes[0]
    for s in scenes[1:]:
        if s.sh_degree != first.sh_degree or set(s.extras) != set(first.extras):
            raise InputError("scenes differ in SH degree or extra properties")
    fields = {k: torch.cat([getattr(s, k) for s in scenes]) for k in first.tensors()}
    extras = {k: np.concatenate([s.extras[k] for s in scenes]) for k in first.extras}
    return first.replace(**fields, extras=extras)

"""Repair of non-finite values that real files carry on purpose or by accident, before validation.

splat-transform writes +inf opacity (and -inf log-scale) for fully opaque merged splats, and other
tools leave NaNs behind; readers keep the raw values, `load_scene` calls `sanitize`: opacity and
scale are clamped (NaN: invisible / tiny), Gaussians with a non-finite position are dropped, and one
warning line names the counts. Anything else non-finite is still refused by `validate`.
"""

from __future__ import annotations

import warnings

import torch

from fieldpress.scenes.scene import GaussianScene

OPACITY_LIMIT = 20.0  # logit: sigmoid(20) = 1 - 2e-9, opaque in every 8-bit writer
SCALE_LIMIT = 20.0  # log-scale: exp(-20) = 2e-9, a point; exp(20) covers any real scene


def _clamp(values: torch.Tensor, limit: float, nan_value: float) -> tuple[torch.Tensor, int]:
    """`values` with NaN -> nan_value and +-inf -> +-limit, and how many rows changed."""
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):
        return values, 0
    rows = int(bad.reshape(values.shape[0], -1).any(dim=1).sum())
    fixed = torch.nan_to_num(values, nan=nan_value, posinf=limit, neginf=-limit)
    return fixed.clamp(-limit, limit) if values.numel() else fixed, rows


def sanitize(scene: GaussianScene, source: str = "") -> GaussianScene:
    """`scene` with non-finite opacities/scales clamped and non-finite positions dropped (one warning)."""
    opacities, n_opacity = _clamp(scene.opacities, OPACITY_LIMIT, -OPACITY_LIMIT)
    scales, n_scale = _clamp(scene.scales, SCALE_LIMIT, -SCALE_LIMIT)
    if n_opacity or n_scale:
        scene = scene.replace(opacities=opacities, scales=scales)
    keep = torch.isfinite(scene.means).all(dim=1)
    dropped = int((~keep).sum())
    if dropped:
        scene = scene.subset(keep.cpu())
    notes = []
    if n_opacity:
        notes.append(f"clamped {n_opacity} non-finite opacities to +-{OPACITY_LIMIT:g} (logit)")
    if n_scale:
        notes.append(f"clamped non-finite scales of {n_scale} Gaussians to +-{SCALE_LIMIT:g} (log)")
    if dropped:
        notes.append(f"dropped {dropped} Gaussians with non-finite positions")
    if notes:
        prefix = f"{source}: " if source else ""
        warnings.warn(prefix + "; ".join(notes), stacklevel=3)
    return scene

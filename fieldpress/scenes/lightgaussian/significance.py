"""LightGaussian global significance: how much each Gaussian contributes to all pixels of all views.

For a Gaussian j the hit term is I_j = sum over views and pixels of its compositing weight
alpha_j * T_j (T_j: transmittance in front of it). With every Gaussian painted one constant grey,
the rendered image is linear in the colours with exactly these weights as coefficients, so one
backward pass of the summed image with respect to the per-Gaussian colour yields all I_j at once
(any differentiable renderer works; ours is `fieldpress.scenes.renderer.render`).

The volume term follows LightGaussian's released code (`calculate_v_imp_score`):
V_j = prod(exp(scale_j)), ref = the entry at index int(0.9 N) of V sorted in descending order,
score_j = I_j * (V_j / ref) ** 0.1, without clamping. (The paper calls ref the "90% largest" volume
and clamps; the code does not, and because ref is one constant the ranking is I_j * V_j^0.1 anyway.)
The released kernel accumulates sigmoid(opacity) * T rather than alpha * T; the issue asks for the
compositing weight, which is what the gradient gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fieldpress.errors import InputError

V_POW = 0.1


@dataclass(frozen=True)
class SignificanceConfig:
    """Views and the volume exponent for the significance score."""

    views: int = 16  # orbit cameras when the user gives none
    width: int = 256  # orbit camera width in pixels (height follows the camera's aspect)
    v_pow: float = V_POW


def hit_weights(scene: Any, cameras: Sequence[Any], width: int | None = None,
                height: int | None = None) -> torch.Tensor:
    """I_j: each Gaussian's compositing weight summed over all pixels of all `cameras` (float64, (N,)).

    Renders every view once at SH degree 0 with a leaf colour tensor and reads the gradient.
    """
    from fieldpress.scenes.renderer import render
    from fieldpress.scenes.scene import SH_C0

    base = scene.detach()
    total = torch.zeros(base.n, dtype=torch.float64)
    if base.n == 0:
        return total
    for cam in cameras:
        w = int(width or cam.width)
        h = int(height or cam.height)
        # DC 0 -> colour 0.5 in every channel: far from any clamp, so d(image)/d(dc) = C0 * weight.
        dc = torch.zeros((base.n, 3), dtype=torch.float32, device=base.device, requires_grad=True)
        probe = base.replace(sh_dc=dc, sh_rest=base.sh_rest[:, :0])
        rgb, _ = render(probe, cam, w, h, sh_degree=0, background=(0.0, 0.0, 0.0))
        (grad,) = torch.autograd.grad(rgb[..., 0].sum(), dc, allow_unused=True)
        if grad is not None:
            total += grad[:, 0].detach().to("cpu", torch.float64) / SH_C0
    return total.clamp_min(0.0)


def volume_factor(scales: torch.Tensor, v_pow: float = V_POW) -> torch.Tensor:
    """(V_j / ref) ** v_pow with V_j = prod(exp(scale_j)) and ref as in LightGaussian's code."""
    log_v = scales.detach().to("cpu", torch.float64).sum(dim=1)
    n = log_v.numel()
    if n == 0:
        return log_v
    ref = torch.sort(log_v, descending=True).values[int(0.9 * n)]
    return torch.exp(v_pow * (log_v - ref))


def significance(scene: Any, cameras: Sequence[Any], v_pow: float = V_POW, width: int | None = None,
                 height: int | None = None) -> np.ndarray:
    """LightGaussian's global significance score per Gaussian (float64 numpy, (N,))."""
    if not cameras:
        raise InputError("significance needs at least one camera")
    hits = hit_weights(scene, cameras, width, height)
    return (hits * volume_factor(scene.scales, v_pow)).numpy()


def proxy_significance(scene: Any, v_pow: float = V_POW) -> np.ndarray:
    """A render-free stand-in (the `fast` preset): opacity x largest cross-section area x volume term.

    A Gaussian's summed weight grows with its opacity and the screen area it covers; the product of
    its two largest scales is that area up to the view, so this ranks like I_j for typical views.
    """
    s = scene.scales.detach().to("cpu", torch.float64)
    top2 = torch.sort(s, dim=1, descending=True).values[:, :2].sum(dim=1)
    opacity = torch.sigmoid(scene.opacities.detach().to("cpu", torch.float64))
    return (opacity * torch.exp(top2) * volume_factor(scene.scales, v_pow)).numpy()


def prune_mask(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Keep-mask removing the `fraction` least significant Gaussians (LightGaussian: score <= the
    value at sorted index int(fraction * (N - 1)) goes, here made exact in count by a stable sort)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"prune fraction must be in [0, 1), got {fraction}")
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    drop = min(int(round(fraction * n)), max(n - 1, 0))  # always keep at least one Gaussian
    keep = np.ones(n, dtype=bool)
    if drop:
        order = np.argsort(scores, kind="stable")
        keep[order[:drop]] = False
    return keep

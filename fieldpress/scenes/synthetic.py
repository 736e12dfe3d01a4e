"""Synthetic Gaussian scenes of any size (1M Gaussians in well under a second) for load tests and
unit tests: Gaussians scattered on a torus with smooth colours, so renders show recognisable structure."""

from __future__ import annotations

import math

import numpy as np
import torch

from fieldpress.scenes.scene import REST_COUNTS, SH_C0, GaussianScene


def synthetic_scene(n: int = 10_000, sh_degree: int = 3, seed: int = 0, radius: float = 1.0,
                    extras: bool = False, dtype: torch.dtype = torch.float32) -> GaussianScene:
    """`n` Gaussians on a torus (major `radius`, minor radius/3) in a y-down world, SH to `sh_degree`.

    Scales are set so neighbouring Gaussians overlap; SH rest coefficients are small random values.
    With `extras`, a uint8 `segment` and a float32 `confidence` property are attached.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=gen, dtype=dtype) * 2 * math.pi
    v = torch.rand(n, generator=gen, dtype=dtype) * 2 * math.pi
    minor = radius / 3
    ring = radius + minor * torch.cos(v)
    # the torus lies in the x-z plane; y is "down" as in INRIA scenes
    means = torch.stack([ring * torch.cos(u), -minor * torch.sin(v), ring * torch.sin(u)], -1)
    area = 4 * math.pi * math.pi * radius * minor
    spacing = math.sqrt(area / max(n, 1))
    log_s = math.log(max(spacing * 0.7, 1e-6))
    scales = log_s + 0.3 * torch.randn(n, 3, generator=gen, dtype=dtype)
    scales[:, 1] -= 1.0  # flatter along one axis, like trained splats
    quats = torch.randn(n, 4, generator=gen, dtype=dtype)
    quats = quats / quats.norm(dim=1, keepdim=True)
    opacities = 1.0 + 1.5 * torch.randn(n, generator=gen, dtype=dtype)
    rgb = 0.5 + 0.45 * torch.stack([torch.cos(u), torch.sin(v), torch.sin(u + v)], -1)
    sh_dc = (rgb - 0.5) / SH_C0
    k = REST_COUNTS[sh_degree]
    sh_rest = 0.05 * torch.randn(n, k, 3, generator=gen, dtype=dtype)
    extra = {}
    if extras:
        rng = np.random.default_rng(seed)
        extra = {"segment": rng.integers(0, 255, n, dtype=np.uint8),
                 "confidence": rng.random(n, dtype=np.float32)}
    return GaussianScene(means=means.float(), scales=scales.float(), quats=quats.float(),
                         opacities=opacities.float(), sh_dc=sh_dc.float(), sh_rest=sh_rest.float(),
                         extras=extra, meta={"source_format": "synthetic"})

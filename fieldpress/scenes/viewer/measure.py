"""Render PSNR between two scenes from one camera with our renderer (the compare panel's button)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def to_uint8(rgb: Any) -> np.ndarray:
    """(H,W,3) float image in [0,1] (tensor or array) -> uint8, rounded as an 8-bit file would be."""
    if hasattr(rgb, "detach"):
        rgb = rgb.detach().to("cpu").float().numpy()
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def render_psnr(scene_a: Any, scene_b: Any, camera: Any, device: str | None = None) -> dict[str, Any]:
    """PSNR (8-bit RGB, full SH, black background) of scene B's render against scene A's from `camera`.

    Renders on CUDA when available (`device=None`), else on the CPU (slow: seconds to minutes).
    """
    import torch

    from fieldpress.metrics import psnr
    from fieldpress.scenes.renderer import render

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        scene_a, scene_b = scene_a.to(device), scene_b.to(device)
    t0 = time.perf_counter()
    width, height = int(camera.width), int(camera.height)
    img_a = to_uint8(render(scene_a, camera, width, height)[0])
    img_b = to_uint8(render(scene_b, camera, width, height)[0])
    value = float(psnr(img_a, img_b))
    return {"psnr": value, "width": width, "height": height, "seconds": time.perf_counter() - t0,
            "device": str(device), "images": (img_a, img_b)}

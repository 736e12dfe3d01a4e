"""antimatter15 `.splat`: headerless 32-byte records (position 3xf32, linear scale 3xf32, RGBA u8 with
colour = 0.5 + C0*dc and alpha = sigmoid(opacity), rotation 4xu8 w,x,y,z as q/|q|*128+128). No SH.
Recognised by its suffix only (there is no header to sniff)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldpress.errors import FormatError
from fieldpress.scenes.formats.quat_pack import logit_u8, normalized_quats, sigmoid
from fieldpress.scenes.formats.registry import SceneFormat
from fieldpress.scenes.scene import SH_C0, GaussianScene

RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert RECORD.itemsize == 32


def read(path: Path) -> GaussianScene:
    data = Path(path).read_bytes()
    if len(data) % RECORD.itemsize:
        raise FormatError(f"{path}: .splat size {len(data)} is not a multiple of 32 bytes")
    rec = np.frombuffer(data, RECORD)
    scale = rec["scale"].astype(np.float64)
    if np.any(scale <= 0) or not np.isfinite(scale).all():
        raise FormatError(f"{path}: .splat holds non-positive or non-finite scales; not a splat file?")
    rgba = rec["rgba"].astype(np.float64)
    sh_dc = (rgba[:, :3] / 255.0 - 0.5) / SH_C0
    quats = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    return GaussianScene.from_arrays(rec["position"], np.log(scale), quats, logit_u8(rgba[:, 3]), sh_dc,
                                     meta={})


def write(scene: GaussianScene, path: Path) -> None:
    s = scene.detach().to("cpu")
    rec = np.zeros(s.n, RECORD)
    rec["position"] = s.means.numpy()
    rec["scale"] = np.exp(s.scales.double().numpy())
    color = np.clip(0.5 + SH_C0 * s.sh_dc.double().numpy(), 0.0, 1.0) * 255.0
    alpha = sigmoid(s.opacities.numpy()) * 255.0
    rec["rgba"] = np.clip(np.round(np.concatenate([color, alpha[:, None]], 1)), 0, 255)
    rec["rot"] = np.clip(np.round(normalized_quats(s.quats.numpy()) * 128.0 + 128.0), 0, 255)
    Path(path).write_bytes(rec.tobytes())


# the scene-format registry loads this by entry point (group fieldpress.scene_formats)
FORMAT = SceneFormat(
    name="splat", suffixes=(".splat",), read=read, write=write, sniff=None, priority=0,
    description="antimatter15 .splat (32 B/G, no SH)")

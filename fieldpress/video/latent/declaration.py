"""The ``video/latent`` codec as the registry sees it (torch-free, so `fieldpress info` stays light):
name, version, and a header summary with the groups and the rate split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldpress.codec.registry import LazyCodec


def summarize(header: Mapping[str, Any]) -> dict[str, Any]:
    """What ``fieldpress info`` shows for a latent video: size, frames, groups and where the bytes go."""
    cfg = header.get("config") or {}
    groups = header.get("groups") or []
    out: dict[str, Any] = {
        "model": header.get("model"),
        "size": f"{header.get('width')}x{header.get('height')}",
        "frames": header.get("frames"),
        "first source frame": header.get("frame_start", 0),
        "fps": header.get("fps"),
        "lambda": header.get("lambda"),
        "groups": f"{len(groups)} of {cfg.get('group')} frames (each decodes alone)",
        "latent levels": f"{cfg.get('first_level')}..{(cfg.get('n_levels') or 0) - 1}",
        "frames from": ("the key frame (each group's first), warped; later frames' latents from level "
                        f"{cfg.get('p_first_level')}" if cfg.get("reference") == "key"
                        else "their own latent frames (no key frame)"),
    }
    try:
        lat = sum(int(g["latent_bytes"]) for g in groups)
        wts = sum(int(g["weight_bytes"]) for g in groups)
        total = max(lat + wts, 1)
        out["rate split"] = (f"latents {lat} B ({100 * lat / total:.1f}%), networks {wts} B "
                             f"({100 * wts / total:.1f}%)")
        out["bytes per group"] = [int(g["latent_bytes"]) + int(g["weight_bytes"]) for g in groups]
    except (KeyError, TypeError, ValueError):
        out["rate split"] = "unknown (damaged group entries)"
    return {k: v for k, v in out.items() if v is not None}


LATENT = LazyCodec("video", "latent", 1, "fieldpress.video.latent.codec:CODEC", summarize, None,
                   "latent grids per group of frames with a context model that sees the previous frame, "
                   "later frames warped from a key frame (after Cool-chic video / C3 video)")

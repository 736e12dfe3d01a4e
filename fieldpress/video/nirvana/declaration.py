"""The ``video/nirvana`` codec as the registry sees it: name, version and a torch-free summary for
``fieldpress info`` (groups, key groups, the rate split). Encoding and decoding live in
`fieldpress.video.nirvana.codec`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldpress.codec.registry import LazyCodec


def summarize(header: Mapping[str, Any]) -> dict[str, Any]:
    """What ``fieldpress info`` shows for a NIRVANA file."""
    cfg = header.get("config") or {}
    groups = header.get("groups") or []
    keys = [g[0] for g in groups if isinstance(g, list) and len(g) == 3 and g[2]]
    rate = header.get("rate") or {}
    fit = header.get("fit") if isinstance(header.get("fit"), dict) else {}
    total = sum(v for v in rate.values() if isinstance(v, int)) if isinstance(rate, dict) else 0
    out: dict[str, Any] = {
        "model": "nirvana",
        "size": f"{header.get('width')}x{header.get('height')}",
        "frames": header.get("frames"),
        "first source frame": header.get("frame_start", 0),
        "fps": header.get("fps"),
        "groups": len(groups),
        "group size": cfg.get("group") if isinstance(cfg, dict) else None,
        "group lengths": sorted({g[1] for g in groups if isinstance(g, list) and len(g) == 3}),
        "key groups": len(keys),
        "key group first frames": keys[:32],
        "network": (f"patch {cfg.get('patch')}, SIREN {cfg.get('layers')}x{cfg.get('hidden')}, "
                    f"{cfg.get('bits')}-bit weights") if isinstance(cfg, dict) else None,
        "params per group": fit.get("params_per_group"),
        "lambda": fit.get("lambda"),
        "steps per group": fit.get("steps"),
    }
    budget = fit.get("budget")
    if isinstance(budget, dict) and budget.get("cpu_minutes") is not None:
        out["steps planned from"] = f"--minutes {budget.get('cpu_minutes')} (CPU time)"
    if isinstance(rate, dict) and total:
        out["rate split"] = {k: f"{v} B ({100 * v / total:.1f}%)" for k, v in rate.items()
                             if isinstance(v, int)}
    return {k: v for k, v in out.items() if v is not None}


NIRVANA = LazyCodec("video", "nirvana", 1, "fieldpress.video.nirvana.codec:CODEC", summarize,
                    description="NIRVANA: patch-wise SIREN per group of frames, residual-coded weights "
                                "(Maiya et al. 2023)")

"""The video codecs as the codec registry sees them: names, versions and header summaries, without
torch (so `fieldpress info` stays light). Encoding and decoding live in `fieldpress.video.codec`; the
file format is described in docs/formats/video.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldpress.codec.registry import LazyCodec

LEGACY_FORMAT = "fieldpress-video/1"  # the header's "format" before codecs were named


def _modulation(spec: Any) -> str | None:
    """'cam (grid 30)' from the block config's modulation entry; None when the blocks have none."""
    if not isinstance(spec, dict) or spec.get("kind") in (None, "", "none"):
        return None
    extra = ", ".join(f"{k} {v}" for k, v in sorted(spec.items()) if k != "kind")
    return f"{spec['kind']} ({extra})" if extra else str(spec["kind"])


def summarize(header: Mapping[str, Any]) -> dict[str, Any]:
    """What ``fieldpress info`` shows for a video container."""
    cfg = header.get("config", {})
    fit = header.get("fit") or {}
    out = {
        "model": header.get("model"),
        "size": f"{header.get('width')}x{header.get('height')}",
        "frames": header.get("frames"),
        "first source frame": header.get("frame_start", 0),
        "fps": header.get("fps"),
        "strides": cfg.get("strides"),
        "modulation": _modulation(cfg.get("modulation")),
        "stored params": fit.get("stored_params"),
        "weight bits": fit.get("bits"),
        "pruned": fit.get("prune"),
        "epochs": fit.get("epochs"),
        "rate trained": _rd_summary(fit.get("rd")),
    }
    side = header.get("side_info") or ({"embedding": header["embed"]} if "embed" in header else {})
    for name, meta in side.items():  # HNeRV: "embedding bits", "embedding shape"
        out[f"{name} bits"] = meta.get("bits")
        out[f"{name} shape"] = meta.get("shape")
    return {k: v for k, v in out.items() if v is not None}


def _rd_summary(rd: Any) -> str | None:
    """'lambda 0.005, 123,456 coded bits (rate model 123,000)' for a rate-trained file (', steered to
    0.2 bpp' when --target-bpp chose lambda), else None."""
    if not isinstance(rd, dict):
        return None
    try:
        steered = f", steered to {float(rd['target_bpp']):g} bpp" if "target_bpp" in rd else ""
        return (f"lambda {float(rd['lambda']):g}{steered}, {int(rd['payload_bits']):,} coded bits "
                f"(rate model {float(rd['model_bits']):,.0f})")
    except (KeyError, TypeError, ValueError):
        return "yes"


def _legacy(model: str) -> Any:
    """Claims a video header written before codecs were named, by its model name."""
    return lambda header: header.get("format") == LEGACY_FORMAT and header.get("model") == model


VERSION = 3
"""Version 3 (this release, files fitted with a trained rate: ``--lambda`` / ``--quality``): integer weights
and side information range-coded under per-channel Laplace tables (``weights.coder`` = "laplace").
Version 2 (files without a trained rate are still written so): side information as chunked quantized
streams (``side_info`` in the header); version 1 (and files naming no codec): HNeRV's embeddings under
``embed`` / ``e/000000`` ... All three read."""
PLAIN_VERSION = 2
"""The version stamped on files without a trained rate (their layout is version 2's, byte for byte)."""


def _codec(name: str, description: str) -> LazyCodec:
    return LazyCodec("video", name, VERSION, "fieldpress.video.codec:VIDEO_CODEC", summarize, _legacy(name),
                     description)


HNERV = _codec("hnerv", "HNeRV: a conv decoder from per-frame content embeddings (Chen et al. 2023)")
NERV = _codec("nerv", "NeRV: a conv decoder from a positional encoding of the frame index (Chen et al. 2021)")
NERVPP = _codec("nervpp", "NeRV++: NeRV with separable conv blocks and CAM (Ghorbel et al. 2024)")
HINERV = _codec("hinerv", "HiNeRV: temporal and hierarchical local grids, bilinear upsampling and ConvNeXt "
                          "blocks, trained on patches (Kwan et al. 2023)")

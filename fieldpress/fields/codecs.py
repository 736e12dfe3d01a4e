"""The image codecs as the codec registry sees them: names, versions and header summaries, without
torch (so `fieldpress info` stays light). Encoding and decoding live in `fieldpress.fields.image`
(`FIELD_CODEC`); `fieldpress.fields.pipeline` maps `fit-image --model` names to codecs. The layout:
docs/formats/image.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldpress.codec.registry import LazyCodec

LEGACY_FORMAT = 1  # the header's "format" before codecs were named


def summarize(header: Mapping[str, Any]) -> dict[str, Any]:
    """What `fieldpress info` shows for an image file (from the header only)."""
    image = dict(header.get("image", {}))
    model = dict(header.get("model", {}))
    out: dict[str, Any] = {
        "size": f"{image.get('width')}x{image.get('height')}",
        "mode": image.get("mode"),
        "bit_depth": image.get("bit_depth"),
        "model": model.get("name"),
        "params": model.get("n_params"),
        "bits": header.get("bits"),
    }
    for key in ("psnr", "psnr_channels", "steps"):
        if key in header:
            out[key] = header[key]
    return out


def summarize_latent(header: Mapping[str, Any]) -> dict[str, Any]:
    """What `fieldpress info` shows for a latent-grid image file (from the header only)."""
    config = dict(header.get("config", {}))
    out = {"size": f"{header.get('width')}x{header.get('height')}", "model": "latent",
           "latent levels": config.get("levels"), "weight step shifts": header.get("shifts")}
    for key in ("psnr", "steps"):
        if key in header:
            out[key] = header[key]
    return {k: v for k, v in out.items() if v is not None}


LATENT = LazyCodec("image", "latent", 1, "fieldpress.fields.latent.method:LATENT_CODEC", summarize_latent,
                   description="overfitted latent grids + learned entropy model, rate-distortion trained "
                               "(after Cool-chic and C3)")

FIELD = LazyCodec("image", "field", 1, "fieldpress.fields.image:FIELD_CODEC", summarize,
                  lambda header: header.get("format") == LEGACY_FORMAT,
                  "a coordinate field (SIREN, Fourier features, hash grid, CAM) with quantized weights")

"""The light half of the ``image/recombiner`` codec (no torch): its name, version and `fieldpress info`
summary; the encoder and decoder live in `fieldpress.fields.recombiner.codec`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldpress.codec.registry import LazyCodec


def summarize(header: Mapping[str, Any]) -> dict[str, Any]:
    """What `fieldpress info` shows for a RECOMBINER file (from the header only)."""
    image = header.get("image") if isinstance(header.get("image"), dict) else {}
    blocks, bits = header.get("blocks"), header.get("block_bits")
    out = {"size": f"{image.get('width')}x{image.get('height')}", "model": "recombiner",
           "prior": header.get("prior"), "REC blocks": blocks, "bits per block": bits,
           "index bits": blocks * bits if isinstance(blocks, int) and isinstance(bits, int) else None}
    for key in ("psnr", "steps"):
        if key in header:
            out[key] = header[key]
    return {k: v for k, v in out.items() if v is not None}


RECOMBINER = LazyCodec("image", "recombiner", 1, "fieldpress.fields.recombiner.codec:CODEC", summarize,
                       description="RECOMBINER: a Bayesian INR posterior sample sent by relative entropy "
                                   "coding under a learned prior (He et al., ICLR 2024)")

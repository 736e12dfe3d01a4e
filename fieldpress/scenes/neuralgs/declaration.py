"""The NeuralGS scene codec as the codec registry sees it: name, version and a header summary, without
torch (so `fieldpress info` stays light); the work lives in `fieldpress.scenes.neuralgs.codec`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fieldpress.codec.registry import LazyCodec


def summarize(header: Mapping[str, Any]) -> dict[str, Any]:
    """What `fieldpress info` shows for a NeuralGS file: counts, the MLPs and the rate split."""
    out: dict[str, Any] = {"gaussians": header.get("gaussians"), "sh_degree": header.get("sh_degree")}
    field = header.get("field")
    if isinstance(field, Mapping):
        out["mlps"] = (f"{field.get('clusters')} clusters x tanh MLP {field.get('layers')} x "
                       f"{field.get('hidden')}, PE {field.get('frequencies')} levels")
    rate = header.get("rate")
    if isinstance(rate, Mapping):
        out["rate_bytes"] = ", ".join(f"{k} {v}" for k, v in rate.items())
    src = header.get("source")
    if isinstance(src, Mapping) and src.get("gaussians"):
        out["gaussians_in"] = src["gaussians"]
    pos = header.get("position")
    if isinstance(pos, Mapping) and pos.get("bits"):
        out["position_bits"] = pos["bits"]
    return out


NEURALGS = LazyCodec("scene", "neuralgs", 1, "fieldpress.scenes.neuralgs.codec:CODEC", summarize,
                     description="NeuralGS: pruned Gaussians clustered by attributes, one tiny MLP per "
                     "cluster mapping position to attributes")

"""The scene codecs as the codec registry sees them: names, versions and header summaries, without
torch (so `fieldpress info` stays light). Each codec's work lives in its own subpackage
(`fieldpress.scenes.lightgaussian`)."""

from __future__ import annotations

from typing import Any

from fieldpress.codec.registry import LazyCodec


def summarize(header: dict[str, Any]) -> dict[str, Any]:
    """What `fieldpress info` shows for a scene file, from the header alone."""
    out: dict[str, Any] = {"gaussians": header.get("gaussians"), "sh_degree": header.get("sh_degree")}
    vt = header.get("vectree")
    if isinstance(vt, dict):
        kept = f"{vt['kept_quant'].get('bits')}-bit" if isinstance(vt.get("kept_quant"), dict) else "float16"
        out["vectree"] = f"{vt.get('kept')} kept {kept}, codebook {vt.get('codebook')} x {vt.get('dims')}"
    src = header.get("source") or {}
    if src.get("gaussians"):
        out["gaussians_in"] = src["gaussians"]
    if src.get("bytes") and header.get("gaussians"):
        out["source_bytes"] = src["bytes"]
    pos = header.get("position") or {}
    if pos.get("bits"):
        out["position_bits"] = pos["bits"]
    return out


LIGHTGAUSSIAN = LazyCodec("scene", "lightgaussian", 1,
                          "fieldpress.scenes.lightgaussian.codec:LIGHTGAUSSIAN_CODEC", summarize,
                          description="LightGaussian: significance pruning, SH distillation, VecTree",
                          aliases=("lightgaussian-vectree",))

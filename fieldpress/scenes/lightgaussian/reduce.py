"""Count reduction: significance pruning or moment-matched merging, or whichever renders closer to the
input at the same count (`auto`, judged on a few small orbit views)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fieldpress.errors import InputError
from fieldpress.scenes.lightgaussian.merge import merge_scene
from fieldpress.scenes.lightgaussian.prune import prune_scene

REDUCERS = ("prune", "merge", "auto")


@dataclass(frozen=True)
class ReduceConfig:
    """How `auto` judges: orbit views and their width (small: it renders three scenes)."""

    method: str = "auto"
    judge_views: int = 4
    judge_width: int = 128

    def validate(self) -> None:
        """InputError for an unknown method."""
        if self.method not in REDUCERS:
            raise InputError(f"--reduce must be one of {', '.join(REDUCERS)}, got {self.method!r}")


def reduce_count(scene: Any, scores: np.ndarray, fraction: float, config: ReduceConfig,
                 device: Any = "cpu") -> tuple[Any, np.ndarray, dict[str, Any]]:
    """`scene` with `fraction` fewer Gaussians (pruned or merged), its scores, and a report."""
    config.validate()
    pruned, keep = prune_scene(scene, scores, fraction)
    if pruned.n == scene.n or config.method == "prune":
        return pruned, scores[keep], {"method": "prune", "gaussians": pruned.n}
    merged, merged_scores = merge_scene(scene, pruned.n, scores)
    if config.method == "merge":
        return merged, merged_scores, {"method": "merge", "gaussians": merged.n}
    psnr_prune, psnr_merge = _judge(scene, [pruned, merged], config, device)
    report = {"method": "merge" if psnr_merge > psnr_prune else "prune", "gaussians": pruned.n,
              "judged": {"prune_psnr": round(psnr_prune, 3), "merge_psnr": round(psnr_merge, 3),
                         "views": config.judge_views, "width": config.judge_width}}
    if psnr_merge > psnr_prune:
        return merged, merged_scores, report
    return pruned, scores[keep], report


def _judge(scene: Any, candidates: list[Any], config: ReduceConfig, device: Any) -> list[float]:
    """Render PSNR of each candidate against `scene` on the judging views."""
    from fieldpress.metrics import psnr
    from fieldpress.scenes.cameras import orbit
    from fieldpress.scenes.lightgaussian.pipeline import render_views

    cams = orbit(scene, config.judge_views, width=config.judge_width)
    reference = render_views(scene, cams, device)
    return [float(psnr(reference, render_views(c, cams, device))) for c in candidates]

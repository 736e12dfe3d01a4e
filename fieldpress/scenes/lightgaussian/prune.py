"""Significance pruning (LightGaussian): drop the least significant fraction of Gaussians, then
optionally recover by fine-tuning the kept ones against the input scene's own renders."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fieldpress.scenes.lightgaussian.distill import StageCheckpoint, TeacherFitConfig, fit_to_teacher
from fieldpress.scenes.lightgaussian.significance import prune_mask

RECOVERY_TRAINABLE = ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest")


def prune_scene(scene: Any, scores: np.ndarray, fraction: float) -> tuple[Any, np.ndarray]:
    """The scene without its `fraction` least significant Gaussians, and the keep mask (N,)."""
    keep = prune_mask(scores, fraction)
    if keep.all():
        return scene, keep
    return scene.subset(torch.from_numpy(keep)), keep


def recover(pruned: Any, teacher: Any, cameras: Sequence[Any], config: TeacherFitConfig,
            device: torch.device | str = "cpu", show_progress: bool = False,
            checkpoint: StageCheckpoint | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune every attribute of the pruned scene to the teacher's renders (no pseudo-views)."""
    trainable = tuple(a for a in RECOVERY_TRAINABLE if not (a == "sh_rest" and pruned.sh_degree == 0))
    cfg = dataclasses.replace(config, trainable=trainable, pseudo_views=False, description="recover")
    return fit_to_teacher(pruned, teacher, cameras, cfg, device, show_progress, checkpoint)

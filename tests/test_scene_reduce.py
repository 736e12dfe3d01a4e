"""Merging as a count reducer beside pruning, and the quality knob (issue 18). Tiny scenes and views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldpress.errors import InputError
from fieldpress.scenes.lightgaussian.merge import _covariances, merge_pairs, merge_scene
from fieldpress.scenes.lightgaussian.pipeline import CompressOptions, compress, decode_bytes, quality_preset
from fieldpress.scenes.lightgaussian.reduce import ReduceConfig, reduce_count
from fieldpress.scenes.scene import GaussianScene, concat
from fieldpress.scenes.synthetic import synthetic_scene

TINY_EVAL = {"eval_views": 1, "eval_width": 32, "significance_views": 2, "significance_width": 32}


def test_merging_a_gaussian_with_its_copy_gives_it_back() -> None:
    s = synthetic_scene(40, sh_degree=1, seed=0)
    pairs = np.stack([np.arange(40), np.arange(40) + 40], 1)
    merged, scores = merge_pairs(concat([s, s]), pairs, np.ones(80))
    assert merged.n == 40 and np.allclose(scores, 2.0)
    cov, cov_in = _covariances(merged.scales, merged.quats), _covariances(s.scales, s.quats)
    assert torch.allclose(cov, cov_in, atol=1e-6)
    assert torch.allclose(merged.means, s.means) and torch.allclose(merged.sh_rest, s.sh_rest)
    a = torch.sigmoid(s.opacities)
    assert torch.allclose(torch.sigmoid(merged.opacities), 2 * a - a * a, atol=1e-5)  # union


def test_merge_matches_the_first_two_moments() -> None:
    """Two equal-weight round Gaussians 2 apart on x: mean halfway, x variance grows by 1 (d^2/4)."""
    scene = GaussianScene.from_arrays(means=[[-1.0, 0, 0], [1.0, 0, 0]], scales=np.log([[0.5] * 3] * 2),
                                      quats=[[1.0, 0, 0, 0]] * 2, opacities=[0.0, 0.0],
                                      sh_dc=[[1.0, 0, 0], [0.0, 1.0, 0]])
    merged, _ = merge_pairs(scene, np.array([[0, 1]]), np.ones(2))
    cov = _covariances(merged.scales, merged.quats)[0]
    assert torch.allclose(merged.means[0], torch.zeros(3), atol=1e-6)
    assert torch.allclose(cov, torch.diag(torch.tensor([1.25, 0.25, 0.25], dtype=torch.float64)), atol=1e-5)
    assert torch.allclose(merged.sh_dc[0], torch.tensor([0.5, 0.5, 0.0]))


def test_merge_scene_reaches_the_count_and_keeps_the_score_mass() -> None:
    scene = synthetic_scene(500, sh_degree=2, seed=4)
    scene.extras["tag"] = np.arange(500, dtype=np.int32)
    scores = np.random.default_rng(0).random(500)
    merged, merged_scores = merge_scene(scene, 170, scores)
    assert merged.n == 170 and merged.sh_degree == 2 and merged.extras["tag"].shape == (170,)
    assert merged_scores.sum() == pytest.approx(scores.sum())
    assert bool(torch.isfinite(merged.scales).all() and torch.isfinite(merged.opacities).all())
    with pytest.raises(InputError):
        merge_scene(scene, 0)


def test_auto_reduction_judges_both_at_equal_count() -> None:
    scene = synthetic_scene(300, sh_degree=0, seed=5)
    scores = np.random.default_rng(1).random(300)
    out, out_scores, report = reduce_count(scene, scores, 0.5, ReduceConfig("auto", 1, 32))
    judged = report["judged"]
    assert out.n == 150 and len(out_scores) == 150
    assert report["method"] == ("merge" if judged["merge_psnr"] > judged["prune_psnr"] else "prune")
    with pytest.raises(InputError, match="--reduce"):
        ReduceConfig("drop").validate()


def test_quality_levels_are_ordered_real_files() -> None:
    scene = synthetic_scene(300, sh_degree=0, seed=6)
    sizes = {}
    for level in (2, 5, 9):
        result = compress(scene, CompressOptions(quality=level, **TINY_EVAL))
        decoded = decode_bytes(result.data)
        assert decoded.n == result.metrics["gaussians_out"] and result.metrics["preset"] == f"q{level}"
        sizes[level] = len(result.data)
    assert sizes[2] < sizes[5] < sizes[9]
    assert quality_preset(4).prune == pytest.approx(0.5) and quality_preset(8).codec.position_bits == 14
    with pytest.raises(InputError, match="quality"):
        quality_preset(10)


def test_target_psnr_picks_the_smallest_level_reaching_it() -> None:
    scene = synthetic_scene(300, sh_degree=0, seed=7)
    result = compress(scene, CompressOptions(target_psnr=30.0, **TINY_EVAL))
    report = result.metrics["target_psnr"]
    assert report["reached"] and result.metrics["render_psnr"] >= 30.0
    lower = [q for q, t in report["tried"].items() if q < report["quality"]]
    assert all(report["tried"][q]["render_psnr"] < 30.0 for q in lower)
    with pytest.raises(InputError, match="target-psnr"):
        CompressOptions(target_psnr=30.0, target_bytes=1000).resolved()


def test_given_significance_gives_the_same_file_as_rendering_it() -> None:
    from fieldpress.scenes.lightgaussian.pipeline import significance_cameras
    from fieldpress.scenes.lightgaussian.significance import significance

    scene = synthetic_scene(200, sh_degree=1, seed=8)
    opts = CompressOptions(quality=5, evaluate=False, **TINY_EVAL)
    scores = significance(scene, significance_cameras(scene, None, opts))
    given = compress(scene, opts, significance=scores)
    assert given.data == compress(scene, opts).data
    assert given.metrics["gaussians_out"] == round(200 * 0.6)
    with pytest.raises(InputError, match="significance"):
        compress(scene, opts, significance=scores[:10])


def test_quality_ladder_is_monotone_in_kept_share_and_bits() -> None:
    from fieldpress.scenes.lightgaussian.pipeline import QUALITY_LEVELS

    levels = [QUALITY_LEVELS[q] for q in range(1, 9)]
    assert all(a.keep <= b.keep for a, b in zip(levels, levels[1:]))
    assert all(a.keep < b.keep or a.position_bits + a.scale_bits + a.rotation_bits
               < b.position_bits + b.scale_bits + b.rotation_bits for a, b in zip(levels, levels[1:]))
    assert quality_preset(5).codec.scale_bits == 7 and quality_preset(1).codec.vectree.keep_bits == 5
    assert quality_preset(2).prune == pytest.approx(0.66) and quality_preset(3).codec.scale_bits == 8

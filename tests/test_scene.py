"""GaussianScene: construction, validation, subsets, SH degree changes, bounds, synthetic scenes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fieldpress.errors import InputError
from fieldpress.scenes import GaussianScene
from fieldpress.scenes.scene import concat, sh_degree_of
from fieldpress.scenes.synthetic import synthetic_scene


def test_synthetic_scene_shapes_and_speed() -> None:
    t0 = time.perf_counter()
    big = synthetic_scene(1_000_000, sh_degree=3)
    assert time.perf_counter() - t0 < 10
    assert big.n == 1_000_000 and big.sh_rest.shape == (1_000_000, 15, 3)
    big.validate()
    small = synthetic_scene(10, sh_degree=1, extras=True)
    assert small.sh_degree == 1 and small.extras["segment"].dtype == np.uint8
    assert torch.equal(synthetic_scene(10, seed=3).means, synthetic_scene(10, seed=3).means)


def test_subset_by_mask_and_index_keeps_extras() -> None:
    scene = synthetic_scene(50, sh_degree=2, extras=True)
    mask = torch.zeros(50, dtype=torch.bool)
    mask[[1, 5, 7]] = True
    sub = scene.subset(mask)
    assert sub.n == 3 and torch.equal(sub.means, scene.means[[1, 5, 7]])
    assert np.array_equal(sub.extras["segment"], scene.extras["segment"][[1, 5, 7]])
    by_index = scene.subset(np.array([7, 1]))
    assert torch.equal(by_index.sh_rest, scene.sh_rest[[7, 1]])
    with pytest.raises(InputError):
        scene.subset(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(InputError):
        scene.subset([99])


def test_with_sh_degree_truncates_and_pads() -> None:
    scene = synthetic_scene(20, sh_degree=3)
    d1 = scene.with_sh_degree(1)
    assert d1.sh_degree == 1 and torch.equal(d1.sh_rest, scene.sh_rest[:, :3])
    back = d1.with_sh_degree(3)
    assert back.sh_degree == 3 and float(back.sh_rest[:, 3:].abs().sum()) == 0
    with pytest.raises(InputError):
        scene.with_sh_degree(4)
    assert [sh_degree_of(k) for k in (0, 3, 8, 15)] == [0, 1, 2, 3]


def test_bounds_are_robust_to_outliers() -> None:
    scene = synthetic_scene(1000, sh_degree=0)
    means = scene.means.clone()
    means[0] = torch.tensor([1e6, 1e6, 1e6])
    lo, hi = scene.replace(means=means).bounds(1.0)
    assert float(hi.max()) < 10 and float(lo.min()) > -10
    lo0, hi0 = scene.replace(means=means).bounds(0.0)
    assert float(hi0.max()) == pytest.approx(1e6)


def test_validation_errors_are_clear() -> None:
    scene = synthetic_scene(5, sh_degree=0)
    with pytest.raises(InputError, match=r"scene.quats has shape \(5, 3\)"):
        scene.replace(quats=scene.quats[:, :3]).validate()
    bad = scene.opacities.clone()
    bad[2] = float("inf")
    with pytest.raises(InputError, match="non-finite values .* in opacities for 1 Gaussians"):
        scene.replace(opacities=bad).validate()
    with pytest.raises(InputError, match="degree 0-3"):
        scene.replace(sh_rest=torch.zeros(5, 4, 3)).validate()
    with pytest.raises(InputError, match="extra property"):
        scene.replace(extras={"x": np.zeros(4)}).validate()


def test_from_arrays_to_device_concat_and_colors() -> None:
    scene = GaussianScene.from_arrays(means=np.zeros((2, 3)), scales=np.zeros((2, 3)),
                                      quats=[[1, 0, 0, 0]] * 2, opacities=[0.0, 1.0],
                                      sh_dc=np.zeros((2, 3)), meta={"antialiased": True})
    assert scene.means.dtype == torch.float32 and scene.sh_degree == 0 and scene.antialiased
    assert torch.allclose(scene.colors_dc(), torch.full((2, 3), 0.5))
    both = concat([scene, scene.to("cpu")])
    assert both.n == 4 and "GaussianScene(n=4" in repr(both)

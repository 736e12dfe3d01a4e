"""LightGaussian pieces: position coding, VecTree, significance (against a brute-force count), the
.fpg codec round trip, determinism and damage detection."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from fieldpress.errors import FormatError, InputError
from fieldpress.scenes.lightgaussian import position as pc
from fieldpress.scenes.lightgaussian.codec import (
    CodecConfig,
    decode_streams,
    encode_scene,
    from_smallest_three,
    read_fpg,
    smallest_three,
    write_fpg,
)
from fieldpress.scenes.lightgaussian.significance import (
    hit_weights,
    prune_mask,
    significance,
    volume_factor,
)
from fieldpress.scenes.lightgaussian.vectree import VecTreeConfig, vectree_encode, weighted_kmeans


# ----------------------------------------------------------------------------- positions
def test_morton_roundtrip_and_order():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 1 << 21, size=(1000, 3), dtype=np.uint64)
    codes = pc.morton_encode(cells, 21)
    assert np.array_equal(pc.morton_decode(codes, 21), cells)
    # x is the lowest bit: (1,0,0) -> 1, (0,1,0) -> 2, (0,0,1) -> 4, (1,1,1) -> 7
    unit = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.uint64)
    assert pc.morton_encode(unit, 4).tolist() == [1, 2, 4, 7]


def test_delta_code_roundtrip_extremes():
    codes = np.array([0, 0, 1, 2, 3, 1 << 40, (1 << 63) - 1, (1 << 63) + 5], dtype=np.uint64)
    lengths, mantissa = pc.encode_deltas(codes)
    assert lengths.dtype == np.uint8 and lengths.max() <= 64
    assert np.array_equal(pc.decode_deltas(lengths, mantissa), codes)


def test_positions_roundtrip_within_half_step():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(5000, 3)).astype(np.float32) * np.array([1.0, 5.0, 0.1], np.float32)
    means[10] = means[11]  # duplicate cell
    coded = pc.encode_positions(means, 16)
    back = pc.decode_positions(coded.grid, coded.lengths, coded.mantissa)
    step = np.asarray(coded.grid.step)
    assert np.all(np.abs(back - means[coded.order]) <= step * 0.5 + 1e-6)
    assert sorted(coded.order.tolist()) == list(range(5000))
    # the code is much smaller than 3 x 16 bits per point
    assert coded.mantissa.nbytes + coded.lengths.size * 0.5 < 5000 * 6


def test_positions_damage_detected():
    coded = pc.encode_positions(np.random.default_rng(2).normal(size=(100, 3)), 12)
    with pytest.raises(FormatError):
        pc.decode_positions(coded.grid, coded.lengths, coded.mantissa[:-3])
    bad = coded.lengths.copy()
    bad[5] = 60
    with pytest.raises(FormatError):
        pc.decode_positions(coded.grid, bad, coded.mantissa)


def test_smallest_three_roundtrip():
    q = np.random.default_rng(3).normal(size=(500, 4)).astype(np.float32)
    axis, three = smallest_three(q)
    back = from_smallest_three(axis, three)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dots = np.abs((back * qn).sum(1))  # same rotation up to sign
    assert np.allclose(dots, 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- VecTree
def test_vectree_split_and_weighting():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 9)).astype(np.float32)
    sig = rng.random(600)
    code = vectree_encode(x, sig, VecTreeConfig(codebook_size=32, keep_fraction=0.4, iterations=8,
                                                min_vectors_per_code=4))
    assert code.keep_mask.sum() == 240
    assert np.all(sig[code.keep_mask].min() >= sig[~code.keep_mask].max())  # top 40% kept
    assert code.kept.dtype == np.float16 and code.codebook.dtype == np.float16
    assert code.codebook.shape == (32, 9)
    decoded = code.decode()
    assert np.allclose(decoded[code.keep_mask], x[code.keep_mask], atol=2e-3)
    # weighting: a heavy vector is represented better by a weighted codebook than by an unweighted one
    xt = torch.as_tensor(x)
    w = torch.ones(600)
    w[0] = 1e4
    cb_w = weighted_kmeans(xt, w, 8, 10, seed=0)
    err_w = ((cb_w - xt[0]) ** 2).sum(1).min()
    assert float(err_w) < 1e-3


def test_vectree_is_deterministic():
    rng = np.random.default_rng(5)
    x, sig = rng.normal(size=(300, 6)).astype(np.float32), rng.random(300)
    a = vectree_encode(x, sig, VecTreeConfig(codebook_size=16, seed=3))
    b = vectree_encode(x, sig, VecTreeConfig(codebook_size=16, seed=3))
    assert np.array_equal(a.index, b.index) and np.array_equal(a.codebook, b.codebook)


# ----------------------------------------------------------------------------- significance
def _tiny_scene(n: int = 50, seed: int = 0):
    from fieldpress.scenes.scene import GaussianScene

    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 2.0
    scales = torch.log(0.05 + 0.15 * torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = torch.randn(n, generator=g) * 2
    dc = torch.randn(n, 3, generator=g)
    return GaussianScene.from_arrays(means, scales, quats, opac, dc)


def _brute_force_weights(scene, camera) -> np.ndarray:
    """Per pixel, front to back: weight_j += alpha_j * T (the renderer's inclusion rules), in float64."""
    R = importlib.import_module("fieldpress.scenes.renderer")

    with torch.no_grad():
        p = R.project(scene, camera, 0)
        x0, x1, y0, y1 = (v.numpy() for v in R.tile_ranges(p, camera.width, camera.height))
    means, conics = p.means2d.double().numpy(), p.conics.double().numpy()
    opac, index = p.opacities.double().numpy(), p.index.numpy()
    weights = np.zeros(scene.n)
    for py in range(camera.height):
        for px in range(camera.width):
            tx, ty = px // R.TILE, py // R.TILE
            cand = np.nonzero((x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1))[0]
            t = 1.0
            for g in cand:
                dx, dy = means[g, 0] - (px + 0.5), means[g, 1] - (py + 0.5)
                a, b, c = conics[g]
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                if sigma < 0:
                    continue
                alpha = min(R.ALPHA_MAX, opac[g] * np.exp(-sigma))
                if alpha < R.ALPHA_MIN:
                    continue
                if t * (1 - alpha) <= R.T_MIN:
                    break
                weights[index[g]] += alpha * t
                t *= 1 - alpha
    return weights


def test_significance_matches_brute_force_on_50_gaussians():
    from fieldpress.scenes.cameras import orbit

    scene = _tiny_scene(50)
    cams = orbit(scene, 2, width=40)
    hits = hit_weights(scene, cams).numpy()
    brute = sum(_brute_force_weights(scene, c) for c in cams)
    assert brute.sum() > 10 and (brute > 0).sum() >= 25
    np.testing.assert_allclose(hits, brute, rtol=2e-3, atol=1e-3)
    scores = significance(scene, cams)
    log_v = scene.scales.double().sum(1).numpy()
    ref = np.sort(log_v)[::-1][int(0.9 * 50)]
    np.testing.assert_allclose(scores, brute * np.exp(0.1 * (log_v - ref)), rtol=2e-3, atol=1e-3)


def test_volume_factor_and_prune_mask():
    scales = torch.log(torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [0.5, 0.5, 0.5]]))
    f = volume_factor(scales).numpy()
    assert f[1] > f[0] > f[2]
    keep = prune_mask(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), 0.4)
    assert keep.tolist() == [True, False, True, False, True]
    with pytest.raises(InputError):
        prune_mask(np.ones(3), 1.0)


# ----------------------------------------------------------------------------- the .fpg codec
def _scene_sh3(n: int = 400):
    from fieldpress.scenes.synthetic import synthetic_scene

    s = synthetic_scene(n, sh_degree=3, seed=1)
    return s.replace(extras={"transform": np.arange(n, dtype=np.float32)})


def test_fpg_roundtrip_and_info(tmp_path):
    from fieldpress.codec.container import read_info
    from fieldpress.scenes.formats import load_scene

    scene = _scene_sh3()
    cfg = CodecConfig(vectree=VecTreeConfig(codebook_size=64, iterations=4))
    enc = encode_scene(scene, np.arange(scene.n, dtype=np.float64), cfg)
    path = tmp_path / "s.fpg"
    size = write_fpg(path, enc)
    assert size == path.stat().st_size and size < scene.n * 248 / 3
    back = read_fpg(path)
    decoded = decode_streams(enc.header, enc.streams)  # what the encoder's own streams decode to
    for name in ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest"):
        assert torch.equal(getattr(back, name), getattr(decoded, name)), name
    assert back.sh_degree == 3 and back.n == scene.n
    # extras survive, reordered like everything else
    assert sorted(back.extras["transform"].tolist()) == list(range(scene.n))
    order = back.extras["transform"].astype(int)
    assert np.abs(back.means.numpy() - scene.means.numpy()[order]).max() < 1e-3
    assert np.abs(back.sh_dc.numpy() - scene.sh_dc.numpy()[order]).max() < 0.02
    info = read_info(path).to_dict()
    assert info["kind"] == "scene" and info["summary"]["gaussians"] == scene.n
    assert info["summary"]["sh_degree"] == 3
    assert load_scene(path).n == scene.n  # readable through the scene-format registry


def test_fpg_deterministic_and_damage(tmp_path):
    scene = _scene_sh3(200)
    cfg = CodecConfig(vectree=VecTreeConfig(codebook_size=16, iterations=3))
    a, b = tmp_path / "a.fpg", tmp_path / "b.fpg"
    write_fpg(a, encode_scene(scene, np.ones(scene.n), cfg))
    write_fpg(b, encode_scene(scene, np.ones(scene.n), cfg))
    assert a.read_bytes() == b.read_bytes()
    data = bytearray(a.read_bytes())
    data[-40] ^= 0xFF  # inside the last stream's payload
    bad = tmp_path / "bad.fpg"
    bad.write_bytes(bytes(data))
    with pytest.raises(FormatError):
        read_fpg(bad)


def test_fpg_quantized_kept_rows(tmp_path):
    scene = _scene_sh3(300)
    cfg = CodecConfig(vectree=VecTreeConfig(codebook_size=16, iterations=3, keep_bits=8))
    enc = encode_scene(scene, np.arange(scene.n, dtype=np.float64), cfg)
    assert enc.streams["sh/kept"].dtype == np.uint8
    path = tmp_path / "q.fpg"
    write_fpg(path, enc)
    back = read_fpg(path)
    assert torch.equal(back.sh_rest, decode_streams(enc.header, enc.streams).sh_rest)
    order = back.extras["transform"].astype(int)
    kept = enc.streams["sh/keep"].astype(bool)
    err = (back.sh_rest.numpy() - scene.sh_rest.numpy()[order])[kept]
    span = np.ptp(scene.sh_rest.numpy().reshape(scene.n, -1), axis=0).max()
    assert np.abs(err).max() <= span / 255 * 0.51 + 1e-6


# ----------------------------------------------------------------------------- teacher fits
def test_distillation_and_recovery_improve_renders():
    from fieldpress.metrics import psnr
    from fieldpress.scenes.cameras import orbit
    from fieldpress.scenes.lightgaussian.distill import TeacherFitConfig, distill_sh
    from fieldpress.scenes.lightgaussian.pipeline import render_views
    from fieldpress.scenes.lightgaussian.prune import prune_scene, recover
    from fieldpress.scenes.synthetic import synthetic_scene

    torch.set_num_threads(1)
    teacher = synthetic_scene(200, sh_degree=2, seed=3)
    cams = orbit(teacher, 3, width=40)
    ref = render_views(teacher, cams)
    cfg = TeacherFitConfig(steps=24, width=40, seed=0)
    student, report = distill_sh(teacher, teacher, 0, cams, cfg)
    assert student.sh_degree == 0 and report["steps"] == 24
    assert psnr(ref, render_views(student, cams)) > psnr(ref, render_views(teacher.with_sh_degree(0), cams))
    pruned, _ = prune_scene(teacher, np.random.default_rng(0).random(teacher.n), 0.5)
    recovered, _ = recover(pruned, teacher, cams, cfg)
    assert recovered.n == pruned.n
    assert psnr(ref, render_views(recovered, cams)) > psnr(ref, render_views(pruned, cams)) + 1.0


def test_vectree_two_level_search_close_to_flat():
    """Above `flat_limit` the codebook is fitted group by group (the 1M-Gaussian path): same stored form,
    every row assigned exactly within its probed groups, distortion close to flat k-means."""
    rng = np.random.default_rng(6)
    centers = rng.normal(size=(24, 8))
    x = (centers[rng.integers(0, 24, 3000)] + 0.3 * rng.normal(size=(3000, 8))).astype(np.float32)
    sig = rng.random(3000)
    flat = vectree_encode(x, sig, VecTreeConfig(codebook_size=64, keep_fraction=0.2, seed=1))
    tree = vectree_encode(x, sig, VecTreeConfig(codebook_size=64, keep_fraction=0.2, seed=1, flat_limit=1))
    assert tree.codebook.shape == flat.codebook.shape and tree.codebook.dtype == np.float16
    assert np.array_equal(tree.keep_mask, flat.keep_mask)
    rest = ~tree.keep_mask

    def err(code):
        return float((((code.decode()[rest] - x[rest]) ** 2).sum(1) * sig[rest]).sum() / sig[rest].sum())

    assert err(tree) < 1.1 * err(flat)
    # with every group probed the search is exhaustive: each index is the nearest stored code
    full = vectree_encode(x, sig, VecTreeConfig(codebook_size=64, keep_fraction=0.2, seed=1, flat_limit=1,
                                                probes=64))
    cb = full.codebook.astype(np.float32)
    d = ((x[rest][:, None, :] - cb[None]) ** 2).sum(-1)
    assert np.allclose(d[np.arange(d.shape[0]), full.index], d.min(1), rtol=1e-5, atol=1e-5)


def test_a_position_grid_reaching_past_float32_is_a_format_error() -> None:
    from fieldpress.errors import FormatError
    from fieldpress.scenes.lightgaussian.position import PositionGrid, dequantize_positions

    grid = PositionGrid.from_header({"bits": 16, "origin": [0.0, 0.0, 0.0], "step": [1e36, 1.0, 1.0]})
    assert dequantize_positions(np.array([[3, 3, 3]], np.uint64), grid).dtype == np.float32
    with pytest.raises(FormatError, match="float32"):
        dequantize_positions(np.array([[65535, 0, 0]], np.uint64), grid)

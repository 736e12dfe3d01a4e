"""NeuralGS (compress-splat --codec neuralgs) on tiny synthetic scenes: deterministic files, decoding
reproduces the encoder's reconstruction, the weight coder round-trips, bad flags exit 2 in one line,
and the other scene commands open the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldpress.cli import run_command
from fieldpress.scenes.lightgaussian.cli import compress_splat_command, decompress_splat_command
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture

TINY = ["--clusters", "3", "--mlp-width", "8", "--fit-steps", "20", "--finetune-steps", "2",
        "--eval-width", "40"]


@pytest.fixture(scope="module")
def tiny_ply(tmp_path_factory) -> Path:
    from fieldpress.scenes.formats import save_scene
    from fieldpress.scenes.synthetic import synthetic_scene

    path = tmp_path_factory.mktemp("ngs") / "tiny.ply"
    save_scene(synthetic_scene(200, sh_degree=1, seed=5), path)
    return path


@pytest.fixture(scope="module")
def two_cameras(tiny_ply) -> Path:
    """Two small orbit views: significance, fine-tune and evaluation render only these."""
    from fieldpress.scenes.camera_files import write_inria_json
    from fieldpress.scenes.cameras import orbit
    from fieldpress.scenes.formats import load_scene

    path = tiny_ply.with_name("cams.json")
    write_inria_json(orbit(load_scene(tiny_ply), 2, width=32), path)
    return path


def _options(**changes):
    from fieldpress.scenes.neuralgs.pipeline import NeuralGSOptions

    base = dict(clusters=3, hidden=8, frequencies=4, fit_steps=15, finetune_steps=2, significance_views=3,
                significance_width=40, train_width=40, evaluate=False)
    return NeuralGSOptions(**{**base, **changes})


def test_same_input_and_seed_same_file_and_decode_matches():
    from fieldpress.scenes.lightgaussian.codec import read_fpg
    from fieldpress.scenes.neuralgs.pipeline import compress, encode_pipeline
    from fieldpress.scenes.synthetic import synthetic_scene

    scene = synthetic_scene(150, sh_degree=1, seed=2)
    a = compress(scene, _options())
    b = compress(scene, _options())
    assert a.data == b.data
    assert compress(scene, _options(seed=1)).data != a.data
    run = encode_pipeline(scene, _options())
    decoded = read_fpg(a.data)
    assert decoded.n == run.decoded.n == 90  # 40% pruned
    for name in ("means", "scales", "quats", "opacities", "sh_dc", "sh_rest"):
        assert torch.equal(getattr(decoded, name), getattr(run.decoded, name)), name
    assert torch.allclose(decoded.quats.norm(dim=1), torch.ones(decoded.n), atol=1e-5)


def test_weights_round_trip_through_the_range_coder():
    from fieldpress.scenes.neuralgs.codec import decode_weights, encode_weights
    from fieldpress.scenes.neuralgs.model import ClusterFields, FieldConfig

    fields = ClusterFields(FieldConfig(clusters=2, hidden=6, layers=2, frequencies=2, out_dims=11), seed=4)
    words, rows = encode_weights(fields)
    back = decode_weights(words, rows, fields.config)
    ints = fields.quantized()
    assert set(back) == set(ints)
    for name in ints:
        np.testing.assert_array_equal(back[name], ints[name])
        assert np.abs(ints[name]).max() <= 127


def test_rate_model_predicts_the_coded_weight_bits():
    from fieldpress.scenes.neuralgs.codec import encode_weights
    from fieldpress.scenes.neuralgs.model import ClusterFields, FieldConfig

    fields = ClusterFields(FieldConfig(clusters=2, hidden=16, layers=2, frequencies=3, out_dims=20), seed=0)
    fields.eval()
    estimate = float(fields.rate_bits(None).detach())
    coded = 32 * encode_weights(fields)[0].size
    assert coded == pytest.approx(estimate, rel=0.1, abs=64)


def test_kmeans_is_seeded_and_fills_every_cluster():
    from fieldpress.scenes.neuralgs.cluster import kmeans

    x = np.random.default_rng(0).normal(size=(120, 5)).astype(np.float32)
    a, ca = kmeans(x, 7, seed=3)
    b, cb = kmeans(x, 7, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    assert set(a.tolist()) == set(range(7))


def _run_json(capsys, command, argv) -> dict:
    code = run_command(command, argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out.strip().splitlines()[-1])


def test_cli_writes_a_file_every_scene_command_opens(tmp_path, tiny_ply, two_cameras, capsys):
    from fieldpress.cli import info_command
    from fieldpress.scenes.cli import render_splat_command
    from fieldpress.scenes.formats import load_scene

    out = tmp_path / "n.fpg"
    summary = _run_json(capsys, compress_splat_command,
                        [str(tiny_ply), "-o", str(out), "--codec", "neuralgs", *TINY, "--cameras",
                         str(two_cameras), "--json"])
    assert summary["bytes"] == out.stat().st_size
    split = summary["rate_split"]
    assert set(split) == {"positions", "labels", "mlps", "rest"} and sum(split.values()) == summary["bytes"]
    assert summary["gaussians_in"] == 200 and summary["gaussians_out"] == 120
    assert summary["render_psnr"] is not None
    back = _run_json(capsys, decompress_splat_command, [str(out), "-o", str(tmp_path / "b.ply"), "--json"])
    assert back["gaussians"] == 120 and back["sh_degree"] == 1
    assert load_scene(out).n == 120
    _run_json(capsys, render_splat_command, [str(out), "-o", str(tmp_path / "r.png"), "--views", "orbit:1",
                                             "--width", "32", "--json"])
    info = _run_json(capsys, info_command, [str(out), "--verify", "--json"])
    assert info["header"]["codec"] == "neuralgs"
    assert "clusters" in info["summary"]["mlps"] and "mlps" in info["summary"]["rate_bytes"]


@pytest.mark.parametrize("flags, message", [
    (["--clusters", "0"], "--clusters"),
    (["--clusters", "500"], "--clusters"),
    (["--codebook", "16"], "--codebook"),
    (["--fit-steps", "0"], "--fit-steps"),
])
def test_bad_flags_one_line_exit_2(tmp_path, tiny_ply, two_cameras, capsys, flags, message):
    out = tmp_path / "bad.fpg"
    code = run_command(compress_splat_command, [str(tiny_ply), "-o", str(out), "--codec", "neuralgs",
                                                "--mlp-width", "8", "--fit-steps", "5", "--no-eval",
                                                "--cameras", str(two_cameras), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_lightgaussian_refuses_neuralgs_flags(tmp_path, tiny_ply, capsys):
    out = str(tmp_path / "x.fpg")
    code = run_command(compress_splat_command, [str(tiny_ply), "-o", out, "--clusters", "4"])
    assert code == 2 and "--clusters" in capsys.readouterr().err


def test_attribute_groups_count_alike_in_the_loss():
    from fieldpress.scenes.neuralgs.pipeline import GROUP_WEIGHTS, column_weights

    for dims in (11, 56):  # SH 0 and SH 3
        w = column_weights(dims)
        assert w.shape == (dims,) and abs(float(w.sum()) - 1.0) < 1e-6
        shares = {g: float(w[cols].sum()) for g, (cols, _) in GROUP_WEIGHTS.items()}
        assert shares["opacity"] == pytest.approx(shares["scale"]) == pytest.approx(shares["rotation"])
        assert shares["opacity"] > 0.15  # not the 1/56 a plain mean over the columns gives it
    assert float(column_weights(11)[11:].sum()) == 0.0


def test_fit_starts_every_cluster_at_its_members_mean():
    from fieldpress.scenes.neuralgs.model import ClusterFields, FieldConfig
    from fieldpress.scenes.neuralgs.pipeline import init_fields

    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    targets = torch.randn(6, 11, generator=gen) * 2.0
    weights = torch.tensor([1.0, 3.0, 1.0, 1.0, 2.0, 1.0])
    fields = ClusterFields(FieldConfig(clusters=3, hidden=4, layers=1, frequencies=1, out_dims=11), seed=0)
    init_fields(fields, labels, targets, weights)
    step = fields.step("b1")
    bias = torch.round(fields.b1.detach() / step) * step  # what the file stores
    expected = torch.stack([(targets[labels == k] * weights[labels == k, None]).sum(0)
                            / weights[labels == k].sum() for k in range(3)])
    assert torch.allclose(bias, expected, atol=step / 2 + 1e-6)
    assert float(fields.b1.detach().abs().max() / step) <= 127  # the step holds the largest mean


def test_straight_through_forward_is_the_decoded_weights():
    from types import SimpleNamespace

    from fieldpress.scenes.neuralgs.model import ClusterFields, FieldConfig

    fields = ClusterFields(FieldConfig(clusters=2, hidden=6, layers=2, frequencies=2, out_dims=11), seed=1)
    fields.train()
    fields.straight_through = True
    info = SimpleNamespace(progress=0.0, global_step=3)  # the noisy proxy would apply at progress 0
    relaxed = fields.integers(info)
    hard = fields.quantized()
    for name, q in relaxed.items():
        np.testing.assert_array_equal(q.detach().numpy(), hard[name])
    assert relaxed["w0"].requires_grad

"""Encodings, networks, CAM and the image-field models (tiny shapes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fieldpress.errors import InputError
from fieldpress.fields import CAM, Encoding, FieldModel, Network, cam_param_groups
from fieldpress.fields.encodings import ENCODINGS, GridEncoding
from fieldpress.fields.image import (
    PixelSource,
    build_model,
    codec_state,
    fit_image,
    load_codec_state,
    render,
)
from fieldpress.fields.image_io import RasterInfo
from fieldpress.fields.pipeline import image_psnr
from fieldpress.fields.presets import MODELS, mlp_params, plan_model
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture


def test_registry_has_every_otype() -> None:
    for name in ("HashGrid", "DenseGrid", "TiledGrid", "Grid", "Frequency", "RandomFourier", "Identity"):
        assert name in ENCODINGS
    with pytest.raises(ValueError, match="unknown encoding"):
        Encoding({"otype": "NoSuch"}, 2)


def test_frequency_encoding_follows_tcnn_order() -> None:
    enc = Encoding({"otype": "Frequency", "n_frequencies": 3}, 2)
    x = torch.tensor([[0.3, 0.7]])
    out = enc(x)
    assert out.shape == (1, enc.n_output_dims) == (1, 12)
    # per input dim, per octave k: sin(2^k pi x), cos(2^k pi x)
    want = []
    for v in (0.3, 0.7):
        for k in range(3):
            want += [math.sin(2**k * math.pi * v), math.cos(2**k * math.pi * v)]
    torch.testing.assert_close(out[0], torch.tensor(want), rtol=0, atol=1e-5)


def test_random_fourier_features() -> None:
    enc = Encoding({"otype": "RandomFourier", "n_frequencies": 16, "sigma": 5.0}, 2, seed=3)
    same = Encoding({"otype": "RandomFourier", "n_frequencies": 16, "sigma": 5.0}, 2, seed=3)
    assert torch.equal(enc.B, same.B) and enc.B.shape == (16, 2)
    x = torch.rand(5, 2)
    out = enc(x)
    assert out.shape == (5, 32)
    torch.testing.assert_close(out[:, :16] ** 2 + out[:, 16:] ** 2, torch.ones(5, 16))


def test_dense_grid_is_a_learned_positional_grid() -> None:
    enc = Encoding({"otype": "DenseGrid", "n_levels": 1, "base_resolution": 8, "n_features_per_level": 4}, 2)
    assert isinstance(enc, GridEncoding) and enc.spec.hashed == (False,)
    assert enc.params.numel() == 64 * 4 and enc.n_output_dims == 4


def test_tcnn_backend_needs_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may have tinycudann")
    with pytest.raises(InputError, match="tinycudann"):
        Encoding({"otype": "HashGrid"}, 2, backend="tcnn")
    assert isinstance(Encoding({"otype": "HashGrid", "n_levels": 2}, 2, backend="auto"), GridEncoding)


def test_cam_starts_as_plain_normalisation_and_interpolates() -> None:
    cam = CAM(2, (4, 4))
    h = torch.randn(10, 8)
    coords = torch.rand(10, 2)
    torch.testing.assert_close(cam(h, coords), torch.nn.functional.layer_norm(h, (8,)))
    with torch.no_grad():
        cam.grid[..., 0, 0] = torch.arange(16.0).reshape(4, 4)  # gamma = 4*i + j at knot (i, j)
    # knots are at i / 3 (align_corners=True); coordinate order is (dim0, dim1) = grid axes
    gamma, beta = cam.sample(torch.tensor([[1 / 3, 2 / 3], [0.5, 0.5], [2.0, -1.0]]))
    torch.testing.assert_close(gamma[:, 0], torch.tensor([6.0, 7.5, 12.0]))  # last row clamps to (1, 0)
    torch.testing.assert_close(beta, torch.zeros(3, 1))


def test_cam_conv_features_and_1d_time_grid() -> None:
    cam = CAM(1, (5,), channels=3)
    with torch.no_grad():
        cam.grid[:, 1, :] = torch.arange(5.0)[:, None]  # beta(t) = 4 t
    h = torch.randn(2, 3, 4, 4)
    t = torch.tensor([[0.0], [0.5]])
    out = cam(h, t)
    norm = torch.nn.functional.instance_norm(h)
    torch.testing.assert_close(out[0], norm[0])
    torch.testing.assert_close(out[1], norm[1] + 2.0)
    with pytest.raises(ValueError):
        cam(torch.randn(2, 3, 4), t)


def test_cam_param_groups_use_ten_times_the_lr() -> None:
    net = Network({"otype": "MLP", "n_neurons": 8, "n_hidden_layers": 2, "cam": {"grid_shape": [4, 4]}}, 6, 3)
    groups = cam_param_groups(net, 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-2]
    assert sum(p.numel() for p in groups[1]["params"]) == 2 * 4 * 4 * 2
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in net.parameters())


def test_siren_init_and_field_model() -> None:
    net = Network({"otype": "SIREN", "n_neurons": 32, "n_hidden_layers": 3}, 2, 3)
    first = net.hidden[0].linear.weight
    assert float(first.detach().abs().max()) <= 1 / 2 + 1e-6
    assert float(net.hidden[1].linear.weight.detach().abs().max()) <= math.sqrt(6 / 32) / 30 + 1e-6
    model = FieldModel(Encoding({"otype": "Identity"}, 2), net)
    assert model(torch.rand(7, 2)).shape == (7, 3)


def test_presets_meet_the_budget() -> None:
    for name in MODELS:
        plan = plan_model(name, 30000, 64, 48, 3)
        model = build_model(plan, 3, seed=0)
        n = sum(p.numel() for p in model.parameters())
        assert n == plan.n_params <= 30000, name
        assert n > 0.85 * 30000, name  # the width solve spends the budget
    assert mlp_params(4, 8, 2, 3) == 4 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3
    with pytest.raises(InputError, match="too small"):
        plan_model("ffn", 500, 64, 48, 3)
    with pytest.raises(InputError, match="too small"):
        plan_model("hashgrid", 500, 64, 48, 3)


def test_codec_state_splits_grid_levels_and_restores() -> None:
    plan = plan_model("hashgrid", 12000, 32, 32, 1)
    model = build_model(plan, 1, seed=1)
    state = codec_state(model)
    assert "encoding.params" not in state
    assert sum(1 for k in state if k.startswith("encoding.params.L")) == plan.encoding["n_levels"]
    other = build_model(plan, 1, seed=2)
    load_codec_state(other, state)
    x = torch.rand(20, 2)
    assert torch.equal(model(x), other(x))


def _smooth_image(w: int, h: int, c: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [np.sin(3 * x + 2 * y + k) * 0.4 + 0.5 for k in range(c)]
    return (np.stack(chans, -1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_overfits_a_tiny_image(name: str) -> None:
    arr = _smooth_image(16, 12, 3)
    info = RasterInfo(16, 12, "RGB", 8)
    plan = plan_model(name, 12000, 16, 12, 3)
    result = fit_image(arr, info, plan, steps=200, minutes=None, seed=0, device=torch.device("cpu"))
    psnr = image_psnr(arr, render(result.model, info), 8)
    assert result.steps == 200
    assert psnr > 25.0, f"{name}: {psnr:.2f} dB"


def test_pixel_source_values() -> None:
    arr = np.arange(2 * 3 * 1, dtype=np.uint16).reshape(2, 3, 1) * 1000
    src = PixelSource(arr, RasterInfo(3, 2, "L", 16))
    assert len(src) == 6
    b = src.batch(torch.tensor([0, 5]))
    torch.testing.assert_close(b["coords"], torch.tensor([[1 / 6, 0.25], [5 / 6, 0.75]]))
    torch.testing.assert_close(b["target"], torch.tensor([[0.0], [5000 / 65535]]))

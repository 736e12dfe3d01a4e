"""Video INR models: shapes, strides and padding, the --size solver, the modulation slot, and that each
model overfits a tiny clip through the Fitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldpress.errors import InputError
from fieldpress.video.models import MODELS, build_model, config_for, load_config, recipe
from fieldpress.video.models.blocks import ModulationSpec, choose_strides


@pytest.fixture(autouse=True)
def _one_thread_when_busy():  # noqa: ANN202 - a loaded 2-core box runs these 20x faster on one thread
    from fieldpress.runtime import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    yield
    torch.set_num_threads(before)


def tiny_clip(frames: int = 4, height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth, moving synthetic clip (uint8 T, H, W, 3)."""
    y, x = np.mgrid[0:height, 0:width]
    out = []
    for t in range(frames):
        r = 128 + 100 * np.sin(x / 7 + t * 0.5)
        g = 128 + 100 * np.cos(y / 5 - t * 0.3)
        b = ((x + y + 8 * t) % 32) * 6
        out.append(np.stack([r, g, b], -1))
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _batch(frames: np.ndarray, idx: list[int]) -> dict[str, torch.Tensor]:
    from fieldpress.video.data import ClipSource

    return ClipSource(frames).batch(torch.tensor(idx))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [(32, 48), (37, 53)])
def test_output_is_the_exact_input_size(name: str, size: tuple[int, int]) -> None:
    h, w = size
    overrides = {"enc_dim": 16} if name == "hnerv" else {}
    cfg = config_for(name, h, w, 4, 40_000, **overrides)
    model = build_model(name, cfg)
    with torch.no_grad():
        out = model(_batch(tiny_clip(4, h, w), [0, 3]))
    assert out.shape == (2, 3, h, w)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    padded = cfg.padded
    assert padded[0] >= h and padded[1] >= w and padded[0] % cfg.stride_product == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_size_solver_lands_near_the_target(name: str) -> None:
    target = 300_000
    cfg = config_for(name, 144, 176, 120, target)
    params = build_model(name, cfg).stored_params()
    assert abs(params - target) / target < 0.1


def test_hnerv_size_counts_embeddings_and_excludes_the_encoder() -> None:
    cfg = config_for("hnerv", 144, 176, 120, 200_000)
    model = build_model("hnerv", cfg)
    embed = 120 * cfg.embed_dim * cfg.grid[0] * cfg.grid[1]
    decoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    assert model.stored_params() == decoder + embed
    assert not any(k.startswith("encoder.") for k in model.stored_state())
    assert cfg.kernels[:3] == (1, 3, 5)


def test_size_too_small_and_frame_too_small_are_input_errors() -> None:
    with pytest.raises(InputError, match="too small"):
        config_for("hnerv", 144, 176, 120, 1000)
    with pytest.raises(InputError, match="minimum"):
        config_for("nerv", 8, 48, 4, 50_000)


def test_strides_follow_the_papers_for_their_sizes() -> None:
    assert np.prod(choose_strides(720, 1280, 9.0)) == 80      # NeRV: 9x16 grid at 720p
    assert np.prod(choose_strides(640, 1280, 2.0)) == 320     # HNeRV bunny: 2x4 embedding


def test_config_round_trips_through_a_header_dict() -> None:
    import json

    for name in MODELS:
        cfg = config_for(name, 40, 56, 6, 50_000)
        again = load_config(name, json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg


def test_cam_fills_the_modulation_slot() -> None:
    pytest.importorskip("fieldpress.fields.cam")
    cfg = config_for("nerv", 32, 48, 4, 60_000, modulation=ModulationSpec("cam", 8))
    model = build_model("nerv", cfg)
    assert any(type(m).__name__ == "CAM" for m in model.modules())
    out = model(_batch(tiny_clip(), [1]))
    out.mean().backward()
    assert out.shape == (1, 3, 32, 48)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_overfits_a_tiny_clip(name: str) -> None:
    from fieldpress.engine.config import FitConfig, Stage
    from fieldpress.engine.fitter import Fitter
    from fieldpress.video.data import ClipSource, make_loss

    torch.manual_seed(0)  # the initial weights: the same whichever tests ran before
    frames = tiny_clip()
    r = recipe(name)
    overrides = {"enc_dim": 16} if name == "hnerv" else {}
    model = build_model(name, config_for(name, 32, 48, 4, 60_000, **overrides))
    source = ClipSource(frames)
    with torch.no_grad():
        model.eval()
        start = _psnr(model(source.batch(torch.arange(4))), frames)
    model.train()
    epochs = 120 if name == "hnerv" else 60   # batch 1; HNeRV also has to learn its encoder
    Fitter(model, source, make_loss(r.loss), FitConfig(batch_size=1, betas=r.betas, seed=0),
           [Stage("fit", epochs, r.lr * 2, warmup=0.1)], show_progress=False).run()
    with torch.no_grad():
        model.eval()
        end = _psnr(model(source.batch(torch.arange(4))), frames)
    assert end > 20.0 and end > start + 8.0, (start, end)


def _psnr(pred: torch.Tensor, frames: np.ndarray) -> float:
    ref = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return float(-10 * torch.log10(torch.mean((pred - ref) ** 2)))


def test_info_names_the_modulation() -> None:
    from fieldpress.video.codecs import summarize as summary

    cam = {"config": {"modulation": {"kind": "cam", "grid": 30}}}
    assert summary(cam)["modulation"] == "cam (grid 30)"
    assert "modulation" not in summary({"config": {"modulation": {"kind": "none", "grid": 30}}})

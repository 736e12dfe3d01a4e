"""Video INR models by name (``--model nerv|hnerv|nervpp|hinerv``), with each paper's training recipe.

``config_for(name, height, width, frames, size)`` picks strides for the frame size and solves the
width so the stored parameter count (decoder + embeddings) is closest to ``size``;
``build_model(name, config)`` builds it; ``load_config(name, dict)`` reads a config from a header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fieldpress.errors import InputError
from fieldpress.video.models.base import VideoINR, VideoModelConfig, count_params, solve_width
from fieldpress.video.models.blocks import ModulationSpec, choose_strides
from fieldpress.video.models.hinerv import HiNeRV, HiNeRVConfig, hinerv_width_config
from fieldpress.video.models.hnerv import HNeRV, HNeRVConfig, hnerv_width_config
from fieldpress.video.models.nerv import NeRV, NeRVConfig, nerv_width_config
from fieldpress.video.models.nervpp import NeRVpp, NeRVppConfig, nervpp_width_config

MIN_SIDE = 16
"""Smallest frame side any model accepts (the strides need something to upsample)."""


@dataclass(frozen=True)
class ModelRecipe:
    """A model family: its classes, how one width scales it, and its paper's training recipe."""

    model: type[VideoINR]
    config: type[VideoModelConfig]
    width_config: Callable[[dict, int], VideoModelConfig]
    target_grid: float          # short side of the decoder's starting grid (9 for NeRV's 9x16)
    lr: float
    betas: tuple[float, float]
    warmup: float               # fraction of the fit stage
    loss: str
    batch_size: int


MODELS: dict[str, ModelRecipe] = {
    "nerv": ModelRecipe(NeRV, NeRVConfig, nerv_width_config, 9.0, 5e-4, (0.5, 0.999), 0.2, "fusion6", 1),
    "hnerv": ModelRecipe(HNeRV, HNeRVConfig, hnerv_width_config, 2.0, 1e-3, (0.9, 0.999), 0.1, "l2", 2),
    "nervpp": ModelRecipe(NeRVpp, NeRVppConfig, nervpp_width_config, 9.0, 5e-4, (0.5, 0.999), 0.2,
                          "fusion6", 1),
    # HiNeRV's UVG recipe: Adam lr 2e-3, 30 of 300 epochs warmup, 0.7 L1 + 0.3 SSIM; a batch of patches
    "hinerv": ModelRecipe(HiNeRV, HiNeRVConfig, hinerv_width_config, 9.0, 2e-3, (0.9, 0.999), 0.1,
                          "fusion6", 8),
}


def recipe(name: str) -> ModelRecipe:
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None


def build_model(name: str, config: VideoModelConfig) -> VideoINR:
    """Instantiate the model `name` from its config."""
    return recipe(name).model(config)


def load_config(name: str, data: dict) -> VideoModelConfig:
    """The config stored in a file header, as the model's dataclass."""
    return recipe(name).config.from_dict(data)


def config_for(name: str, height: int, width: int, frames: int, size: int,
               strides: tuple[int, ...] | None = None, modulation: ModulationSpec = ModulationSpec(),
               **overrides: object) -> VideoModelConfig:
    """The config of model `name` for this clip whose stored parameter count is closest to `size`."""
    r = recipe(name)
    if min(height, width) < MIN_SIDE:
        raise InputError(f"a {width}x{height} frame is below the model minimum of {MIN_SIDE} pixels a side")
    if strides is None:
        strides = choose_strides(height, width, r.target_grid)
    base = {"height": height, "width": width, "frames": frames, "strides": tuple(strides),
            "modulation": modulation, **overrides}
    return solve_width(lambda w: r.width_config(base, w), r.model, size)


__all__ = ["MIN_SIDE", "MODELS", "ModelRecipe", "ModulationSpec", "VideoINR", "VideoModelConfig",
           "build_model", "config_for", "count_params", "load_config", "recipe"]

"""Video models that are not a `VideoINR` fitted through the weight codec (NIRVANA, latent grids...):
each is a `VideoMethod` naming the function that fits a clip and returns a `VideoResult`, imported on
first use. `fit-video --model NAME` and `fieldpress.video.pipeline.compress` dispatch here before the
`VideoINR` path; the method's file is read back through the video codec its header names."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VideoMethod:
    """``name`` (the ``--model`` value), ``compress`` ("module:function" taking
    ``(clip, options, device, *, output, resume, show_progress, input)`` and returning a `VideoResult`)
    and a one-line description for ``--help``."""

    name: str
    compress: str
    description: str

    def run(self, clip: Any, options: Any, device: Any, **kwargs: Any) -> Any:
        module, _, attr = self.compress.partition(":")
        return getattr(importlib.import_module(module), attr)(clip, options, device, **kwargs)


METHODS: dict[str, VideoMethod] = {}


def register_video_method(method: VideoMethod) -> VideoMethod:
    """Add `method` to ``--model``'s choices (new video methods add one line below)."""
    METHODS[method.name] = method
    return method


def method_for(model: str) -> VideoMethod | None:
    """The `VideoMethod` for ``--model`` `model`, or None for a `VideoINR` model."""
    return METHODS.get(model)



register_video_method(VideoMethod("nirvana", "fieldpress.video.nirvana.method:compress",
                                  "NIRVANA: patch-wise SIREN per group of frames (CVPR 2023)"))
register_video_method(VideoMethod("latent", "fieldpress.video.latent.method:compress_latent",
                                  "latent grids per group of frames, CPU encoding (Cool-chic/C3 video)"))

"""Shared fixtures: the real data beside the checkout (../shared/data), skipped when absent; a tiny
lossless clip for the video commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FIELDPRESS_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("FIELDPRESS_PROGRESS", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is not beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{relative} not found under {SHARED_DATA}")
    return path


@pytest.fixture(scope="module")
def small_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-frame 48x32 lossless MP4 of the synthetic test clip (one per test module, read-only input)."""
    from test_video_models import tiny_clip

    from fieldpress.video.io import write_video

    path = tmp_path_factory.mktemp("clip") / "small.mp4"
    write_video(tiny_clip(4, 32, 48), path, 10.0, lossless=True)
    return path

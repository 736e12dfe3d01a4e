"""fit-image --model latent: the latent-grid codec through the image pipeline and the codec registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.fields.cli import decode_image_command, fit_image_command


def _image(path: Path) -> Path:
    y, x = np.mgrid[0:24, 0:32]
    rgb = np.stack([x * 8, y * 10, (x + y) * 4], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def test_fit_and_decode_a_latent_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _image(tmp_path / "in.png")
    out, png = tmp_path / "out.fpi", tmp_path / "dec.png"
    argv = [str(src), "-o", str(out), "--model", "latent", "--steps", "30", "--quality", "6", "--json"]
    assert run_command(fit_image_command, argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["codec"] == "latent" and summary["bytes"] == out.stat().st_size
    assert summary["bpp"] == pytest.approx(out.stat().st_size * 8 / (32 * 24), abs=1e-3)
    assert summary["lambda"] == pytest.approx(0.04 / 2**5)
    assert run_command(decode_image_command, [str(out), "-o", str(png), "--json"]) == 0
    decoded = np.asarray(Image.open(png))
    ref = np.asarray(Image.open(src)).astype(np.float64)
    mse = ((decoded.astype(np.float64) - ref) ** 2).mean()
    assert decoded.shape == (24, 32, 3)
    assert 10 * np.log10(255**2 / max(mse, 1e-12)) == pytest.approx(summary["psnr"], abs=0.01)


def test_a_latent_file_decodes_the_same_at_any_thread_count(tmp_path: Path) -> None:
    import torch

    from fieldpress.fields.pipeline import ImageOptions, compress, decode

    result = compress(_image(tmp_path / "in.png"), ImageOptions(model="latent", steps=20, lmbda=0.01), "cpu")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = decode(result.data).pixels
        torch.set_num_threads(2)
        two = decode(result.data).pixels
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one, two)


@pytest.mark.parametrize("flags,message", [
    (["--lambda", "0"], "--lambda must be positive"),
    (["--quality", "0"], "--quality must be an integer from 1 to 8"),
    (["--quality", "3", "--lambda", "0.01"], "at most one of"),
    (["--target-bpp", "-1"], "--target-bpp must be positive"),
])
def test_bad_rate_flags_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             flags: list[str], message: str) -> None:
    src = _image(tmp_path / "in.png")
    out = tmp_path / "out.fpi"
    assert run_command(fit_image_command, [str(src), "-o", str(out), "--model", "latent", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_a_grey_image_is_refused_by_the_latent_model(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "grey.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src)
    assert run_command(fit_image_command, [str(src), "--model", "latent", "--steps", "5"]) == 2
    assert "8-bit RGB" in capsys.readouterr().err

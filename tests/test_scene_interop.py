"""Interop faults of issue 18: SPZ axes (the coordinate-system extension, PLY-axes files from Niantic's
converter and splat-transform) and the non-finite values splat-transform writes on purpose."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldpress.errors import FormatError, InputError
from fieldpress.metrics import psnr
from fieldpress.scenes import load_scene, save_scene
from fieldpress.scenes.cameras import orbit
from fieldpress.scenes.formats import spz as spz_format
from fieldpress.scenes.lightgaussian.pipeline import render_views
from fieldpress.scenes.sh import eval_sh
from fieldpress.scenes.synthetic import synthetic_scene


def _views(scene, n: int = 2, width: int = 48):  # noqa: ANN001, ANN202 - tiny helper
    return orbit(scene, n, width=width)


def test_spz_in_ply_axes_reads_upright(tmp_path: Path) -> None:
    """A PLY-axes SPZ without the extension (as ply_to_spz / splat-transform write) renders as its source."""
    scene = synthetic_scene(300, sh_degree=1, seed=3)
    out = tmp_path / "ply_axes.spz"
    save_scene(scene, out, axes="RDF", record_axes=False)
    raw = gzip.decompress(out.read_bytes())
    assert raw[14] & spz_format.FLAG_EXTENSIONS == 0  # no extension: nothing says which frame
    read = load_scene(out)
    assert read.meta["spz"]["axes"] == "RDF" and read.meta["spz"]["axes_from"] == "default"
    assert torch.allclose(read.means, scene.means, atol=2e-3)
    cams = _views(scene)
    reference = render_views(scene, cams)
    assert psnr(reference, render_views(read, cams)) > 35.0
    flipped = load_scene(out, axes="RUB")  # the old reading: rotated 180 degrees about x
    assert flipped.meta["spz"]["axes_from"] == "option"
    assert torch.allclose(flipped.means[:, 1:], -scene.means[:, 1:], atol=2e-3)
    assert psnr(reference, render_views(flipped, cams)) < psnr(reference, render_views(read, cams)) - 10


@pytest.mark.parametrize("version", [3, 4])
def test_spz_extension_is_written_and_wins(version: int, tmp_path: Path) -> None:
    scene = synthetic_scene(64, sh_degree=2, seed=1)
    out = tmp_path / "ext.spz"
    save_scene(scene, out, version=version)
    data = out.read_bytes()
    if version == 4:
        toc = struct.unpack_from("<I", data, 16)[0]
        assert toc == 44 and struct.unpack_from("<III", data, 32) == (0xADBE0003, 4, 4)  # RUB
    for axes in (None, "RDF", "ply"):  # the extension overrides the assumed frame
        read = load_scene(out, axes=axes)
        assert read.meta["spz"]["axes"] == "RUB" and read.meta["spz"]["axes_from"] == "extension"
        assert torch.allclose(read.means, scene.means, atol=2e-3)


def test_spz_any_sign_frame_round_trips(tmp_path: Path) -> None:
    """Every axis-sign frame (LDB..RUF) is stored, recorded and read back to the same scene."""
    scene = synthetic_scene(64, sh_degree=3, seed=2)
    base = load_scene(_saved(scene, tmp_path / "rub.spz", "RUB"))
    for axes in spz_format.AXES_CODES:
        read = load_scene(_saved(scene, tmp_path / f"{axes}.spz", axes))
        assert read.meta["spz"]["axes"] == axes
        for name in ("means", "sh_dc", "scales"):
            assert torch.allclose(getattr(read, name), getattr(base, name), atol=1e-6), (axes, name)
        # SH buckets are not symmetric about 0: a mirrored value may land one bucket (16/128) away
        assert torch.allclose(read.sh_rest, base.sh_rest, atol=16 / 128 + 1e-6), axes
        dots = (read.quats * base.quats).sum(1).abs()  # q and -q are one rotation
        assert torch.allclose(dots, torch.ones_like(dots), atol=1e-5), axes


def _saved(scene, path: Path, axes: str) -> Path:  # noqa: ANN001 - tiny helper
    save_scene(scene, path, axes=axes)
    return path


@pytest.mark.parametrize("axes", ["RUB", "LDF", "LUF"])
def test_spz_sh_signs_follow_the_mirror(axes: str) -> None:
    """Flipping SH coefficients by the tables equals evaluating the original at the mirrored direction."""
    gen = torch.Generator().manual_seed(0)
    dc, rest = torch.randn(50, 3, generator=gen), torch.randn(50, 15, 3, generator=gen)
    dirs = torch.randn(50, 3, generator=gen)
    signs, _, sh_signs = spz_format.flip_tables(axes)
    flipped = rest * torch.as_tensor(sh_signs, dtype=torch.float32)[None, :, None]
    mirrored = dirs * torch.as_tensor(signs, dtype=torch.float32)
    assert torch.allclose(eval_sh(dc, flipped, mirrored, 3), eval_sh(dc, rest, dirs, 3), atol=1e-5)


def test_spz_bad_axes_and_permuted_frames_are_refused(tmp_path: Path) -> None:
    scene = synthetic_scene(8, sh_degree=0)
    save_scene(scene, tmp_path / "a.spz", version=4)
    with pytest.raises(InputError, match="unknown SPZ axes"):
        load_scene(tmp_path / "a.spz", axes="up")
    data = bytearray((tmp_path / "a.spz").read_bytes())
    struct.pack_into("<I", data, 40, 12)  # RFU: a permuted frame
    (tmp_path / "b.spz").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="permuted axes"):
        load_scene(tmp_path / "b.spz")
    with pytest.raises(InputError, match="takes no option"):
        save_scene(scene, tmp_path / "c.ply")
        load_scene(tmp_path / "c.ply", axes="RUB")


def test_ply_with_infinite_opacity_loads_with_a_warning(tmp_path: Path) -> None:
    """splat-transform's merged files keep +inf opacity and -inf log-scale: clamped, one warning."""
    scene = synthetic_scene(30, sh_degree=0)
    scene.opacities[[2, 5, 7]] = float("inf")
    scene.scales[4, 1] = float("-inf")
    save_scene(scene, tmp_path / "inf.ply")
    with pytest.warns(UserWarning, match="clamped 3 non-finite opacities.*scales of 1 Gaussians") as caught:
        read = load_scene(tmp_path / "inf.ply")
    assert len(caught) == 1
    assert read.n == 30 and bool(torch.isfinite(read.opacities).all())
    assert float(torch.sigmoid(read.opacities[2])) > 0.999999 and float(read.scales[4, 1]) == -20.0
    image = render_views(read, _views(read, 1))
    assert np.isfinite(image.astype(np.float64)).all()

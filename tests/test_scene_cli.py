"""`render-splat` and `fieldpress convert`: outputs, --json summaries, camera files, exit codes."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fieldpress.cli import run_command
from fieldpress.scenes import load_scene, save_scene
from fieldpress.scenes.camera_files import write_inria_json
from fieldpress.scenes.cameras import Camera
from fieldpress.scenes.cli import (
    contact_sheet,
    convert_command,
    grid_shape,
    parse_views,
    render_splat_command,
)
from fieldpress.scenes.synthetic import synthetic_scene
from tests.conftest import shared_file


@pytest.fixture
def small_ply(tmp_path: Path) -> Path:
    path = tmp_path / "torus.ply"
    save_scene(synthetic_scene(1500, sh_degree=1), path)
    return path


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_render_one_view_by_default(small_ply: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "one.png"
    assert run_command(render_splat_command, [str(small_ply), "-o", str(out), "--width", "48", "--json"]) == 0
    summary = _json(capsys)
    assert summary["views"] == 1 and summary["gaussians_in"] == 1500
    assert summary["bytes"] == out.stat().st_size
    image = np.asarray(Image.open(out))
    assert image.shape == (48, 48, 3) and image.max() > 100


def test_contact_sheet_and_saved_cameras_render_identically(small_ply: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sheet, cams = tmp_path / "sheet.png", tmp_path / "cams.json"
    args = [str(small_ply), "-o", str(sheet), "--views", "orbit:5", "--width", "32",
            "--save-cameras", str(cams)]
    assert run_command(render_splat_command, args + ["--json"]) == 0
    assert _json(capsys)["grid"] == "3x2"
    assert np.asarray(Image.open(sheet)).shape == (64, 96, 3)
    assert len(json.loads(cams.read_text())) == 5
    again = tmp_path / "again.png"
    assert run_command(render_splat_command, [str(small_ply), "-o", str(again), "--cameras", str(cams),
                                              "--width", "32"]) == 0
    assert np.array_equal(np.asarray(Image.open(sheet)), np.asarray(Image.open(again)))


def test_render_guitar_shows_something(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_file("gaussians/guitar.compressed.ply")
    out = tmp_path / "g.png"
    assert run_command(render_splat_command, [str(src), "-o", str(out), "--views", "orbit:4", "--width", "64",
                                              "--json"]) == 0
    assert _json(capsys)["gaussians_in"] == 90854
    image = np.asarray(Image.open(out)).astype(np.float64)
    assert image.shape == (128, 128, 3)
    lit = image.sum(2) > 60
    assert 0.01 < lit.mean() < 0.5  # a guitar on black, in every cell
    for cell in (lit[:64, :64], lit[:64, 64:], lit[64:, :64], lit[64:, 64:]):
        assert cell.mean() > 0.005


def test_grid_and_views_parsing() -> None:
    assert [grid_shape(n) for n in (1, 2, 4, 5, 16)] == [(1, 1), (2, 1), (2, 2), (3, 2), (4, 4)]
    assert parse_views("orbit:7") == 7 and parse_views("orbit") == 16
    sheet = contact_sheet([np.full((2, 3, 3), i, np.uint8) for i in range(3)])
    assert sheet.shape == (4, 6, 3) and sheet[2, 0, 0] == 2 and sheet[3, 5, 0] == 0


def test_convert_between_all_formats(small_ply: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a.compressed.ply", "b.spz", "c.splat", "d.ply"):
        out = tmp_path / name
        assert run_command(convert_command, [str(small_ply), str(out), "--json"]) == 0
        summary = _json(capsys)
        assert summary["gaussians_out"] == 1500 and summary["bytes"] == out.stat().st_size
        assert load_scene(out).n == 1500
    assert run_command(convert_command, [str(tmp_path / "b.spz"), str(tmp_path / "e.bin"), "--format", "spz",
                                         "--spz-version", "4", "--sh-degree", "0"]) == 0
    back = load_scene(tmp_path / "e.bin")
    assert back.meta["spz"]["version"] == 4 and back.sh_degree == 0


@pytest.mark.parametrize("case", ["vertex_count", "missing", "nan", "not_scene", "spz_magic", "spz_version",
                                  "bomb", "no_file", "bad_flag", "tall_cameras"])
def test_bad_input_exits_2_with_one_line(case: str, small_ply: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.ply"
    data = small_ply.read_bytes()
    extra: list[str] = []
    if case == "vertex_count":
        bad.write_bytes(data.replace(b"element vertex 1500", b"element vertex 1501", 1))
    elif case == "missing":
        bad.write_bytes(data.replace(b"property float scale_2", b"property float scale_9", 1))
    elif case == "nan":
        scene = synthetic_scene(30, sh_degree=0)
        scene.sh_dc[4, 0] = float("nan")
        save_scene(scene, bad)
    elif case == "not_scene":
        bad.write_bytes(b"hello, this is text\n" * 10)
    elif case in ("spz_magic", "spz_version", "bomb"):
        bad = tmp_path / "bad.spz"
        magic = 0x5053474E if case != "spz_magic" else 0xDEADBEEF
        version, n, tail = (7, 1, bytes(16)) if case == "spz_version" else (3, 1, bytes(16))
        if case == "bomb":
            n, tail = 1_500_000_000, bytes(4 << 20)
        bad.write_bytes(gzip.compress(struct.pack("<IIIBBBB", magic, version, n, 0, 12, 0, 0) + tail))
    elif case == "no_file":
        bad = tmp_path / "nothing.ply"
    elif case == "bad_flag":
        bad = small_ply
        extra = ["--views", "spiral:3"]
    elif case == "tall_cameras":  # 1x300 px cameras: 32 px wide would be 9600 px tall
        bad = small_ply
        write_inria_json([Camera(torch.eye(4), 1.0, 1.0, 0.5, 150.0, 1, 300)], tmp_path / "cams.json")
        extra = ["--cameras", str(tmp_path / "cams.json")]
    for command, args in ((render_splat_command, [str(bad), "-o", str(tmp_path / "x.png"), "--width", "32"]),
                          (convert_command, [str(bad), str(tmp_path / "x.spz")])):
        if case in ("bad_flag", "tall_cameras") and command is convert_command:
            continue
        assert run_command(command, args + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.spz").exists()


def test_up_flag_and_trailing_bytes_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_file("gaussians/trailing_bytes.ply")
    out = tmp_path / "t.png"
    assert run_command(render_splat_command, [str(src), "-o", str(out), "--width", "32", "--up", "+z"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "14029 bytes" in err
    assert run_command(render_splat_command, [str(src), "-o", str(out), "--up", "sideways"]) == 2


def test_fpg_files_render_and_convert(tmp_path: Path) -> None:
    pytest.importorskip("fieldpress.scenes.lightgaussian")
    scene = synthetic_scene(600, sh_degree=1)
    save_scene(scene, tmp_path / "s.fpg")
    assert load_scene(tmp_path / "s.fpg").n == 600
    assert run_command(render_splat_command, [str(tmp_path / "s.fpg"), "-o", str(tmp_path / "s.png"),
                                              "--width", "32"]) == 0
    assert run_command(convert_command, [str(tmp_path / "s.fpg"), str(tmp_path / "s.spz")]) == 0

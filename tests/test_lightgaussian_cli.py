"""compress-splat / decompress-splat end to end on tiny scenes, and the bars on the real guitar scene
(slow: they render the 16 evaluation views at 512 px on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fieldpress.cli import run_command
from fieldpress.scenes.lightgaussian.cli import compress_splat_command, decompress_splat_command
from tests.conftest import shared_file
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def tiny_ply(tmp_path_factory) -> Path:
    from fieldpress.scenes.formats import save_scene
    from fieldpress.scenes.synthetic import synthetic_scene

    path = tmp_path_factory.mktemp("lg") / "tiny.ply"
    save_scene(synthetic_scene(300, sh_degree=2, seed=3), path)
    return path


def _run_json(capsys, command, argv) -> dict:
    code = run_command(command, argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out.strip().splitlines()[-1])


def test_compress_fast_decompress_roundtrip(tmp_path, tiny_ply, capsys):
    from fieldpress.scenes.formats import load_scene
    from fieldpress.scenes.formats.ply_header import read_ply

    out = tmp_path / "tiny.fpg"
    summary = _run_json(capsys, compress_splat_command,
                        [str(tiny_ply), "-o", str(out), "--preset", "fast", "--eval-views", "2",
                         "--eval-width", "48", "--json"])
    for key in ("bytes", "gaussians_in", "gaussians_out", "bytes_per_gaussian", "render_psnr", "render_ssim",
                "ratio", "stage_seconds"):
        assert key in summary, key
    assert summary["bytes"] == out.stat().st_size
    assert summary["gaussians_in"] == summary["gaussians_out"] == 300
    assert summary["bytes_per_gaussian"] == pytest.approx(out.stat().st_size / 300, rel=1e-3)
    assert summary["render_psnr"] > 35
    ply = tmp_path / "back.ply"
    back = _run_json(capsys, decompress_splat_command, [str(out), "-o", str(ply), "--json"])
    assert back["gaussians"] == 300 and back["sh_degree"] == 2
    _, elements = read_ply(ply.read_bytes())
    assert len(elements["vertex"]) == 300
    names = elements["vertex"].dtype.names
    assert "f_rest_23" in names and "f_rest_24" not in names
    scene = load_scene(ply)
    assert scene.n == 300 and scene.sh_degree == 2


def test_same_seed_same_file_and_balanced_prunes(tmp_path, tiny_ply, capsys):
    a, b = tmp_path / "a.fpg", tmp_path / "b.fpg"
    args = ["--preset", "balanced", "--no-eval", "--seed", "7", "--json"]
    first = _run_json(capsys, compress_splat_command, [str(tiny_ply), "-o", str(a), *args])
    _run_json(capsys, compress_splat_command, [str(tiny_ply), "-o", str(b), *args])
    assert a.read_bytes() == b.read_bytes()
    assert first["gaussians_out"] == 300 - round(0.66 * 300)
    assert first["sh_degree_out"] == 2


def test_bad_input_and_damaged_stream_exit_2(tmp_path, tiny_ply, capsys):
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"ply\nformat nonsense\n")
    assert run_command(compress_splat_command, [str(junk), "--no-eval"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert run_command(compress_splat_command, [str(tmp_path / "missing.ply")]) == 2
    capsys.readouterr()
    out = tmp_path / "t.fpg"
    assert run_command(compress_splat_command, [str(tiny_ply), "-o", str(out), "--preset", "fast",
                                                "--no-eval"]) == 0
    capsys.readouterr()
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x55
    bad = tmp_path / "bad.fpg"
    bad.write_bytes(bytes(data))
    assert run_command(decompress_splat_command, [str(bad), "-o", str(tmp_path / "x.ply")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "x.ply").exists()
    assert run_command(compress_splat_command, [str(tiny_ply), "--prune", "1.5"]) == 2


def test_target_size_lands_under(tmp_path, tiny_ply, capsys):
    out = tmp_path / "t.fpg"
    target = 0.004  # MB
    summary = _run_json(capsys, compress_splat_command,
                        [str(tiny_ply), "-o", str(out), "--preset", "fast", "--target-size", str(target),
                         "--no-eval", "--json"])
    assert out.stat().st_size <= target * 1e6
    assert summary["prune"] > 0


# ----------------------------------------------------------------------------- the bars (slow)
@pytest.mark.slow
def test_guitar_bars(tmp_path, capsys):
    from fieldpress.scenes.formats import load_scene, save_scene

    guitar = shared_file("gaussians/guitar.compressed.ply")
    spz = tmp_path / "g.spz"
    spz_bytes = save_scene(load_scene(guitar), spz)
    fast = _run_json(capsys, compress_splat_command, [str(guitar), "-o", str(tmp_path / "f.fpg"),
                                                      "--preset", "fast", "--json"])
    assert fast["render_psnr"] >= 40 and fast["bytes"] < spz_bytes
    bal = _run_json(capsys, compress_splat_command, [str(guitar), "-o", str(tmp_path / "b.fpg"),
                                                     "--preset", "balanced", "--json"])
    assert bal["render_psnr"] >= 30 and bal["bytes"] <= fast["bytes"] / 2
    assert np.isfinite(bal["render_ssim"])


def test_max_preset_distills_and_finetunes(tmp_path, tiny_ply, capsys):
    out = tmp_path / "m.fpg"
    summary = _run_json(capsys, compress_splat_command,
                        [str(tiny_ply), "-o", str(out), "--preset", "max", "--finetune-steps", "3",
                         "--eval-views", "2", "--eval-width", "40", "--json"])
    assert summary["sh_degree_out"] == 1 and summary["gaussians_out"] == 102
    assert summary["recover"]["steps"] == 3 and summary["distill"]["steps"] == 3
    assert summary["render_psnr"] > 15


def test_user_cameras_drive_significance_and_eval(tmp_path, tiny_ply, capsys):
    from fieldpress.scenes.camera_files import write_inria_json
    from fieldpress.scenes.cameras import orbit
    from fieldpress.scenes.formats import load_scene

    cams = tmp_path / "cameras.json"
    write_inria_json(orbit(load_scene(tiny_ply), 3, width=64), cams)
    summary = _run_json(capsys, compress_splat_command,
                        [str(tiny_ply), "-o", str(tmp_path / "c.fpg"), "--cameras", str(cams),
                         "--prune", "0.5", "--eval-width", "40", "--json"])
    assert summary["eval_views"] == 3 and summary["gaussians_out"] == 150
    assert run_command(compress_splat_command, [str(tiny_ply), "--cameras", str(tmp_path / "none.json")]) == 2

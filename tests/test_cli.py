"""The shared CLI conventions: flag parsing, exit codes, atomic writes, the --json summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fieldpress.cli import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    RunSummary,
    new_parser,
    parse_count,
    parse_crop,
    parse_frames,
    parse_wxh,
    run_command,
)
from fieldpress.errors import FormatError, InputError
from fieldpress.io import atomic_path, atomic_write_bytes
from fieldpress.runtime import resolve_device


def test_parse_wxh_and_crop() -> None:
    assert parse_wxh("320x180") == (320, 180)
    assert parse_wxh(" 64X48 ") == (64, 48)
    assert parse_crop("1280x640+0+40") == (1280, 640, 0, 40)
    assert parse_crop("100x50") == (100, 50, None, None)
    for bad in ("320", "0x10", "axb", "10x10+5", ""):
        with pytest.raises(InputError):
            parse_crop(bad) if "+" in bad else parse_wxh(bad)


def test_parse_frames_is_end_exclusive() -> None:
    assert parse_frames("0:64") == (0, 64)
    assert parse_frames("10:") == (10, None)
    assert parse_frames(":5") == (0, 5)
    assert parse_frames("7") == (7, 8)
    for bad in ("5:5", "9:3", "-1:4", "a:b"):
        with pytest.raises(InputError):
            parse_frames(bad)


def test_parse_count() -> None:
    assert parse_count("1.5M") == 1_500_000
    assert parse_count("350k") == 350_000
    assert parse_count("0.35M") == 350_000
    assert parse_count("4096") == 4096
    for bad in ("", "-3", "1.5X", "0"):
        with pytest.raises(InputError):
            parse_count(bad)


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("tpu")


def test_exit_codes_follow_design() -> None:
    def bad_input(argv):  # noqa: ANN001, ANN202
        raise FormatError("damaged file")

    def crash(argv):  # noqa: ANN001, ANN202
        raise ZeroDivisionError("boom")

    def ok(argv):  # noqa: ANN001, ANN202
        return None

    def usage(argv):  # noqa: ANN001, ANN202
        new_parser("x", "y").parse_args(["--no-such-flag"])

    assert run_command(ok, []) == EXIT_OK
    assert run_command(bad_input, []) == EXIT_INPUT
    assert run_command(usage, []) == EXIT_INPUT
    assert run_command(crash, []) == EXIT_INTERNAL
    with pytest.raises(ZeroDivisionError):
        run_command(crash, ["--debug"])


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert atomic_write_bytes(target, b"new") == 3
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    # bad output paths are input errors (exit 2), not internal ones
    with pytest.raises(InputError, match="is a directory"):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write_bytes(target / "below_a_file.bin", b"x")
    assert target.read_bytes() == b"new"


def test_run_summary_json_is_flat_and_serialisable(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    summary = RunSummary("fit-video", "a.mp4", "a.fpv", 1234, 1.23456, "cpu",
                         {"psnr": np.float32(30.5), "bpp": 0.1, "psnr_per_frame": float("inf")})
    summary.emit(as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["command"] == "fit-video" and data["bytes"] == 1234
    assert data["psnr"] == pytest.approx(30.5) and data["seconds"] == 1.235
    assert data["psnr_per_frame"] == "inf"


def test_module_dispatch_lists_commands_and_rejects_unknown() -> None:
    out = subprocess.run([sys.executable, "-m", "fieldpress", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "info" in out.stdout and "fit-video" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "fieldpress", "no-such"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1

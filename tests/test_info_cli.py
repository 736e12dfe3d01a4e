"""`fieldpress info`: what it prints agrees with read_info().to_dict(); damaged files exit 2 with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fieldpress.cli import _jsonable, info_command, run_command
from fieldpress.codec.container import read_info, write_container


@pytest.fixture()
def container(tmp_path: Path) -> Path:
    path = tmp_path / "clip.fpv"
    rng = np.random.default_rng(0)
    write_container(path, "video", {"fps": 24, "note": "info test"},
                    {"w/q": np.round(rng.laplace(0, 2, 5000)).astype(np.int8),
                     "w/scale": rng.random(16).astype(np.float32), "empty": np.zeros((0, 3), np.uint8)})
    return path


def test_info_json_agrees_with_read_info(container: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(info_command, [str(container), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == _jsonable(read_info(container).to_dict())
    assert printed["kind"] == "video" and printed["file_bytes"] == container.stat().st_size
    assert [s["name"] for s in printed["streams"]] == ["w/q", "w/scale", "empty"]
    assert printed["streams"][0]["codec"] == "ans" and printed["streams"][0]["raw_bytes"] == 5000


def test_info_table_lists_the_streams(container: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(info_command, [str(container)]) == 0
    out = capsys.readouterr().out
    for text in ("video container", "format v1", "w/q", "ans", "w/scale", "0x3", '"fps": 24'):
        assert text in out


def test_info_prints_bracketed_names_verbatim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names and header text come from the file: rich must not read them as markup (or fail on them)."""
    path = tmp_path / "[bold]clip.fpi"
    write_container(path, "image", {"note": "[/oops] [red]"}, {"[/s]": np.arange(3, dtype=np.int16)})
    assert run_command(info_command, [str(path)]) == 0
    out = capsys.readouterr().out.replace("\n", "")  # rich folds long lines
    for text in ("[bold]clip.fpi", "[/s]", '"note": "[/oops] [red]"'):
        assert text in out


@pytest.mark.parametrize("damage", ["truncate", "flip", "random", "missing", "directory"])
def test_info_on_damaged_input_exits_2_with_one_line(container: Path, damage: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data = container.read_bytes()
    bad = container.with_name("bad.fpv")
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        bad.write_bytes(data[:40] + bytes([data[40] ^ 1]) + data[41:])
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif damage == "directory":
        bad.mkdir()
    start = time.perf_counter()
    code = run_command(info_command, [str(bad)])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2 and seconds < 1.0
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_real_fieldpress_info_command_exits_2_on_a_damaged_file(container: Path) -> None:
    bad = container.with_name("cut.fpv")
    bad.write_bytes(container.read_bytes()[:-7])
    exe = shutil.which("fieldpress")
    cmd = [exe, "info", str(bad)] if exe else [sys.executable, "-m", "fieldpress", "info", str(bad)]
    env = dict(os.environ, FIELDPRESS_PROGRESS="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "truncated" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "fieldpress", "info", "--json", str(container)],
                        capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["streams"][1]["name"] == "w/scale"

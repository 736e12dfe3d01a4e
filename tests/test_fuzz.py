"""The fuzz harness: it covers the container, every registered codec (one registered in this process
too) and every scene format; a short run finds no crash and no hang; it does detect crashes, hangs and
memory blow-ups when a target has them; and every input it ever found (tests/fuzz_findings/) is
rejected cleanly by every target."""

from __future__ import annotations

import json
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")

from fieldpress.codec.registry import LazyCodec, codecs, register_codec, unregister_codec  # noqa: E402
from fieldpress.errors import FormatError  # noqa: E402
from fieldpress.fuzz import (  # noqa: E402
    Target,
    all_targets,
    run_fuzz,
    runner,  # noqa: E402
)
from fieldpress.fuzz.__main__ import main as fuzz_main  # noqa: E402

FINDINGS = Path(__file__).parent / "fuzz_findings"


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> list[Target]:
    return all_targets(tmp_path_factory.mktemp("fuzz"))


def test_every_codec_and_scene_format_is_a_target(targets: list[Target]) -> None:
    names = {t.name for t in targets}
    assert "container" in names
    assert {f"codec:{k}/{n}" for k, n in codecs()} <= names
    assert {f"scene:{ep.name}" for ep in entry_points(group="fieldpress.scene_formats")} <= names
    for t in targets:
        assert t.seeds and all(t.seeds), t.name


def test_a_codec_registered_in_process_is_fuzzed_too(tmp_path: Path) -> None:
    fake = LazyCodec("image", "fuzz-probe", 1, "fieldpress.fields.image:FIELD_CODEC", lambda h: {})
    register_codec(fake)
    try:
        assert "codec:image/fuzz-probe" in {t.name for t in all_targets(tmp_path)}
    finally:
        unregister_codec("image", "fuzz-probe")


def test_short_run_has_no_crash_and_no_hang(targets: list[Target], tmp_path: Path) -> None:
    report = run_fuzz(targets, seconds=4, out=tmp_path, seed=7, batch=4)
    data = report.to_dict()
    assert data["crashes"] == 0 and data["hangs"] == 0, data["crash_files"]
    assert data["over_memory"] == 0 and data["worst_memory_ratio"] <= 1
    for name, stats in data["targets"].items():
        seeds = len(next(t for t in targets if t.name == name).seeds)
        assert stats["inputs"] >= seeds + 4, name
        assert stats["inputs"] == stats["rejected"] + stats["accepted"], name
    assert sum(s["rejected"] for s in data["targets"].values()) > 0
    assert not list(tmp_path.iterdir())


def _raise(data: bytes) -> None:
    if len(data) % 2:
        raise FormatError("odd")
    raise RuntimeError("a reader bug")


def _sleep(data: bytes) -> None:
    time.sleep(5)


def _spin(data: bytes) -> None:
    end = time.process_time() + 5
    while time.process_time() < end:  # CPU time: the hang limit's clock
        pass


def _hog(data: bytes) -> None:
    _hog.keep = bytearray(80 << 20)  # type: ignore[attr-defined]
    _hog.keep[::4096] = b"x" * len(range(0, 80 << 20, 4096))  # touch every page: resident


def test_the_harness_detects_crashes_hangs_and_memory(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "HANG_SECONDS", 0.2)  # CPU seconds
    monkeypatch.setattr(runner, "WALL_FACTOR", 2.0)  # a call blocked for 0.4 s of wall time hangs too
    seeds = (b"ab", b"abc")
    report = run_fuzz([Target("buggy", seeds, _raise), Target("slow", (b"x",), _sleep),
                       Target("hog", (b"y",), _hog)], seconds=0, out=tmp_path, batch=1).to_dict()
    assert report["targets"]["buggy"]["crashes"] >= 1 and report["targets"]["buggy"]["rejected"] >= 1
    assert report["targets"]["slow"]["hangs"] >= 1
    assert report["targets"]["slow"]["max_seconds"] < 0.2 <= report["targets"]["slow"]["max_wall_seconds"]
    assert report["targets"]["hog"]["over_memory"] >= 1 and report["worst_memory_ratio"] > 1
    saved = {p.name.split("-")[0] for p in tmp_path.glob("*.bin")}
    assert saved == {"crash", "hang", "memory"}
    assert "RuntimeError: a reader bug" in next(tmp_path.glob("crash-*.txt")).read_text()


def test_a_hang_is_cpu_time_not_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy loop is stopped by the CPU-time alarm, however loaded the machine (no wall limit here)."""
    monkeypatch.setattr(runner, "HANG_SECONDS", 0.2)
    monkeypatch.setattr(runner, "WALL_FACTOR", 1000.0)
    report = run_fuzz([Target("spin", (b"z",), _spin)], seconds=0, out=None, batch=1).to_dict()
    assert report["targets"]["spin"]["hangs"] >= 1
    assert 0.18 <= report["targets"]["spin"]["max_seconds"] < 2  # stopped at the limit, give or take a tick


@pytest.mark.parametrize("finding", sorted(FINDINGS.glob("*.bin")), ids=lambda p: p.stem)
def test_every_past_finding_is_handled_by_every_target(finding: Path, targets: list[Target]) -> None:
    data = finding.read_bytes()
    stats = runner.TargetStats()
    report = runner.FuzzReport()
    for t in targets:
        runner.run_one(t, data, stats, report, None)
    assert stats.crashes == 0 and stats.hangs == 0, report.crash_files


def test_command_line_reports_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz_main(["--minutes", "0.01", "--only", "scene:splat", "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["targets"]) == ["scene:splat"] and report["inputs"] > 0 and report["crashes"] == 0
    assert report["finished"] and report["cpu_seconds"] >= 0


def test_a_run_stops_after_a_number_of_inputs_and_writes_its_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "report.json"
    argv = ["--inputs", "150", "--only", "scene:splat", "--out", str(tmp_path), "--report", str(saved)]
    assert fuzz_main(argv) == 0
    report = json.loads(saved.read_text())
    assert 150 <= report["inputs"] < 150 + runner.BATCH + 20  # stops at the first batch past the count
    assert report["finished"] and report["command"].endswith(" ".join(argv))
    assert "inputs in" in capsys.readouterr().out  # the table was printed too


def test_the_report_is_rewritten_while_a_run_goes(tmp_path: Path) -> None:
    from fieldpress.fuzz.__main__ import _progress_writer

    path = tmp_path / "partial.json"
    report = runner.FuzzReport(targets={"t": runner.TargetStats(inputs=7)})
    _progress_writer(path, "cmd", every=0.0)(report)
    partial = json.loads(path.read_text())
    assert partial["inputs"] == 7 and partial["finished"] is False and partial["command"] == "cmd"

"""`fieldpress batch`: a batch's outputs are the single command's outputs byte for byte, a damaged
input fails alone with its one-line error, a rerun skips what is done and resumes checkpoints, and
the exit code says whether any file failed; on a local process pool always, on Ray when installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldpress.batch import jobs as batch_jobs
from fieldpress.batch.cli import batch_command
from fieldpress.batch.jobs import Job, plan_batch
from fieldpress.batch.runner import DIED, PoolOptions, exit_code, run_job, run_jobs, summarize
from fieldpress.cli import run_command
from fieldpress.errors import InputError

FAKE = "tests.helpers.batch_fake:BATCH"
SPLAT_FLAGS = ["--preset", "fast", "--eval-views", "2", "--eval-width", "64"]


def _scenes(folder: Path) -> list[Path]:
    """Three tiny scenes and a damaged one (a PLY cut short)."""
    from fieldpress.scenes.formats import save_scene
    from fieldpress.scenes.synthetic import synthetic_scene

    folder.mkdir()
    paths = []
    for i in range(3):
        paths.append(folder / f"scene{i}.ply")
        save_scene(synthetic_scene(n=200, sh_degree=1, seed=i), paths[-1])
    data = paths[0].read_bytes()
    (folder / "damaged.ply").write_bytes(data[: len(data) // 2])
    return paths


def _batch(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict], dict]:
    """Run `fieldpress batch` in-process: (exit code, the per-file JSON lines, the summary)."""
    code = run_command(batch_command, [*argv, "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    return code, [r for r in lines if "summary" not in r], lines[-1]["summary"]


def _bar(tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's bar: 4 inputs (one damaged) on 2 workers, then a rerun that skips the 3 done."""
    from fieldpress.scenes.lightgaussian.cli import compress_splat_command

    scenes = _scenes(tmp_path / "in")
    for path in scenes:  # the single command, in this process
        assert compress_splat_command([str(path), "-o", str(tmp_path / "single" / f"{path.stem}.fpg"),
                                       *SPLAT_FLAGS, "--json"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    argv = [str(tmp_path / "in"), "--command", "compress-splat", "-o", str(out), "--workers", "2",
            "--backend", backend, *SPLAT_FLAGS]
    code, records, summary = _batch(argv, capsys)
    assert code == 2  # the one failure is bad input, as compress-splat itself would exit
    by_name = {Path(r["input"]).name: r for r in records}
    assert by_name["damaged.ply"]["status"] == "failed" and "too short" in by_name["damaged.ply"]["error"]
    assert "\n" not in by_name["damaged.ply"]["error"]
    for path in scenes:
        assert by_name[path.name]["status"] == "done"
        single = tmp_path / "single" / f"{path.stem}.fpg"
        assert (out / f"{path.stem}.fpg").read_bytes() == single.read_bytes()
    assert not (out / "damaged.fpg").exists()
    assert (summary["done"], summary["failed"], summary["backend"]) == (3, 1, backend)
    assert summary["failures"][0]["input"].endswith("damaged.ply")

    code, records, summary = _batch(argv, capsys)
    assert code == 2
    skipped = sorted(Path(r["input"]).name for r in records if r["status"] == "skipped")
    assert skipped == [p.name for p in scenes]
    assert (summary["skipped"], summary["done"], summary["failed"]) == (3, 0, 1)


def test_batch_on_a_local_pool_matches_the_single_command(tmp_path: Path, capsys) -> None:
    _bar(tmp_path, "local", capsys)


@pytest.mark.slow  # a local Ray takes ~10 s to start on a busy 2-core machine
def test_batch_on_a_local_ray_matches_the_single_command(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray", reason="the [cluster] extra (ray) is not installed")
    _bar(tmp_path, "ray", capsys)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake command next to the real ones."""
    real = batch_jobs.batch_commands()
    monkeypatch.setattr(batch_jobs, "batch_commands", lambda: {**real, "fake": FAKE})


def test_toml_jobs_outputs_flags_and_checkpoints(tmp_path: Path, fake: None) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text("ok")
    (tmp_path / "jobs.toml").write_text(
        'command = "fake"\noutput_dir = "out"\n'
        '[[jobs]]\ninput = "a.txt"\n'
        '[[jobs]]\ninput = "b.txt"\noutput = "elsewhere/b.fpi"\n'
        '[[jobs]]\ninput = "c.txt"\ncommand = "compress-splat"\nflags = ["--preset", "fast"]\n')
    (tmp_path / "out" / "a.fpi.ckpt").mkdir(parents=True)  # an interrupted job left a checkpoint
    plan = plan_batch(tmp_path / "jobs.toml", None, [])
    a, b, c = plan.jobs
    assert a.output == str(tmp_path / "out" / "a.fpi") and a.resume and a.argv[-1] == "--resume"
    assert b.output == str(tmp_path / "elsewhere" / "b.fpi") and not b.resume
    assert c.command == "compress-splat" and c.output == str(tmp_path / "out" / "c.fpg")
    assert c.argv[-2:] == ("--preset", "fast")
    record = run_job(a)
    assert record["status"] == "done" and record["resumed"]
    assert plan_batch(tmp_path / "jobs.toml", None, []).skipped[0]["input"] == str(tmp_path / "a.txt")


@pytest.mark.parametrize("toml, message", [
    ("command = \"fake\"\n", "no [[jobs]]"),
    ("[[jobs]]\ninput = \"a.txt\"\n", "no command"),
    ("command = \"decode-image\"\n[[jobs]]\ninput = \"a.txt\"\n", "cannot run in a batch"),
    ("comand = \"fake\"\n[[jobs]]\ninput = \"a.txt\"\n", "unknown keys"),
    ("command = \"fake\"\n[[jobs]]\ninput = \"a.txt\"\nflags = \"--x\"\n", "list of strings"),
    ("command = \"fake\"\n[[jobs]]\ninput = \"a.txt\"\n[[jobs]]\ninput = \"a.txt\"\n", "both write"),
    ("command = [", "not a valid TOML"),
])
def test_bad_jobs_files_are_one_line_errors(tmp_path: Path, fake: None, toml: str, message: str) -> None:
    (tmp_path / "jobs.toml").write_text(toml)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        plan_batch(tmp_path / "jobs.toml", None, [])


def test_bad_usage_exits_2_before_any_work(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    _scenes(folder)
    for argv in ([str(folder), "--command", "compress-splat", "--preset", "nope"],  # the command's parser
                 [str(folder)],  # a folder needs --command
                 [str(folder), "--command", "compress-splat", "--", "-o", "x"],  # outputs via the batch's -o
                 [str(folder), "--command", "compress-splat", "--workers", "0"],
                 [str(tmp_path / "missing"), "--command", "compress-splat"]):
        assert run_command(batch_command, argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert sorted(p.name for p in folder.iterdir()) == ["damaged.ply", *(f"scene{i}.ply" for i in range(3))]


def test_failures_never_stop_the_others(tmp_path: Path) -> None:
    """A bad input, a bug and a worker that dies fail alone; the good files around them are written."""
    jobs = []
    for name, text in (("ok1", "ok"), ("bad", "bad"), ("boom", "boom"), ("crash", "crash"), ("ok2", "ok")):
        (tmp_path / f"{name}.txt").write_text(text)
        out = tmp_path / f"{name}.fpi"
        jobs.append(Job("fake", FAKE, str(tmp_path / f"{name}.txt"), str(out),
                        (str(tmp_path / f"{name}.txt"), "-o", str(out))))
    records: list[dict] = []
    assert run_jobs(jobs, PoolOptions(backend="local", workers=2), records.append) == "local"
    by = {Path(r["input"]).stem: r for r in records}
    assert len(records) == 5 and {by["ok1"]["status"], by["ok2"]["status"]} == {"done"}
    assert by["bad"]["error_kind"] == "input" and "not a fake input" in by["bad"]["error"]
    assert by["boom"]["error"] == "internal error: RuntimeError: a bug over two lines"
    assert by["crash"]["error"] == DIED
    assert exit_code(records) == 1
    summary = summarize(records, 1.0, "local")
    assert (summary["done"], summary["failed"], summary["mean_psnr"]) == (2, 3, 40.0)


def test_folder_scan_and_exit_codes(tmp_path: Path, fake: None) -> None:
    for name in ("a.txt", "B.TXT", ".hidden.txt", "notes.md"):
        (tmp_path / name).write_text("ok")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("ok")
    names = [Path(j.input).name for j in plan_batch(tmp_path, "fake", []).jobs]
    assert names == ["B.TXT", "a.txt"]
    assert len(plan_batch(tmp_path, "fake", [], recursive=True).jobs) == 3
    assert exit_code([{"status": "done"}, {"status": "skipped"}]) == 0
    assert exit_code([{"status": "failed", "error_kind": "input"}]) == 2
    both = [{"status": "failed", "error_kind": "input"}, {"status": "failed", "error_kind": "internal"}]
    assert exit_code(both) == 1
    with pytest.raises(InputError, match="Ray is not installed|--address needs"):
        run_jobs([], PoolOptions(backend="local", address="ray://x:1"), print)


def test_lines_on_stdout_and_the_table_on_stderr(tmp_path: Path, fake: None, capsys) -> None:
    (tmp_path / "good.txt").write_text("ok")
    (tmp_path / "bad.txt").write_text("bad")
    assert run_command(batch_command, [str(tmp_path), "--command", "fake", "--backend", "local",
                                       "--workers", "1"]) == 2
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(r["status"] for r in records) == ["done", "failed"]
    assert "backend     local" in captured.err and "not a fake input" in captured.err
    assert (tmp_path / "good.fpi").is_file() and not (tmp_path / "bad.fpi").exists()

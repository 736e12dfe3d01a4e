"""What a batch is: the jobs of a JOBS.toml or of a folder, where each writes, and which are done.

A job is one input through one batch-able command with its flags; its output is the command's
default name for the input, beside it or under `-o DIR`. A job whose output is already a complete
container (every CRC checks) is skipped; one with a checkpoint `<output>.ckpt/` is resumed when the
command can resume (fit-video's --resume), so an interrupted batch run again picks up where it was.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fieldpress.errors import InputError

TOML_KEYS = {"command", "flags", "output_dir", "jobs"}
JOB_KEYS = {"input", "output", "flags", "command"}


@dataclass(frozen=True)
class Job:
    """One file through one command: `target` ("module:BATCH") is what a worker imports to run it."""

    command: str
    target: str
    input: str
    output: str
    argv: tuple[str, ...]  # the command's own argv: INPUT -o OUTPUT FLAGS... [--resume]
    resume: bool = False


@dataclass
class Plan:
    """The jobs to run and the records of those skipped because their output is complete."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def batch_commands() -> dict[str, str]:
    """Batch-able commands by name -> "module:BATCH" (a `fieldpress.commands` entry point whose
    module defines BATCH for that name)."""
    found = {}
    for ep in entry_points(group="fieldpress.commands"):
        module = ep.value.split(":", 1)[0]
        try:
            batch = getattr(importlib.import_module(module), "BATCH", None)
        except ImportError:
            continue
        if batch is not None and getattr(batch, "name", None) == ep.name:
            found[ep.name] = f"{module}:BATCH"
    return found


def load_command(target: str) -> Any:
    """The BatchCommand at "module:attr" (in the driver and in every worker)."""
    module, attr = target.split(":", 1)
    return getattr(importlib.import_module(module), attr)


def output_complete(path: Path) -> bool:
    """Whether `path` is a whole fieldpress container (header, table and every payload CRC check)."""
    from fieldpress.codec.container import read_info

    if not path.is_file():
        return False
    try:
        read_info(path, verify=True)
    except (InputError, OSError):
        return False
    return True


def _flags(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise InputError(f"{where}: flags must be a list of strings such as [\"--preset\", \"fast\"]")
    return [str(v) for v in value]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a valid TOML jobs file ({exc})") from None
    unknown = set(data) - TOML_KEYS
    if unknown:
        raise InputError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(TOML_KEYS)}")
    if not isinstance(data.get("jobs", []), list) or not data.get("jobs"):
        raise InputError(f"{path}: no [[jobs]] entries")
    return data


def _toml_entries(path: Path, command: str | None, cli_flags: list[str],
                  out_dir: Path | None) -> list[tuple[str, Path, Path | None, list[str], Path | None]]:
    """(command, input, explicit output or None, flags, output folder) of each [[jobs]] entry."""
    data = _read_toml(path)
    base = path.parent
    default_cmd = command or data.get("command")
    file_flags = _flags(data.get("flags"), str(path))
    folder = out_dir or (base / data["output_dir"] if data.get("output_dir") else None)
    out = []
    for i, job in enumerate(data["jobs"]):
        where = f"{path}: jobs[{i}]"
        if not isinstance(job, dict) or "input" not in job or set(job) - JOB_KEYS:
            raise InputError(f"{where}: expected a table with input (and optional output, flags, command)")
        name = job.get("command", default_cmd)
        if not name:
            raise InputError(f"{where}: no command (give --command or command = \"...\" in the file)")
        output = base / job["output"] if job.get("output") else None
        out.append((str(name), base / str(job["input"]), output,
                    file_flags + cli_flags + _flags(job.get("flags"), where), folder))
    return out


def _folder_inputs(folder: Path, suffixes: tuple[str, ...], recursive: bool) -> list[Path]:
    """Files under `folder` whose names end in one of `suffixes` (hidden and temp files left out)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and not p.name.startswith(".")
                  and p.name.lower().endswith(suffixes))


def plan_batch(source: str | os.PathLike[str], command: str | None, flags: list[str],
               out_dir: str | os.PathLike[str] | None = None, recursive: bool = False) -> Plan:
    """The jobs of a JOBS.toml or a folder, their flags checked by each command's parser, the complete
    outputs skipped and the checkpointed ones marked for resume (InputError before any work)."""
    src, folder = Path(source), Path(out_dir) if out_dir else None
    known = batch_commands()
    if src.is_dir():
        if not command:
            raise InputError(f"{src} is a folder: say which command to run with --command "
                             f"({', '.join(sorted(known))})")
        target = _target(known, command)
        suffixes = load_command(target).suffixes
        entries = [(command, p, None, list(flags), folder) for p in _folder_inputs(src, suffixes, recursive)]
        if not entries:
            raise InputError(f"{src}: no inputs for {command} ({' '.join(suffixes)})")
    elif src.is_file():
        entries = _toml_entries(src, command, list(flags), folder)
    else:
        raise InputError(f"{src}: no such jobs file or folder")
    plan, outputs = Plan(), {}
    for name, inp, output, job_flags, where in entries:
        job = _make_job(known, name, inp, output, job_flags, where)
        if job.output in outputs:
            raise InputError(f"{outputs[job.output]} and {job.input} would both write {job.output}")
        outputs[job.output] = job.input
        if output_complete(Path(job.output)):
            plan.skipped.append({"input": job.input, "output": job.output, "command": job.command,
                                 "status": "skipped", "bytes": Path(job.output).stat().st_size,
                                 "input_bytes": _size(Path(job.input)), "error": None})
        else:
            plan.jobs.append(job)
    return plan


def _target(known: dict[str, str], command: str) -> str:
    if command not in known:
        raise InputError(f"{command!r} cannot run in a batch; batch-able commands: "
                         f"{', '.join(sorted(known))}")
    return known[command]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _make_job(known: dict[str, str], command: str, inp: Path, output: Path | None, flags: list[str],
              folder: Path | None) -> Job:
    """A Job with its output path and argv, the flags checked by the command's own parser."""
    target = _target(known, command)
    spec = load_command(target)
    if any(f in ("-o", "--output", "--json") or f.startswith("--output=") for f in flags):
        raise InputError("give outputs with the batch's -o DIR or a job's output = \"...\", not in the flags")
    if output is None:
        output = (folder or inp.parent) / spec.output_name(inp)
    ckpt = Path(f"{output}.ckpt")
    resume = bool(spec.resume_flag) and ckpt.is_dir() and spec.resume_flag not in flags
    argv = [str(inp), "-o", str(output), *flags, *([spec.resume_flag] if resume else [])]
    spec.parse(argv)  # a bad flag is a usage error of the whole batch (exit 2), before any work
    return Job(command, target, str(inp), str(output), tuple(argv), resume)

"""Running a batch's jobs: on Ray (the `[cluster]` extra: a local Ray started here, or a cluster at
--address / RAY_ADDRESS) or, without Ray, on a local pool of spawned processes.

Every job runs in a worker through its command's own parser and body (`run_job`); whatever it
raises becomes that file's failure record (one line), so one bad file never stops the others.
Records are handed to `on_record` as the files finish (one JSON line each in the command).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldpress.batch.jobs import Job, load_command
from fieldpress.errors import InputError

Record = dict[str, Any]
OnRecord = Callable[[Record], None]
BACKENDS = ("auto", "ray", "local")


@dataclass(frozen=True)
class PoolOptions:
    """Where jobs run: backend, workers (local: processes; local Ray: CPUs), cluster address, and what
    one job holds (Ray schedules by these; gpus_per_job None: 1 when the cluster has GPUs and the
    flags do not say --device cpu, else 0)."""

    backend: str = "auto"
    workers: int | None = None
    address: str | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_job <= 0 or (self.gpus_per_job is not None and self.gpus_per_job < 0):
            raise InputError("--cpus-per-job must be positive and --gpus-per-job not negative")


def ray_available() -> bool:
    """Whether the `[cluster]` extra (ray) is installed."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def choose_backend(options: PoolOptions) -> str:
    """"ray" or "local": auto takes Ray when installed; an address without Ray is a usage error."""
    address = options.address or os.environ.get("RAY_ADDRESS")
    if options.backend == "local":
        if options.address:
            raise InputError("--address needs the Ray backend (drop --backend local)")
        return "local"
    if ray_available():
        return "ray"
    if options.backend == "ray" or address:
        raise InputError("Ray is not installed: pip install 'fieldpress[cluster]' (or --backend local)")
    return "local"


# ----------------------------------------------------------------------------- one job (in a worker)
def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc).strip() or type(exc).__name__).split())


def run_job(job: Job) -> Record:
    """Run one job through its command's parser and body; a record whatever happens."""
    started = time.perf_counter()
    record: Record = {"input": job.input, "output": job.output, "command": job.command,
                      "status": "done", "resumed": job.resume, "error": None,
                      "input_bytes": _size(job.input), "host": socket.gethostname()}
    try:
        spec = load_command(job.target)
        summary = spec.run(spec.parse(list(job.argv))).to_dict()
    except InputError as exc:
        return {**record, "status": "failed", "error": _one_line(exc), "error_kind": "input",
                "seconds": round(time.perf_counter() - started, 3)}
    except Exception as exc:  # noqa: BLE001 - a worker's boundary: one file's failure, never the batch's
        error = f"internal error: {type(exc).__name__}: {_one_line(exc)}"
        return {**record, "status": "failed", "error": error, "error_kind": "internal",
                "seconds": round(time.perf_counter() - started, 3)}
    for key in ("command", "input", "output"):
        summary.pop(key, None)
    return {**record, **summary}


def _size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def failed(job: Job, error: str) -> Record:
    """The record of a job whose worker did not come back (killed, out of memory, node lost)."""
    return {"input": job.input, "output": job.output, "command": job.command, "status": "failed",
            "resumed": job.resume, "error": error, "error_kind": "internal", "input_bytes": _size(job.input)}


def _worker_env(threads: int) -> dict[str, str]:
    """What every worker runs with: no progress bars of its own, `threads` intra-op threads."""
    return {"FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": str(threads)}


def _init_local_worker(env: dict[str, str]) -> None:
    os.environ.update(env)  # before torch is imported in this fresh (spawned) process


# ----------------------------------------------------------------------------- local process pool
DIED = "worker process died (killed, crashed or out of memory); run the batch again to retry"


def _pool_pass(jobs: Sequence[Job], workers: int, on_record: OnRecord) -> tuple[list[Job], list[Job]]:
    """Run `jobs` on one pool of spawned processes, at most `workers` at a time. If a worker dies the
    pool is broken: returns (the jobs that were in flight, those not started); else ([], [])."""
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    todo = list(jobs)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_local_worker, initargs=(_worker_env(threads),)) as pool:
        running: dict[Future[Record], Job] = {}
        while todo or running:
            while todo and len(running) < workers:
                try:
                    running[pool.submit(run_job, todo[0])] = todo[0]
                except BrokenProcessPool:
                    return list(running.values()), todo
                todo.pop(0)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                job = running.pop(fut)
                try:
                    on_record(fut.result())
                except BrokenProcessPool:
                    broken.append(job)
            if broken:
                return broken + list(running.values()), todo
    return [], []


def _run_local(jobs: Sequence[Job], workers: int, on_record: OnRecord) -> None:
    """Run on `workers` spawned processes (cores / workers threads each). When a worker dies, the jobs
    that were in flight run again one at a time, so only the file that kills its worker fails."""
    todo, suspects = list(jobs), []
    while todo or suspects:
        for job in suspects:
            broken, _ = _pool_pass([job], 1, on_record)
            for lost in broken:
                on_record(failed(lost, DIED))
        suspects = []
        if todo:
            suspects, todo = _pool_pass(todo, workers, on_record)


# ----------------------------------------------------------------------------- Ray
def _ray_init(options: PoolOptions, workers: int) -> Any:
    """Connect to the cluster at --address / RAY_ADDRESS, or start a local Ray with `workers` CPUs."""
    import ray

    address = options.address or os.environ.get("RAY_ADDRESS")
    env = _worker_env(max(1, int(options.cpus_per_job)))
    if address:
        return ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    # workers of a local Ray import fieldpress from where this driver does (a checkout or a venv)
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return ray.init(num_cpus=workers, runtime_env={"env_vars": {**env, "PYTHONPATH": path}},
                    log_to_driver=True)  # the dashboard starts where ray[default] is installed


def _gpus_per_job(options: PoolOptions, jobs: Sequence[Job]) -> float:
    import ray

    if options.gpus_per_job is not None:
        return options.gpus_per_job
    wants_cpu = all(any(a in ("cpu", "--device=cpu") for a in job.argv) for job in jobs)
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 and not wants_cpu else 0.0


def _run_ray(jobs: Sequence[Job], options: PoolOptions, workers: int, on_record: OnRecord,
             notice: Callable[[str], None]) -> None:
    """One Ray task per job (cpus_per_job CPUs, gpus_per_job GPUs); records as tasks finish."""
    import ray

    context = _ray_init(options, workers)
    try:
        url = getattr(context, "dashboard_url", None)
        if url:
            notice(f"Ray dashboard: http://{url}")
        task = ray.remote(num_cpus=options.cpus_per_job, num_gpus=_gpus_per_job(options, jobs),
                          max_retries=0)(run_job)
        pending = {task.remote(job): job for job in jobs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    on_record(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - a lost worker or node fails its file only
                    on_record(failed(job, f"Ray task failed: {type(exc).__name__}: {_one_line(exc)[:300]}"))
    finally:
        ray.shutdown()


def run_jobs(jobs: Sequence[Job], options: PoolOptions, on_record: OnRecord,
             notice: Callable[[str], None] = lambda _: None) -> str:
    """Run every job on the chosen backend, handing each record to `on_record`; returns the backend."""
    backend = choose_backend(options)
    workers = options.workers or os.cpu_count() or 1
    if not jobs:
        return backend
    if backend == "ray":
        _run_ray(jobs, options, workers, on_record, notice)
    else:
        if options.backend == "auto":
            n = min(workers, len(jobs))
            notice(f"Ray is not installed (pip install 'fieldpress[cluster]'): running on a local pool "
                   f"of {n} worker process{'es' if n > 1 else ''}")
        _run_local(jobs, min(workers, len(jobs)), on_record)
    return backend


# ----------------------------------------------------------------------------- the outcome
def _quality(record: Record) -> float | None:
    value = record.get("psnr", record.get("render_psnr"))
    return float(value) if isinstance(value, (int, float)) else None


def summarize(records: Sequence[Record], seconds: float, backend: str) -> dict[str, Any]:
    """Files done / skipped / failed, bytes in and out, mean ratio and PSNR, and the failures."""
    ok = [r for r in records if r["status"] in ("done", "skipped")]
    ratios = [r["input_bytes"] / r["bytes"] for r in ok if r.get("input_bytes") and r.get("bytes")]
    psnrs = [q for q in map(_quality, ok) if q is not None]
    return {
        "files": len(records), "done": sum(r["status"] == "done" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": sum(r["status"] == "failed" for r in records),
        "resumed": sum(bool(r.get("resumed")) and r["status"] == "done" for r in records),
        "bytes_in": sum(r.get("input_bytes") or 0 for r in ok),
        "bytes_out": sum(r.get("bytes") or 0 for r in ok),
        "mean_ratio": round(sum(ratios) / len(ratios), 3) if ratios else None,
        "mean_psnr": round(sum(psnrs) / len(psnrs), 3) if psnrs else None,
        "seconds": round(seconds, 3), "backend": backend,
        "failures": [{"input": r["input"], "error": r["error"]} for r in records if r["status"] == "failed"],
    }


def exit_code(records: Sequence[Record]) -> int:
    """0 when no file failed; 2 when every failure was bad input (as the single command exits); else 1."""
    kinds = {r.get("error_kind") for r in records if r["status"] == "failed"}
    if not kinds:
        return 0
    return 2 if kinds == {"input"} else 1

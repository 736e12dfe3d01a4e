"""`fieldpress batch JOBS.toml|DIR --command NAME [flags]`: many files through one command, on Ray
or a local process pool; one JSON line per file on stdout, a summary table, and an exit code that
says whether any file failed."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from fieldpress.cli import new_parser
from fieldpress.runtime import make_progress, progress_enabled

DESCRIPTION = ("Run compress-splat, fit-video or fit-image over a folder or a JOBS.toml, on Ray (the "
               "[cluster] extra: a local Ray with one job per core or GPU, or a cluster with --address / "
               "RAY_ADDRESS) or else a local process pool. Flags the batch does not know go to the "
               "command (or put them after --). Outputs are written atomically beside the inputs or "
               "under -o DIR; a rerun skips complete outputs and resumes checkpoints.")


def _parser() -> Any:
    p = new_parser("fieldpress batch", DESCRIPTION)
    p.allow_abbrev = False  # a command's --pre... must not be taken for a batch flag
    p.add_argument("source", help="a folder of inputs, or a JOBS.toml ([[jobs]] input = ..., see the README)")
    p.add_argument("--command", help="compress-splat, fit-video or fit-image (or command = in the TOML)")
    p.add_argument("-o", "--output", metavar="DIR", help="write every output under DIR (default: beside "
                   "each input)")
    p.add_argument("--recursive", action="store_true", help="scan the folder's subfolders too")
    p.add_argument("--backend", default="auto", help="auto (Ray when installed), ray or local")
    p.add_argument("--workers", type=int, help="local workers / CPUs of a local Ray (default: the cores)")
    p.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--cpus-per-job", type=float, default=1.0, help="CPUs one job holds on Ray (1)")
    p.add_argument("--gpus-per-job", type=float, help="GPUs one job holds on Ray (default: 1 when the "
                   "cluster has GPUs, else 0)")
    return p


def _split(argv: Sequence[str]) -> tuple[Any, list[str]]:
    """The batch's own flags, and the command's (unknown flags, and everything after --)."""
    args = list(argv)
    tail = args[args.index("--") + 1:] if "--" in args else []
    head = args[: args.index("--")] if "--" in args else args
    ns, rest = _parser().parse_known_args(head)
    return ns, rest + tail


def batch_command(argv: Sequence[str] | None = None) -> int:
    """fieldpress batch SOURCE --command NAME [flags]: run the command over every input."""
    from fieldpress.batch import PoolOptions, exit_code, plan_batch, run_jobs, summarize

    args, flags = _split(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    pool = PoolOptions(args.backend, args.workers, args.address, args.cpus_per_job, args.gpus_per_job)
    plan = plan_batch(args.source, args.command, flags, args.output, args.recursive)
    records: list[dict[str, Any]] = []
    with make_progress(progress_enabled(args.json)) as bar:
        task = bar.add_task("batch", total=len(plan.jobs) + len(plan.skipped), info="")

        def emit(record: dict[str, Any]) -> None:
            records.append(record)
            print(json.dumps(record, default=str), flush=True)
            bar.update(task, advance=1, info=f"{sum(r['status'] == 'failed' for r in records)} failed")

        for record in plan.skipped:
            emit(record)
        backend = run_jobs(plan.jobs, pool, emit, notice=lambda text: print(text, file=sys.stderr))
    summary = summarize(records, time.perf_counter() - started, backend)
    _print_summary(summary, args.json)
    return exit_code(records)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The summary as one last JSON line ({"summary": ...}) with --json, else a table on stderr."""
    if as_json:
        print(json.dumps({"summary": summary}, default=str), flush=True)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="fieldpress batch", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("files", "done", "skipped", "failed", "resumed", "bytes_in", "bytes_out", "mean_ratio",
                "mean_psnr", "seconds", "backend"):
        value = summary[key]
        table.add_row(key, "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value))
    for failure in summary["failures"]:
        error = failure["error"]  # most errors already start with the input's path
        text = error if error.startswith(failure["input"]) else f"{failure['input']}: {error}"
        table.add_row("[red]failed[/red]", escape(text))
    Console(stderr=True).print(table)

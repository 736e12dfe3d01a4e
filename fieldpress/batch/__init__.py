"""`fieldpress batch`: many files through one command (compress-splat, fit-video, fit-image), on Ray
when the `[cluster]` extra is installed (a local Ray, or a cluster with --address / RAY_ADDRESS),
else on a local process pool.

The batch knows no family: a command is batch-able when the module of its `fieldpress.commands`
entry point defines `BATCH`, a `fieldpress.cli.BatchCommand` holding the command's own parser and
body. So every output is what the single command writes for the same input and flags.
"""

from __future__ import annotations

from fieldpress.batch.jobs import Job, Plan, batch_commands, plan_batch
from fieldpress.batch.runner import PoolOptions, exit_code, run_jobs, summarize

__all__ = ["Job", "Plan", "PoolOptions", "batch_commands", "exit_code", "plan_batch", "run_jobs", "summarize"]

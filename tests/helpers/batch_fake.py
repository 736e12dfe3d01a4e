"""A fake batch-able command for the batch runner's tests: it copies its input into a container,
and fails on purpose when the input says so ("bad": bad input, "boom": a bug, "crash": the worker
process dies)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fieldpress.cli import BatchCommand, RunSummary
from fieldpress.codec.container import write_container
from fieldpress.errors import InputError


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fake")
    parser.add_argument("input")
    parser.add_argument("-o", "--output")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> RunSummary:
    data = Path(args.input).read_bytes()
    if data.startswith(b"bad"):
        raise InputError(f"{args.input}: not a fake input")
    if data.startswith(b"boom"):
        raise RuntimeError("a bug\nover two lines")
    if data.startswith(b"crash"):
        os._exit(3)
    nbytes = write_container(args.output, "image", {"resumed": args.resume},
                             {"data": np.frombuffer(data, np.uint8)}, codecs={"data": "raw"})
    return RunSummary("fake", args.input, args.output, nbytes, 0.0, "cpu", {"psnr": 40.0})


BATCH = BatchCommand("fake", (".txt",), lambda p: p.with_suffix(".fpi").name, _parse, _run,
                     resume_flag="--resume")

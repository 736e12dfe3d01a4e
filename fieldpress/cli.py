"""Shared command-line helpers: errors and exit codes, atomic writes, `--json` summaries, parsing
of the common flag values (WxH, crops, frame ranges, sizes), devices, progress, and `fieldpress info`.

Every console script is written as ``def main(argv=None) -> int`` wrapped by :func:`run_command`, so
bad input exits 2 with one line on stderr, internal errors exit 1, and Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fieldpress.errors import FieldpressError, InputError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


# ----------------------------------------------------------------------------- running commands
class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises InputError (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message} (see --help)")


def new_parser(prog: str, description: str) -> ArgumentParser:
    """A parser with the flags every command shares: --json and --debug."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object (a RunSummary) on stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def run_command(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command body and map its outcome to DESIGN.md's exit codes (0 ok, 1 internal, 2 input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("FIELDPRESS_DEBUG") == "1"
    try:
        code = main(args)
        return EXIT_OK if code is None else int(code)
    except InputError as exc:
        if debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except (FieldpressError, Exception) as exc:  # noqa: BLE001 - the boundary of the program
        if debug:
            raise
        print(f"internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def entry(main: Callable[[Sequence[str] | None], int | None]) -> Callable[[], None]:
    """Turn a command body into a console-script entry point that exits with the right code."""

    def _entry() -> None:
        sys.exit(run_command(main))

    _entry.__doc__ = main.__doc__
    _entry.__name__ = getattr(main, "__name__", "entry")
    return _entry


# ----------------------------------------------------------------------------- summaries
@dataclasses.dataclass
class RunSummary:
    """What a command did, printed as one JSON object with --json, else as a short table.

    The family's quality figures (psnr, ms_ssim, bpp; gaussians_in, render_psnr, ...) go in `metrics`
    and are flattened into the top level of the JSON object.
    """

    command: str
    input: str | None
    output: str | None
    bytes: int | None
    seconds: float
    device: str
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_result(cls, command: str, result: Any, output: str | os.PathLike[str] | None) -> RunSummary:
        """The summary of a family pipeline's `Result` (fieldpress.codec.registry) written to `output`."""
        return cls(command, result.input, None if output is None else str(output), result.bytes,
                   result.seconds, result.device, metrics={"codec": result.codec.name, **result.metrics})

    def to_dict(self) -> dict[str, Any]:
        base = {k: getattr(self, k) for k in ("command", "input", "output", "bytes", "seconds", "device")}
        base["seconds"] = round(float(self.seconds), 3)
        for key, value in self.metrics.items():
            base[key] = _jsonable(value)
        return base

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    def emit(self, as_json: bool) -> None:
        """Print the summary: the JSON object on stdout, or a one-screen table."""
        if as_json:
            print(self.to_json(), flush=True)
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(self.command), show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for key, value in self.to_dict().items():
            if key == "command" or value is None:
                continue
            table.add_row(escape(key), escape(_format_value(value)))  # paths may hold [brackets]
        Console(stderr=False).print(table)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    return str(value)


# ----------------------------------------------------------------------------- batch-able commands
@dataclasses.dataclass(frozen=True)
class BatchCommand:
    """A command `fieldpress batch` runs over many files through the very code the command runs.

    `parse(argv)` is the command's own parser and `run(args)` its body up to the summary it would print
    (the output written atomically), so a batch output is the single command's output. Families
    register one per command under the `fieldpress.batch` entry-point group.
    """

    name: str
    suffixes: tuple[str, ...]  # inputs a folder scan picks up (lower case, with the dot)
    output_name: Callable[[Path], str]  # the command's default output file name for an input
    parse: Callable[[Sequence[str]], argparse.Namespace]
    run: Callable[[argparse.Namespace], RunSummary]
    resume_flag: str | None = None  # the flag that continues from OUTPUT.ckpt/ (fit-video: --resume)


# ----------------------------------------------------------------------------- flag values
_WXH = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_CROP = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*(?:\+\s*(\d+)\s*\+\s*(\d+))?\s*$")


def _match_size(pattern: re.Pattern[str], text: str, noun: str, form: str, example: str) -> re.Match[str]:
    """Match a WxH-shaped flag value whose first two groups are a positive width and height."""
    match = pattern.match(text or "")
    if not match:
        raise InputError(f"expected a {noun} {form} such as {example}, got {text!r}")
    if int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise InputError(f"{noun} must be positive, got {text!r}")
    return match


def parse_wxh(text: str) -> tuple[int, int]:
    """'320x180' -> (320, 180). Sizes are always width x height."""
    match = _match_size(_WXH, text, "size", "WxH", "320x180")
    return int(match.group(1)), int(match.group(2))


def parse_crop(text: str) -> tuple[int, int, int | None, int | None]:
    """'1280x640+0+40' -> (1280, 640, 0, 40); without +X+Y the offsets are None (centre crop)."""
    match = _match_size(_CROP, text, "crop size", "WxH[+X+Y]", "1280x640+0+40")
    x = None if match.group(3) is None else int(match.group(3))
    y = None if match.group(4) is None else int(match.group(4))
    return int(match.group(1)), int(match.group(2)), x, y


def parse_frames(text: str) -> tuple[int, int | None]:
    """'0:64' -> (0, 64), end exclusive; '10:' -> (10, None); '5' -> (5, 6)."""
    text = (text or "").strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            start = int(a) if a.strip() else 0
            end = int(b) if b.strip() else None
        else:
            start = int(text)
            end = start + 1
    except ValueError:
        raise InputError(f"expected a frame range START:END (end exclusive), got {text!r}") from None
    if start < 0 or (end is not None and end <= start):
        raise InputError(f"frame range {text!r} is empty or negative (END is exclusive)")
    return start, end


_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*$")


def parse_count(text: str) -> int:
    """'1.5M' -> 1_500_000, '350k' -> 350_000, '4096' -> 4096 (parameter counts, sizes)."""
    match = _COUNT.match(str(text))
    if not match:
        raise InputError(f"expected a count such as 1.5M, 350k or 4096, got {text!r}")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[match.group(2).lower()]
    value = int(round(float(match.group(1)) * scale))
    if value <= 0:
        raise InputError(f"count must be positive, got {text!r}")
    return value


def input_file(path: str | os.PathLike[str]) -> Path:
    """Check that an input path exists and is a readable file; return it as a Path."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: not readable")
    return p


# ----------------------------------------------------------------------------- fieldpress info
def info_command(argv: Sequence[str] | None = None) -> int:
    """`fieldpress info FILE`: kind, header and streams (sizes, codecs) of a container; no decoding."""
    from fieldpress.codec.container import read_info

    parser = new_parser("fieldpress info", "Show what a fieldpress container holds without decoding it.")
    parser.add_argument("file")
    parser.add_argument("--verify", action="store_true",
                        help="also decode every stream and check it against the header and the codec "
                             "(runs no model; exit 2 with one line if anything would not decode)")
    parser.add_argument("--prior", help="with --verify: the prior file a RECOMBINER file was coded with "
                                        "(default: the one shipped with fieldpress)")
    args = parser.parse_args(argv)
    if args.prior and not args.verify:
        raise InputError("--prior is used only with --verify")
    path = input_file(args.file)
    info = read_info(path)
    data = info.to_dict()
    if args.verify:
        from fieldpress.codec.container import open_container
        from fieldpress.codec.verify import verify_container

        options = {"prior": str(input_file(args.prior))} if args.prior else None
        data["verified"] = verify_container(open_container(path), options=options).to_dict()
    if args.json:
        print(json.dumps(_jsonable(data)))
        return EXIT_OK
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # names, header and summary come from the file: escape them so rich never reads them as markup
    console = Console()
    console.print(f"[bold]{escape(str(path))}[/bold]: fieldpress {data['kind']} container, "
                  f"format v{data['version']}, {data['file_bytes']:,} bytes")
    summary = data.get("summary") or {}
    for key, value in summary.items():
        console.print(f"  {escape(str(key))}: {escape(_format_value(value))}")
    table = Table("stream", "codec", "dtype", "shape", "bytes", "raw bytes")
    for s in data["streams"]:
        table.add_row(escape(s["name"]), s["codec"], s["dtype"], "x".join(map(str, s["shape"])) or "()",
                      f"{s['length']:,}", f"{s['raw_bytes']:,}")
    console.print(table)
    console.print("header: " + json.dumps(data["header"], sort_keys=True)[:2000], markup=False)
    if "verified" in data:
        v = data["verified"]
        console.print(f"verified: {v['streams']} streams decoded ({v['decoded_bytes']:,} bytes), "
                      f"{v['state_dicts']} weight set(s) checked"
                      + (", codec layout checked" if v["codec_checked"] else ""), markup=False)
    return EXIT_OK


info_main = entry(info_command)

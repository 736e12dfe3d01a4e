"""The bad-input contract of a command, asserted in one place: exit 2, one line on stderr, no
traceback, no output written, the input untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldpress.cli import run_command


def assert_refused(command: Callable[..., Any], argv: list[str], src: Path, out: Path, capsys: Any) -> str:
    """Run `command` on `argv` and assert the contract; returns the one error line."""
    before = src.read_bytes()
    assert run_command(command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and src.read_bytes() == before
    return err

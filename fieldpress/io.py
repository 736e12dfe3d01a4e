"""Atomic output: every file fieldpress writes appears whole or not at all (temp file, fsync, rename).

The bottom layer: it imports nothing of fieldpress but its errors, so the core and the families can
all write through it (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fieldpress.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error delete it.

    The rename is atomic on POSIX, so readers never see a half-written output.
    """
    final = Path(path)
    if final.is_dir():
        raise InputError(f"{final}: is a directory, expected an output file")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:  # read-only place, a file where a folder should be, ...: bad output path
        raise InputError(f"cannot write {final}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once at import: os.umask can only be read by setting it, which would race with other threads
_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> int:
    """Write `data` to `path` atomically; return the number of bytes written."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> int:
    """Write `text` as UTF-8 to `path` atomically; return the number of bytes written."""
    return atomic_write_bytes(path, text.encode("utf-8"))

"""The JSONL metrics log beside the output (`<output>.log.jsonl`): one JSON object per line, one line
per logged epoch, evaluation and stage end. On resume, lines written after the checkpoint are dropped
so the log reads as if the fit had never stopped."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fieldpress.io import atomic_write_text


def log_path(output: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(output)}.log.jsonl")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsLog:
    """Append-only JSONL writer; `path=None` writes nothing (non-zero ranks, fits without output)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def start(self, resume_step: int | None) -> None:
        """Fresh fit: empty the log. Resume: keep only the lines up to the checkpoint's step."""
        if self.path is None:
            return
        kept: list[str] = []
        if resume_step is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except (json.JSONDecodeError, AttributeError):
                    break  # a torn last line from a killed run
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_clean(record), sort_keys=False) + "\n")

"""A `fit-image` run as a child process (to SIGKILL and resume), and the step its checkpoint holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fieldpress.engine.checkpoint import checkpoint_dir

REPO = Path(__file__).resolve().parents[2]


def start_fit_image(image: Path, out: Path, flags: list[str]) -> subprocess.Popen:
    """`python -m fieldpress fit-image IMAGE -o OUT FLAGS...` on one thread, without progress bars."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIELDPRESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "fieldpress", "fit-image", str(image), "-o", str(out),
                             *flags], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def checkpoint_step(out: Path) -> int:
    """The global step of `out`'s checkpoint (0 while there is none or it is being written)."""
    try:
        return int(json.loads((checkpoint_dir(out) / "meta.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError):
        return 0

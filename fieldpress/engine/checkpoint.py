"""Checkpoints: `<output>.ckpt/` holding `state.safetensors` (tensors) and `meta.json` (scalars).

No pickle: tensors go through safetensors, everything else through JSON. A checkpoint is written
into a temporary folder and renamed into place; the previous one is kept as `<dir>.old` until the
new one is in place, so a kill at any instant leaves a complete checkpoint to resume from.
`meta.json` carries the CRC32 of the tensor file, so a damaged checkpoint is refused, not loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fieldpress.errors import ResumeError

FORMAT = "fieldpress-checkpoint/1"
STATE, META = "state.safetensors", "meta.json"


def checkpoint_dir(output: str | os.PathLike[str]) -> Path:
    """Where the checkpoints of a fit writing `output` live: `<output>.ckpt/`."""
    return Path(f"{os.fspath(output)}.ckpt")


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def save_checkpoint(directory: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                    meta: dict[str, Any]) -> None:
    """Write tensors + JSON meta atomically into `directory` (replacing any previous checkpoint)."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.tmp"):  # left by a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        save_file(cpu, str(tmp / STATE))
        _fsync(tmp / STATE)
        full = {"format": FORMAT, "state_crc32": _crc32(tmp / STATE), **meta}
        (tmp / META).write_text(json.dumps(full, indent=1, sort_keys=True), encoding="utf-8")
        _fsync(tmp / META)
        old = final.with_name(final.name + ".old")
        if final.exists():  # else `old` may be the only complete checkpoint: keep it until tmp is in place
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint folder to resume from (`directory`, or `directory.old` after a kill
    between the two renames), or None."""
    final = Path(directory)
    for cand in (final, final.with_name(final.name + ".old")):
        if (cand / META).is_file() and (cand / STATE).is_file():
            return cand
    return None


def load_checkpoint(directory: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint; ResumeError when it is missing, damaged or of another format."""
    found = find_checkpoint(directory)
    if found is None:
        raise ResumeError(f"cannot resume: no checkpoint at {directory}")
    try:
        meta = json.loads((found / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResumeError(f"cannot resume: damaged checkpoint {found / META}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ResumeError(f"cannot resume: {found} is not a {FORMAT} checkpoint")
    if _crc32(found / STATE) != meta.get("state_crc32"):
        raise ResumeError(f"cannot resume: {found / STATE} is damaged (CRC32 mismatch)")
    try:
        tensors = load_file(str(found / STATE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ResumeError(f"cannot resume: damaged checkpoint {found / STATE}: {exc}") from None
    return tensors, meta


# ----------------------------------------------------------------------------- optimizer state
def flatten_optimizer(optimizer: torch.optim.Optimizer,
                      prefix: str = "optim.") -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state_dict as flat tensors (`optim.<param>.<key>`) plus JSON for the rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                      prefix: str = "optim.") -> None:
    """Inverse of :func:`flatten_optimizer`; ResumeError when the parameter layout does not match."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            pid, key = name[len(prefix):].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ResumeError(f"cannot resume: optimizer state does not fit the model: {exc}") from None

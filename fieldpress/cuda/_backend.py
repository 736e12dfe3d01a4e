"""Kernel selection: Triton for CUDA tensors when importable, the PyTorch references otherwise.

`FIELDPRESS_KERNELS` chooses: `auto` (default: Triton on CUDA tensors), `ref` (always the
references), `triton` (always Triton, also for CPU tensors; only useful under
`TRITON_INTERPRET=1`, which is how the parity tests run the kernels without a GPU).
Triton is imported lazily, on the first call that needs it, so the package works without it.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

MODES = ("auto", "ref", "triton")


def kernel_mode() -> str:
    """The current `FIELDPRESS_KERNELS` mode (read at every call, so tests may change it)."""
    mode = os.environ.get("FIELDPRESS_KERNELS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"FIELDPRESS_KERNELS must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


@functools.cache
def triton_available() -> bool:
    """True when `import triton` works (cached: checked once per process)."""
    try:
        importlib.import_module("triton")
    except Exception:  # ImportError, or a broken install raising at import
        return False
    return True


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether an op on these tensors should run its Triton kernel rather than its reference."""
    mode = kernel_mode()
    if mode == "ref":
        return False
    if mode == "triton":
        if not triton_available():
            raise RuntimeError("FIELDPRESS_KERNELS=triton but triton is not importable")
        return True
    present = [t for t in tensors if t is not None]
    return bool(present) and all(t.is_cuda for t in present) and triton_available()


def kernels(name: str) -> ModuleType:
    """The Triton module `fieldpress.cuda._triton.<name>` (imports triton on first use)."""
    return importlib.import_module(f"fieldpress.cuda._triton.{name}")

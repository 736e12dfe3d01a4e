"""Compile check: every Triton kernel of fieldpress.cuda (every launch candidate) builds to PTX and cubin
for sm_90 without a GPU, fits its shared memory and does not spill registers.

It runs in a child process without TRITON_INTERPRET (the interpreter replaces the compiler and the
two cannot share a process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _ptxas_available() -> bool:
    triton = pytest.importorskip("triton")
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return bundled.is_file() or bool(os.environ.get("TRITON_PTXAS_PATH"))


def _compile(arch: int, full: bool, cache: Path) -> list[dict]:
    if not _ptxas_available():
        pytest.skip("triton has no bundled ptxas")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FIELDPRESS_KERNELS")}
    env["TRITON_CACHE_DIR"] = str(cache)  # a fresh cache: really compile, don't reuse earlier builds
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when unset; 1 is its default
    cmd = [sys.executable, "-m", "fieldpress.cuda._triton.compile_check", "--arch", str(arch)]
    if full:
        cmd.append("--full")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _check(rows: list[dict], full: bool, arch: int) -> None:
    from fieldpress.cuda._triton.compile_check import variants

    assert [r["kernel"] for r in rows] == [v.name for v in variants(full)]
    names = {r["kernel"].split("[")[0] for r in rows}
    assert names == {"fq_fwd", "fq_bwd", "vq_assign", "vq_sums", "hashgrid_fwd", "hashgrid_bwd"}
    assert all(r["ptx_chars"] > 0 and r["cubin_bytes"] > 0 for r in rows)
    # what decides speed on the GPU, checkable without one: ptxas' register and spill counts and
    # the shared memory each block claims. Every launch candidate must fit; on sm_90 (the H100 the
    # candidates were chosen for) none may spill. sm_80 is only compiled (one vq tile spills there).
    for r in rows:
        assert r["registers"] is not None, f"no ptxas -v report for {r['kernel']}"
        if arch == 90:
            assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        if r["shared_limit"] is not None:
            assert r["shared_bytes"] <= r["shared_limit"], r


def test_every_kernel_compiles_for_sm90(tmp_path):
    _check(_compile(90, full=False, cache=tmp_path), full=False, arch=90)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [80, 90])
def test_every_variant_compiles(arch, tmp_path):
    _check(_compile(arch, full=True, cache=tmp_path), full=True, arch=arch)

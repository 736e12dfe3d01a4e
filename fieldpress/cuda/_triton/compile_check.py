"""Ahead-of-time compile every Triton kernel for a GPU target without a GPU (CI's compile check).

`python -m fieldpress.cuda._triton.compile_check [--arch 90] [--full]` builds each kernel variant
down to PTX and cubin (Triton's bundled ptxas) and prints one JSON line per variant with the
resources that decide occupancy on the GPU: registers per thread and spill bytes (`ptxas -v`) and
shared memory (against the architecture's per-block limit). It must run in a process without
TRITON_INTERPRET (the interpreter replaces the compiler).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import fake_quant, hashgrid, vq
from .tuning import LaunchConfig


@dataclass(frozen=True)
class Variant:
    """One kernel specialisation: runtime argument types and constexpr values by name."""

    name: str
    kernel: Any
    types: dict[str, str]
    constexprs: dict[str, Any]
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def _fq(full: bool) -> Iterator[Variant]:
    for dtype in ("fp32", "fp16") if full else ("fp32",):
        base = {
            "x_ptr": f"*{dtype}",
            "s_ptr": "*fp32",
            "z_ptr": "*fp32",
            "n": "i64",
            "channels": "i32",
            "inner": "i32",
            "qmin": "fp32",
            "qmax": "fp32",
        }
        for rate, bins in ((False, 0), (True, 256), (True, 0)):
            types = {**base, "out_ptr": f"*{dtype}", "counts_ptr": "*i32"}
            yield Variant(
                f"fq_fwd[{dtype},rate={rate},bins={bins}]",
                fake_quant.fq_fwd_kernel,
                types,
                {"BLOCK": fake_quant.BLOCK, "RATE": rate, "HIST_BINS": bins},
            )
        for rate in (False, True):
            types = {
                **base,
                "g_ptr": f"*{dtype}",
                "pmf_ptr": "*fp32",
                "gbits_ptr": "*fp32",
                "out_ptr": f"*{dtype}",
            }
            yield Variant(
                f"fq_bwd[{dtype},rate={rate}]",
                fake_quant.fq_bwd_kernel,
                types,
                {"BLOCK": fake_quant.BLOCK, "RATE": rate},
            )


def _launch(config: LaunchConfig) -> tuple[dict[str, int], dict[str, int]]:
    """(constexpr block sizes, compile options) of a launch configuration."""
    options = {"num_warps": config.num_warps}
    if config.num_stages is not None:
        options["num_stages"] = config.num_stages
    return dict(config.blocks), options


def _vq(full: bool) -> Iterator[Variant]:
    types = {
        "x_ptr": "*fp32",
        "c_ptr": "*fp32",
        "cnorm_ptr": "*fp32",
        "idx_ptr": "*i64",
        "dist_ptr": "*fp32",
        "n": "i32",
        "k": "i32",
        "d": "i32",
    }
    for precision in ("tf32x3", "ieee"):
        for dp in (64, 128) if full else (64,):
            for config in vq.assign_configs(precision, dp):
                blocks, options = _launch(config)
                yield Variant(
                    f"vq_assign[{precision},D<={dp},{config.label()}]",
                    vq.vq_assign_kernel,
                    types,
                    {**blocks, "DP": dp, "PRECISION": precision},
                    options,
                )
    for has_w in (True, False):
        types = {
            "x_ptr": "*fp32",
            "idx_ptr": "*i64",
            "w_ptr": "*fp32",
            "sums_ptr": "*fp32",
            "counts_ptr": "*fp32",
            "n": "i32",
            "d": "i32",
        }
        yield Variant(
            f"vq_sums[weights={has_w}]", vq.vq_sums_kernel, types, {"BLOCK_N": 64, "DP": 64, "HAS_W": has_w}
        )


def _hg(full: bool) -> Iterator[Variant]:
    """Every dimension count at the default launch; all tuning candidates for 3-D linear (and all
    interpolations and output types with `full`)."""
    for d in (1, 2, 3):
        for interp in (0, 1, 2) if full else (1,):
            for out in ("fp32", "fp16") if (full or d == 3) else ("fp32",):
                every = d == 3 and (full or (interp == 1 and out == "fp32"))
                for config in hashgrid.CONFIGS if every else hashgrid.CONFIGS[:1]:
                    blocks, options = _launch(config)
                    tag = f"D={d},interp={interp},{out},{config.label()}"
                    types = {
                        "x_ptr": "*fp32",
                        "params_ptr": "*fp32",
                        "table_ptr": "*i64",
                        "scale_ptr": "*fp64",
                        "out_ptr": f"*{out}",
                        "n": "i32",
                        "n_levels": "i32",
                    }
                    yield Variant(
                        f"hashgrid_fwd[{tag}]",
                        hashgrid.hashgrid_fwd_kernel,
                        types,
                        {"D": d, "F": 2, "INTERPOLATION": interp, **blocks},
                        options,
                    )
                    types = {
                        "grad_ptr": f"*{out}",
                        "x_ptr": "*fp32",
                        "params_ptr": "*fp32",
                        "table_ptr": "*i64",
                        "scale_ptr": "*fp64",
                        "gparams_ptr": "*fp32",
                        "gx_ptr": "*fp32",
                        "n": "i32",
                        "n_levels": "i32",
                    }
                    yield Variant(
                        f"hashgrid_bwd[{tag}]",
                        hashgrid.hashgrid_bwd_kernel,
                        types,
                        {"D": d, "F": 2, "INTERPOLATION": interp, "NEED_X": interp != 0, **blocks},
                        options,
                    )


def variants(full: bool = False) -> list[Variant]:
    """Every kernel, in the variants the compile check builds (`full`: all dtypes and modes)."""
    return [*_fq(full), *_vq(full), *_hg(full)]


# Largest shared memory one block may claim (opt-in), by compute capability (CUDA guide, table 21).
MAX_SHARED_BYTES = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448}


def _ptxas_path(arch: int) -> str | None:
    """The ptxas Triton itself uses for `arch` (API differs across Triton 3.x), or None."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return str(get_ptxas(arch).path)
    except Exception:
        try:
            from triton import knobs

            return str(knobs.nvidia.ptxas.path)
        except Exception:
            return None


def ptxas_resources(ptx: str, arch: int) -> dict[str, int | None]:
    """Registers per thread and spill bytes of the kernel, from `ptxas -v` on its PTX."""
    found = re.search(r"^\.target\s+(sm_\w+)", ptx, re.MULTILINE)
    ptxas = _ptxas_path(arch)
    empty: dict[str, int | None] = {"registers": None, "spill_stores": None, "spill_loads": None}
    if ptxas is None or found is None:
        return empty
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        run = subprocess.run(
            [ptxas, "-v", f"--gpu-name={found.group(1)}", str(src), "-o", str(Path(tmp) / "kernel.cubin")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    regs = re.search(r"Used (\d+) registers", run.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
    if run.returncode != 0 or regs is None or spills is None:
        return empty
    return {
        "registers": int(regs.group(1)),
        "spill_stores": int(spills.group(1)),
        "spill_loads": int(spills.group(2)),
    }


def compile_variant(v: Variant, arch: int) -> dict[str, Any]:
    """Compile one variant for sm_<arch>: sizes of its PTX and cubin, registers, spills, shared memory."""
    signature = {}
    for name in v.kernel.arg_names:
        signature[name] = "constexpr" if name in v.constexprs else v.types[name]
    start = time.perf_counter()
    compiled = triton.compile(
        ASTSource(fn=v.kernel, signature=signature, constexprs=dict(v.constexprs)),
        target=GPUTarget("cuda", arch, 32),
        options=dict(v.options),
    )
    ptx = compiled.asm["ptx"]
    cubin = compiled.asm["cubin"]
    if f".target sm_{arch}" not in ptx or not cubin:
        raise RuntimeError(f"{v.name}: no sm_{arch} PTX/cubin produced")
    seconds = round(time.perf_counter() - start, 3)
    shared = int(getattr(compiled.metadata, "shared", 0) or 0)
    return {
        "kernel": v.name,
        "ptx_chars": len(ptx),
        "cubin_bytes": len(cubin),
        "shared_bytes": shared,
        "shared_limit": MAX_SHARED_BYTES.get(arch),
        "warps": v.options.get("num_warps", 4),
        **ptxas_resources(ptx, arch),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80 or 90")
    parser.add_argument("--full", action="store_true", help="every dtype and interpolation variant")
    args = parser.parse_args(argv)
    results = [compile_variant(v, args.arch) for v in variants(args.full)]
    for row in results:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ahead-of-time compile every Triton kernel for a GPU target without a GPU (CI's compile check).

`python -m fieldpress.cuda._triton.compile_check [--arch 90] [--full]` builds each kernel variant
down to PTX and cubin (Triton's bundled ptxas) and prints one line per variant. It must run in a
process without TRITON_INTERPRET (the interpreter replaces the compiler).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import fake_quant, hashgrid, vq


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


def _vq(full: bool) -> Iterator[Variant]:
    for precision in ("tf32x3", "ieee") if full else ("tf32x3",):
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
        yield Variant(
            f"vq_assign[{precision},D<=64]",
            vq.vq_assign_kernel,
            types,
            {"BLOCK_N": 128, "BLOCK_K": 64, "DP": 64, "PRECISION": precision},
            {"num_warps": vq.ASSIGN_WARPS},
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
    dims = (1, 2, 3)
    interps = (0, 1, 2) if full else (1,)
    for d in dims:
        for interp in interps:
            for out in ("fp32", "fp16") if (full or d == 3) else ("fp32",):
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
                    f"hashgrid_fwd[D={d},interp={interp},{out}]",
                    hashgrid.hashgrid_fwd_kernel,
                    types,
                    {"D": d, "F": 2, "INTERPOLATION": interp, "BLOCK": 128},
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
                    f"hashgrid_bwd[D={d},interp={interp},{out}]",
                    hashgrid.hashgrid_bwd_kernel,
                    types,
                    {"D": d, "F": 2, "INTERPOLATION": interp, "BLOCK": 128, "NEED_X": interp != 0},
                )


def variants(full: bool = False) -> list[Variant]:
    """Every kernel, in the variants the compile check builds (`full`: all dtypes and modes)."""
    return [*_fq(full), *_vq(full), *_hg(full)]


def compile_variant(v: Variant, arch: int) -> dict[str, Any]:
    """Compile one variant for sm_<arch>; returns sizes of its PTX and cubin."""
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
    return {
        "kernel": v.name,
        "ptx_chars": len(ptx),
        "cubin_bytes": len(cubin),
        "seconds": round(time.perf_counter() - start, 3),
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

"""fieldpress.cuda kernels against their PyTorch references (and peers) at real sizes: time and peak memory.

Cases (issue 8): hash grid forward and forward+backward at 2^18..2^20 points x 16 levels with a
2^19-entry table (and tinycudann when importable); VQ assignment of 1M x 48 vectors against 8192
codewords (and a chunked `cdist + argmin` baseline, since the unchunked one needs ~32 GiB) plus the
k-means centroid update; fake quantization of 10M values (per channel, 8 bit) with and without the
rate. On a GPU every implementation runs (timed with CUDA events, peak memory from the allocator);
on the CPU only the references and baselines run, and `--small` shrinks the sizes so the script is
proven end to end. Writes bench/results/kernels_<device>.json and a PNG plot beside it.

    python bench/kernels.py            # GPU: the issue's sizes (needs only torch, triton, numpy;
                                       # `pip install --no-build-isolation --no-deps -e .` first)
    python bench/kernels.py --small    # CPU: references only, reduced sizes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Impl:
    """One implementation of a case: `run()` does the timed work (forward, or forward + backward)."""

    case: str
    impl: str
    run: Callable[[], Any]
    params: dict[str, Any]


# ------------------------------------------------------------------ timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, repeat: int, warmup: int) -> dict[str, Any]:
    """Median milliseconds over `repeat` runs after `warmup`, and the peak extra memory of one run."""
    for _ in range(warmup):
        fn()
    _sync(device)
    peak = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": round(statistics.median(times), 4), "ms_min": round(min(times), 4), "peak_bytes": peak}


# ------------------------------------------------------------------ cases


def hashgrid_cases(device: torch.device, small: bool, gpu: bool) -> Iterator[Impl]:
    from fieldpress.cuda import hashgrid, hashgrid_ref
    from fieldpress.cuda.hashgrid_ref import HashGridSpec, init_hashgrid_params

    levels, log2_size = (8, 14) if small else (16, 19)
    cfg = {
        "otype": "HashGrid",
        "n_levels": levels,
        "n_features_per_level": 2,
        "log2_hashmap_size": log2_size,
        "base_resolution": 16,
        "per_level_scale": 1.5,
    }
    spec = HashGridSpec.from_config(cfg, 3)
    gen = torch.Generator().manual_seed(0)
    params = init_hashgrid_params(spec, gen).to(device).requires_grad_()
    sizes = (12, 14) if small else (18, 19, 20)
    tcnn = _tinycudann(cfg) if gpu and device.type == "cuda" else None
    for log2_n in sizes:
        x = torch.rand(2**log2_n, 3, generator=gen).to(device)
        grad = torch.randn(x.shape[0], spec.n_output_dims, generator=gen).to(device)
        meta = {
            "points": x.shape[0],
            "levels": levels,
            "log2_hashmap_size": log2_size,
            "features": 2,
            "dims": 3,
        }
        impls: list[tuple[str, Callable[..., torch.Tensor]]] = [("reference", hashgrid_ref)]
        if gpu:
            impls.insert(0, ("triton", hashgrid))
        for name, op in impls:
            yield Impl(
                f"hashgrid 2^{log2_n} fwd", name, _no_grad(lambda op=op, x=x: op(x, params, spec)), meta
            )
            yield Impl(
                f"hashgrid 2^{log2_n} fwd+bwd",
                name,
                lambda op=op, x=x, g=grad: _backward(op(x, params, spec), g, params),
                meta,
            )
        if tcnn is not None:
            enc = tcnn
            yield Impl(f"hashgrid 2^{log2_n} fwd", "tinycudann", _no_grad(lambda enc=enc, x=x: enc(x)), meta)
            yield Impl(
                f"hashgrid 2^{log2_n} fwd+bwd",
                "tinycudann",
                lambda enc=enc, x=x, g=grad: _backward(enc(x).float(), g, enc.params),
                meta,
            )


def _tinycudann(cfg: dict[str, Any]) -> Any:
    try:
        import tinycudann as tcnn  # needs a CUDA GPU at import
    except Exception:
        return None
    return tcnn.Encoding(3, cfg, dtype=torch.float32)


def vq_cases(device: torch.device, small: bool, gpu: bool) -> Iterator[Impl]:
    from fieldpress.cuda import vq_assign, vq_assign_ref, vq_update, vq_update_ref

    n, k, d = (2**14, 256, 48) if small else (2**20, 8192, 48)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=gen).to(device)
    codebook = torch.randn(k, d, generator=gen).to(device)
    index = torch.randint(0, k, (n,), generator=gen).to(device)
    weights = torch.rand(n, generator=gen).to(device)
    meta = {"n": n, "k": k, "d": d}
    case = f"vq assign {_count(n)}x{k}x{d}"
    if gpu:
        yield Impl(case, "triton", lambda: vq_assign(x, codebook), meta)
    yield Impl(case, "cdist+argmin (chunked)", lambda: cdist_argmin(x, codebook), meta)
    yield Impl(case, "reference", lambda: vq_assign_ref(x, codebook), meta)
    case = f"vq update {_count(n)}x{k}x{d}"
    if gpu:
        yield Impl(case, "triton", lambda: vq_update(x, index, k, weights), meta)
    yield Impl(case, "reference", lambda: vq_update_ref(x, index, k, weights), meta)


def cdist_argmin(x: torch.Tensor, codebook: torch.Tensor, budget_bytes: int = 1 << 30) -> torch.Tensor:
    """The baseline: `torch.cdist(...).argmin(1)` over row chunks whose distance block fits `budget_bytes`."""
    rows = max(1, budget_bytes // (4 * codebook.shape[0]))
    return torch.cat([torch.cdist(x[i : i + rows], codebook).argmin(1) for i in range(0, x.shape[0], rows)])


def fake_quant_cases(device: torch.device, small: bool, gpu: bool) -> Iterator[Impl]:
    from fieldpress.cuda import (
        fake_quantize,
        fake_quantize_ref,
        fake_quantize_with_rate,
        fake_quantize_with_rate_ref,
    )

    rows, cols = (256, 1024) if small else (1000, 10000)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(rows, cols, generator=gen).to(device).requires_grad_()
    grad = torch.randn(rows, cols, generator=gen).to(device)
    lo, hi = x.detach().amin(1), x.detach().amax(1)
    scale = torch.clamp((hi - lo) / 255, min=1e-12)
    zp = torch.round(-lo / scale)
    meta = {"values": rows * cols, "channels": rows, "bits": 8}
    impls = [("reference", fake_quantize_ref, fake_quantize_with_rate_ref)]
    if gpu:
        impls.insert(0, ("triton", fake_quantize, fake_quantize_with_rate))
    values = _count(rows * cols)
    for name, plain, rate in impls:
        yield Impl(
            f"fake-quant {values} fwd", name, _no_grad(lambda p=plain: p(x, scale, zp, 0, 255, 0)), meta
        )
        yield Impl(
            f"fake-quant {values} fwd+bwd",
            name,
            lambda p=plain: _backward(p(x, scale, zp, 0, 255, 0), grad, x),
            meta,
        )
        yield Impl(
            f"fake-quant+rate {values} fwd+bwd",
            name,
            lambda r=rate: _backward_rate(r(x, scale, zp, 0, 255, 0), grad, x),
            meta,
        )


def _count(n: int) -> str:
    """2^k for powers of two, else millions: the labels of the plot."""
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else f"{n / 1e6:g}M"


def _no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.no_grad():
            return fn()

    return run


def _backward(y: torch.Tensor, grad: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(y, wrt, grad.to(y.dtype))[0]


def _backward_rate(
    out: tuple[torch.Tensor, torch.Tensor], grad: torch.Tensor, wrt: torch.Tensor
) -> torch.Tensor:
    y, bits = out
    return torch.autograd.grad(((y * grad).sum(), bits), wrt, (None, torch.tensor(1e-3, device=bits.device)))[
        0
    ]


CASES: dict[str, Callable[[torch.device, bool, bool], Iterator[Impl]]] = {
    "hashgrid": hashgrid_cases,
    "vq": vq_cases,
    "fake_quant": fake_quant_cases,
}


# ------------------------------------------------------------------ parity at real sizes (GPU)


def parity_checks(device: torch.device, small: bool) -> dict[str, Any]:
    """Kernel-vs-reference agreement at the benchmark's sizes (only meaningful where Triton runs)."""
    from fieldpress.cuda import fake_quantize, fake_quantize_ref, hashgrid, hashgrid_ref, vq_assign
    from fieldpress.cuda.hashgrid_ref import HashGridSpec, init_hashgrid_params

    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(3)
    spec = HashGridSpec.from_config({"n_levels": 16, "log2_hashmap_size": 19, "per_level_scale": 1.5}, 3)
    params = (init_hashgrid_params(spec, gen) * 1e3).to(device)
    x = torch.rand(2**12 if small else 2**18, 3, generator=gen).to(device)
    out["hashgrid_max_abs_diff"] = float(
        (hashgrid(x, params, spec) - hashgrid_ref(x, params, spec)).abs().max()
    )
    v = torch.randn(2**12 if small else 2**20, 48, generator=gen).to(device)
    cb = torch.randn(256 if small else 8192, 48, generator=gen).to(device)
    idx, _ = vq_assign(v, cb)
    out["vq_index_agreement_vs_cdist"] = float((idx == cdist_argmin(v, cb)).double().mean())
    w = torch.randn(*((64, 256) if small else (1000, 1000)), generator=gen).to(device)
    scale = (w.amax(1) - w.amin(1)) / 255
    zp = torch.round(-w.amin(1) / scale)
    out["fake_quant_bit_exact"] = bool(
        torch.equal(fake_quantize(w, scale, zp, 0, 255, 0), fake_quantize_ref(w, scale, zp, 0, 255, 0))
    )
    return out


# ------------------------------------------------------------------ output


def device_tag(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def machine(device: torch.device) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": "cpu" if device.type != "cuda" else torch.cuda.get_device_name(device),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def speedups(rows: list[dict[str, Any]]) -> None:
    """Add `speedup_vs_<impl>` to each triton row (time of the other / time of triton)."""
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["impl"]] = row
    for impls in by_case.values():
        tri = impls.get("triton")
        if tri is None:
            continue
        for name, other in impls.items():
            if name != "triton":
                key = "speedup_vs_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
                tri[key] = round(other["ms"] / tri["ms"], 2)


def bars(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 8's H100 bars, judged from this run's rows (None where a row is missing, e.g. on the CPU)."""

    def row(case: str, impl: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["case"] == case and r["impl"] == impl), None)

    out: dict[str, Any] = {}
    tri, ref = row("hashgrid 2^18 fwd+bwd", "triton"), row("hashgrid 2^18 fwd+bwd", "reference")
    speed = None if tri is None or ref is None else round(ref["ms"] / tri["ms"], 2)
    met = None if speed is None else speed >= 20
    out["hashgrid_2^18x16_fwd+bwd"] = {"speedup": speed, "needed": 20, "met": met}
    tri = row("vq assign 2^20x8192x48", "triton")
    base = row("vq assign 2^20x8192x48", "cdist+argmin (chunked)")
    if tri is None or base is None:
        out["vq_assign_1Mx8192x48"] = {"speedup": None, "needed": 3, "met": None}
    else:
        speed = round(base["ms"] / tri["ms"], 2)
        less_memory = tri["peak_bytes"] is not None and tri["peak_bytes"] < base["peak_bytes"]
        out["vq_assign_1Mx8192x48"] = {
            "speedup": speed,
            "needed": 3,
            "peak_bytes": tri["peak_bytes"],
            "baseline_peak_bytes": base["peak_bytes"],
            "met": speed >= 3 and less_memory,
        }
    return out


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Grouped horizontal bars: milliseconds per case and implementation (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    height = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(cases) * max(1, len(impls) / 2) + 1.5))
    for j, impl in enumerate(impls):
        ys, ms = [], []
        for i, case in enumerate(cases):
            hit = [r for r in rows if r["case"] == case and r["impl"] == impl]
            if hit:
                ys.append(i + j * height)
                ms.append(hit[0]["ms"])
        ax.barh(ys, ms, height=height, label=impl)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(cases))], cases)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (median, log scale)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    from fieldpress.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--small", action="store_true", help="reduced sizes (the CPU smoke run)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--interpret",
        action="store_true",
        help="also run the Triton kernels on the CPU (needs TRITON_INTERPRET=1 and --small): a dry run "
        "of the GPU path, timings meaningless",
    )
    args = parser.parse_args(argv)

    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    gpu = device.type == "cuda"
    if args.interpret:
        if gpu or not args.small or os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--interpret runs on the CPU with --small under TRITON_INTERPRET=1")
        os.environ["FIELDPRESS_KERNELS"] = "triton"
        args.out = args.out / "interpret"
    kernels = gpu or args.interpret
    if not gpu and not args.small:
        print(
            "no GPU: the references only run at full size very slowly; use --small on the CPU",
            file=sys.stderr,
        )
    repeat = args.repeat or (10 if gpu else 3)
    torch.manual_seed(0)
    tag = device_tag(device) + ("_small" if args.small and gpu else "")
    out = args.out / f"kernels_{tag}.json"
    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "machine": machine(device),
        "small": args.small,
        "repeat": repeat,
        "kernels": "triton"
        if gpu
        else ("triton interpreter" if args.interpret else "references only (no GPU)"),
        "complete": False,
        "results": rows,
    }
    from fieldpress.io import atomic_write_text

    def save() -> None:  # after every row, so an interrupted GPU session keeps what it measured
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")

    for key in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if key not in CASES:
            parser.error(f"unknown case {key!r}")
        for impl in CASES[key](device, args.small, kernels):
            result = measure(impl.run, device, repeat, args.warmup)
            row = {"case": impl.case, "impl": impl.impl, **result, **impl.params}
            rows.append(row)
            speedups(rows)
            save()
            mem = "" if result["peak_bytes"] is None else f"  peak {result['peak_bytes'] / 2**20:9.1f} MiB"
            print(f"{impl.case:>34}  {impl.impl:>24}  {result['ms']:10.3f} ms{mem}", flush=True)
    if kernels:
        from fieldpress.cuda._triton.tuning import tuning_report

        report["launch_configs"] = tuning_report()
        report["parity"] = parity_checks(device, args.small)
    report["bars"] = bars(rows)
    report["complete"] = True
    save()
    print(f"wrote {out}")
    for name, bar in report["bars"].items():
        print(f"bar {name}: {bar}")
    if not args.no_plot and importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no plot (the JSON has every number)")
    elif not args.no_plot:
        png = out.with_suffix(".png")
        plot(rows, f"fieldpress.cuda kernels on {report['machine']['device']}", png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

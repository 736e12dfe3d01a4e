"""Scene codecs side by side: fieldpress (LightGaussian: each preset and every --quality level, an RD
curve of real files) against SPZ, PlayCanvas compressed PLY (our writers), the plain INRIA PLY and
PlayCanvas's splat-transform (SOG, SPZ, and decimation by merging + SOG at several rates), on the same
scenes and the same views, all scored by our renderer.

splat-transform (npm @playcanvas/splat-transform, MIT) is installed into a local npm prefix
(--npm-prefix, default ~/.cache/fieldpress/npm) when `node` is present, and run with `-g cpu`;
without node its rows are skipped with a message. For each scene: file bytes, bytes per input
Gaussian, render PSNR / SSIM of the decoded scene against the input's own renders on the evaluation
views, encode and decode seconds; then the issue-18 bars checked on the rows. `--scale N` adds a
synthetic N-Gaussian SH-3 scene through `fast` and `balanced` (no rendering) with time and peak
memory, each run in its own process. Writes bench/results/<name>.json and one RD plot per scene.

    python bench/scene_codecs.py ../shared/data/gaussians/guitar.compressed.ply ... [--views 16 --width 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
PSNR_CAP = 70.0  # lossless rows (inf) are drawn at the cap
PEERS = (("ply", ".ply"), ("compressed.ply", ".compressed.ply"), ("spz", ".spz"))
SPLAT_TRANSFORM = "@playcanvas/splat-transform@3.7.0"
ON_ROW: list[Any] = []  # callables run after each measured row (main saves the JSON there)


def versions() -> dict[str, str]:
    import fieldpress

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "fieldpress": getattr(fieldpress, "__version__", "?")}
    try:
        import constriction

        out["constriction"] = getattr(constriction, "__version__", "?")
    except ImportError:
        pass
    return out


def score_row(method: str, path: Path, n_in: int, enc_s: float, dec_s: float, reference: np.ndarray,
         decoded: Any, cams: list[Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from fieldpress.scenes.lightgaussian.pipeline import evaluate

    size = path.stat().st_size
    row = {"method": method, "bytes": size, "bytes_per_gaussian": round(size / n_in, 3),
           "gaussians_out": decoded.n, "sh_degree_out": decoded.sh_degree,
           "encode_s": round(enc_s, 3), "decode_s": round(dec_s, 3)}
    row.update(evaluate(reference, decoded, cams))
    row.update(extra or {})
    print(f"  {method:>22}: {size:>10,} B  {row['bytes_per_gaussian']:7.2f} B/G  "
          f"PSNR {row['render_psnr']:6.2f}  SSIM {row['render_ssim']:.4f}  "
          f"enc {enc_s:6.2f}s dec {dec_s:6.2f}s", flush=True)
    return row


def _add(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Append a measured row and run the ON_ROW hooks (the JSON is saved row by row)."""
    rows.append(row)
    for hook in ON_ROW:
        hook()


def splat_transform(prefix: Path) -> Path | None:
    """The splat-transform executable, installed into `prefix` with npm when node is present (else None)."""
    exe = prefix / "node_modules" / ".bin" / "splat-transform"
    if exe.exists():
        return exe
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("splat-transform: skipped (no node/npm; Debian: apt install nodejs npm)", flush=True)
        return None
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"splat-transform: installing {SPLAT_TRANSFORM} into {prefix}", flush=True)
    done = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                           SPLAT_TRANSFORM], capture_output=True, text=True)
    if done.returncode or not exe.exists():
        print(f"splat-transform: skipped (npm install failed: {done.stderr.strip()[-200:]})", flush=True)
        return None
    return exe


def _st(exe: Path, *args: str) -> float:
    """Run splat-transform (CPU device, overwrite, quiet); seconds taken."""
    t = time.perf_counter()
    subprocess.run([str(exe), "-q", "-w", "-g", "cpu", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def load_peer_cache(path: Path | None) -> dict[str, dict[str, Any]]:
    """Peer rows measured earlier, keyed by `peer_key` (empty without a file)."""
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text())["rows"]


def peer_key(scene_path: Path, views: int, width: int, method: str) -> str:
    """What a cached peer row depends on: the input file (name, bytes), the views, the peer version."""
    return f"{scene_path.name}|{scene_path.stat().st_size}|{views}x{width}|{SPLAT_TRANSFORM}|{method}"


def peer_jobs(decimate: list[int]) -> list[tuple[str, list[str], str]]:
    """(method, splat-transform actions, output suffix) of every peer row."""
    jobs = [("st-sog", [], ".sog"), ("st-spz", [], ".spz")]
    return jobs + [(f"st-decimate{pct}%-sog", ["-d", f"{pct}%"], ".sog") for pct in decimate]


def peer_rows(exe: Path, src: Path, n_in: int, reference: np.ndarray, cams: list[Any], work: Path,
              decimate: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """splat-transform's SOG and SPZ, and decimation (pairwise merging) to each rate then SOG (appended
    to `rows` as they come)."""
    from fieldpress.scenes.formats import load_scene

    for method, actions, suffix in peer_jobs(decimate):
        out = work / f"{src.stem}.{method.replace('%', 'pct')}{suffix}"
        try:
            if actions:  # decimation must end in a PLY: decimate, then convert that PLY to SOG
                mid = out.with_suffix(".decimated.ply")
                enc = _st(exe, str(src), *actions, str(mid)) + _st(exe, str(mid), str(out))
            else:
                enc = _st(exe, str(src), str(out))
            t = time.perf_counter()
            if suffix == ".sog":  # our reader has no SOG: splat-transform decodes it to PLY
                back = out.with_suffix(".decoded.ply")
                _st(exe, str(out), str(back))
                decoded = load_scene(back)
            else:
                decoded = load_scene(out)  # no axes extension: read in the PLY frame (our default)
            dec = time.perf_counter() - t
        except subprocess.CalledProcessError as exc:
            rows.append({"method": method, "skipped": f"splat-transform failed: {exc.stderr.strip()[-200:]}"})
            continue
        _add(rows, score_row(method, out, n_in, enc, dec, reference, decoded, cams,
                         {"spz_axes": decoded.meta.get("spz", {}).get("axes")}))
    return rows


def our_rows(scene: Any, path: Path, args: argparse.Namespace, reference: np.ndarray, cams: list[Any],
             work: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fieldpress: each preset, then each --quality level (the RD curve), appended to `rows`."""
    from fieldpress.scenes.lightgaussian.codec import read_fpg
    from fieldpress.scenes.lightgaussian.pipeline import CompressOptions, compress, significance_cameras
    from fieldpress.scenes.lightgaussian.significance import significance

    settings = [(f"fieldpress-{p}", {"preset": p}) for p in args.presets]
    settings += [(f"fieldpress-q{q}", {"quality": q}) for q in args.qualities]
    settings += [(f"reduce-{how}-q{q}", {"quality": q, "reduce": how})  # merge vs prune at equal count
                 for q in args.reduce_levels for how in ("prune", "merge")]
    rendered: list[np.ndarray] = []  # rendered significance: the same views for every setting, so once
    for method, choice in settings:
        steps = args.finetune_steps if choice.get("preset") == "max" else None
        options = CompressOptions(**choice, seed=0, significance_views=args.sig_views,
                                  significance_width=args.sig_width, train_width=args.train_width,
                                  finetune_steps=steps, evaluate=False)  # evaluated below, like the peers
        out = work / f"{path.stem}.{method}.fpg"
        needs = options.resolved().render
        sig_cpu = None
        if needs and not rendered:
            c = time.process_time()
            rendered.append(significance(scene, significance_cameras(scene, None, options)))
            sig_cpu = round(time.process_time() - c, 2)
        t, c = time.perf_counter(), time.process_time()
        result = compress(scene, options, source={"name": path.name, "bytes": path.stat().st_size},
                          significance=rendered[0] if needs else None)
        result.write(out)
        enc, enc_cpu = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        decoded = read_fpg(out)
        dec, dec_cpu = time.perf_counter() - t, time.process_time() - c
        extra = {"prune": result.metrics["prune"], "stage_seconds": result.metrics["stage_seconds"],
                 "encode_cpu_s": round(enc_cpu, 3), "decode_cpu_s": round(dec_cpu, 3),
                 # rendered significance is computed once per scene (its CPU seconds on the first row)
                 # and shared, so encode_s of rendering levels excludes it
                 "significance_shared": needs, "significance_cpu_s": sig_cpu,
                 "reduce": result.metrics.get("reduce"),
                 "options": {k: v for k, v in dataclasses.asdict(options).items() if v is not None}}
        _add(rows, score_row(method, out, scene.n, enc, dec, reference, decoded, cams, extra))
    return rows


def bench_scene(path: Path, args: argparse.Namespace, work: Path, exe: Path | None,
                results: list[dict[str, Any]]) -> dict[str, Any]:
    """All rows of one scene; its entry is in `results` from the start and fills row by row."""
    from fieldpress.scenes.formats import formats, load_scene, save_scene
    from fieldpress.scenes.lightgaussian.pipeline import eval_cameras, render_views

    scene = load_scene(path)
    print(f"{path.name}: {scene.n:,} Gaussians, SH degree {scene.sh_degree}", flush=True)
    cams = eval_cameras(scene, None, args.views, args.width)
    t = time.perf_counter()
    reference = render_views(scene, cams)
    ref_s = time.perf_counter() - t
    rows: list[dict[str, Any]] = []
    entry = {"scene": path.name, "input_bytes": path.stat().st_size, "gaussians": scene.n,
             "sh_degree": scene.sh_degree, "reference_render_s": round(ref_s, 3), "rows": rows}
    results.append(entry)
    for name, suffix in PEERS if not args.no_formats else ():
        fmt = next((f for f in formats().values() if f.write and suffix in f.suffixes), None)
        if fmt is None:
            rows.append({"method": name, "skipped": "no writer registered"})
            continue
        out = work / f"{path.stem}{suffix}"
        t = time.perf_counter()
        save_scene(scene, out, fmt.name)
        enc = time.perf_counter() - t
        t = time.perf_counter()
        decoded = load_scene(out)
        _add(rows, score_row(name, out, scene.n, enc, time.perf_counter() - t, reference, decoded, cams))
    cached = [args.peer_cache_rows.get(peer_key(path, args.views, args.width, m))
              for m, _, _ in peer_jobs(args.decimate)]
    if not args.no_peers and all(cached):  # same input, views and peer version measured before: reuse
        print(f"  peers: {len(cached)} rows from {args.peer_cache}", flush=True)
        for row in cached:
            _add(rows, {**row, "cached": True})
    elif exe is not None:
        ply = work / f"{path.stem}.input.ply"  # splat-transform reads the same scene we do
        save_scene(scene, ply, "ply")
        start = len(rows)
        peer_rows(exe, ply, scene.n, reference, cams, work, args.decimate, rows)
        for row in rows[start:]:
            if "bytes" in row:
                args.peer_cache_rows[peer_key(path, args.views, args.width, row["method"])] = row
        if args.peer_cache is not None:
            args.peer_cache.write_text(json.dumps({"rows": args.peer_cache_rows}, indent=1))
    our_rows(scene, path, args, reference, cams, work, rows)
    entry["bars"] = bars(rows, scene.sh_degree)
    return entry


def _curve(rows: list[dict[str, Any]], prefix: str) -> list[tuple[float, float]]:
    """(B/G, PSNR) of the rows whose method starts with `prefix`, by size."""
    return sorted((r["bytes_per_gaussian"], min(float(r["render_psnr"]), PSNR_CAP)) for r in rows
                  if r["method"].startswith(prefix) and "bytes" in r)


def _at(curve: list[tuple[float, float]], rate: float) -> float | None:
    """Best PSNR our curve reaches at or below `rate` B/G (None when it has no point that small)."""
    under = [q for b, q in curve if b <= rate * 1.0001]
    return max(under) if under else None


def bars(rows: list[dict[str, Any]], sh_degree: int) -> dict[str, Any]:
    """Issue 18's bars on these rows: a point <= 6 B/G (12 for SH>0) with >= 40 dB; at or above SOG."""
    ours = _curve(rows, "fieldpress-")
    limit = 6.0 if sh_degree == 0 else 12.0
    best = max((q for b, q in ours if b <= limit), default=None)
    sog = _curve(rows, "st-sog") + _curve(rows, "st-decimate")
    versus = [{"sog_bpg": b, "sog_psnr": q, "ours_best_at_or_below": _at(ours, b)} for b, q in sog]
    return {"limit_bpg": limit, "best_psnr_within_limit": best,
            "point_within_limit_at_40db": best is not None and best >= 40.0,
            "versus_sog": versus,
            "at_or_above_sog_everywhere": bool(versus) and all(
                v["ours_best_at_or_below"] is not None and v["ours_best_at_or_below"] >= v["sog_psnr"]
                for v in versus)}


SCALE_SNIPPET = """
import json, resource, sys, time, torch
from fieldpress.scenes.synthetic import synthetic_scene
from fieldpress.scenes.lightgaussian.pipeline import CompressOptions, compress, decode_bytes
n, preset, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
t = time.perf_counter(); scene = synthetic_scene(n, sh_degree=3, seed=0); make = time.perf_counter() - t
t, c = time.perf_counter(), time.process_time()
r = compress(scene, CompressOptions(preset=preset, evaluate=False))
enc, enc_cpu = time.perf_counter() - t, time.process_time() - c
rss_enc = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t, c = time.perf_counter(), time.process_time(); d = decode_bytes(r.data)
dec, dec_cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"preset": preset, "gaussians": n, "bytes": len(r.data), "bytes_per_gaussian":
      round(len(r.data) / n, 3), "gaussians_out": d.n, "torch_threads": threads, "make_s": round(make, 2),
      "compress_s": round(enc, 2), "compress_cpu_s": round(enc_cpu, 2), "decompress_s": round(dec, 2),
      "decompress_cpu_s": round(dec_cpu, 2), "peak_rss_mb_after_compress": round(rss_enc),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
      "stage_seconds": r.metrics["stage_seconds"]}))
"""


def scale_rows(n: int, presets: list[str], threads: int = 1) -> list[dict[str, Any]]:
    """A synthetic n-Gaussian SH-3 scene through each preset (no rendering of the result), one process
    each, torch on `threads` threads; wall and process CPU seconds (CPU time is the figure to trust on
    a loaded machine: with one thread it estimates the wall time on an idle one)."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    rows = []
    for preset in presets:
        done = subprocess.run([sys.executable, "-c", SCALE_SNIPPET, str(n), preset, str(threads)],
                              capture_output=True, text=True, cwd=root, env=env)
        if done.returncode:
            rows.append({"preset": preset, "gaussians": n, "failed": done.stderr.strip()[-300:]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  scale {n:,} {preset}: {rows[-1]}", flush=True)
    return rows


# (method prefix, legend label, matplotlib style) of the lines the scene plots draw through rows
CURVES = (("fieldpress-q", "fieldpress --quality", "C0-"), (("st-sog", "st-decimate"),
          "splat-transform SOG (decimated)", "C3--"))


def plot(results: list[dict[str, Any]], out: Path, curves: Any = CURVES, ours: str = "fieldpress",
         short: tuple[str, str] = ("fieldpress-", "fp-"), legend: str = "lower right") -> None:
    """One RD panel per scene: every row's point (circles for methods starting with `ours`, squares for
    the rest) and a line through the rows of each `curves` prefix (also used by bench/neuralgs.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, res in zip(axes[0], results):
        for prefixes, label, style in curves:
            prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
            curve = sorted(p for prefix in prefixes for p in _curve(res["rows"], prefix))
            if curve:
                ax.plot(*zip(*curve), style, label=label, alpha=0.7)
        for row in res["rows"]:
            if "bytes" not in row:
                continue
            psnr = min(float(row["render_psnr"]), PSNR_CAP)
            marker = "o" if row["method"].startswith(ours) else "s"
            ax.scatter(row["bytes_per_gaussian"], psnr, marker=marker, s=14)
            ax.annotate(row["method"].replace(*short), (row["bytes_per_gaussian"], psnr),
                        fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("bytes per input Gaussian (log)")
        ax.set_ylabel(f"render PSNR vs input, dB (capped at {PSNR_CAP:.0f})")
        ax.set_title(f"{res['scene']} ({res['gaussians']:,} G, SH{res['sh_degree']})", fontsize=9)
        ax.grid(True, alpha=0.3)
        if any(line.get_label()[:1] != "_" for line in ax.get_lines()):
            ax.legend(fontsize=7, loc=legend)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenes", nargs="*", type=Path)
    p.add_argument("--views", type=int, default=16, help="orbit evaluation views (16)")
    p.add_argument("--width", type=int, default=512, help="evaluation width (512)")
    p.add_argument("--presets", nargs="*", default=["fast", "balanced", "max"])
    p.add_argument("--qualities", nargs="*", type=int, default=list(range(1, 10)), help="--quality levels")
    p.add_argument("--decimate", nargs="*", type=int, default=[70, 50, 34, 20],
                   help="splat-transform decimation rates (percent kept) before SOG")
    p.add_argument("--reduce-levels", nargs="*", type=int, default=[3],
                   help="quality levels also run with --reduce prune and --reduce merge (equal count)")
    p.add_argument("--no-peers", action="store_true", help="skip splat-transform")
    p.add_argument("--peer-cache", type=Path, default=RESULTS / "scene_peers_cache.json",
                   help="peer rows measured before (same input file, views, peer version) are reused "
                        "from this JSON, and new ones added to it")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds ~ idle wall time)")
    p.add_argument("--no-formats", action="store_true", help="skip our PLY / compressed PLY / SPZ writers")
    p.add_argument("--npm-prefix", type=Path, default=Path.home() / ".cache" / "fieldpress" / "npm")
    p.add_argument("--scale", type=int, default=0, help="also a synthetic SH-3 scene of this many Gaussians")
    p.add_argument("--scale-presets", nargs="*", default=["fast", "balanced"])
    p.add_argument("--scale-threads", type=int, default=1, help="torch threads of the scale runs (1)")
    p.add_argument("--sig-views", type=int, default=16)
    p.add_argument("--sig-width", type=int, default=256)
    p.add_argument("--train-width", type=int, default=256)
    p.add_argument("--finetune-steps", type=int, default=None, help="max preset steps (default: preset's)")
    p.add_argument("--name", default="scene_codecs")
    p.add_argument("--replot", type=Path, help="only redraw the plot of an earlier JSON result")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    args.peer_cache_rows = load_peer_cache(args.peer_cache)
    if args.replot:
        plot(json.loads(args.replot.read_text())["scenes"], args.replot.with_suffix(".png"))
        return 0
    exe = None if args.no_peers else splat_transform(args.npm_prefix)
    results = []
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "benchmark": "scene_codecs", "machine": platform.platform(), "processor": platform.processor(),
        "device": "cpu", "cuda": torch.cuda.is_available(), "versions": versions(),
        "peers": {"splat-transform": SPLAT_TRANSFORM if exe else None,
                  "node": shutil.which("node") and subprocess.run(["node", "--version"], capture_output=True,
                                                                  text=True).stdout.strip()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("scenes", "peer_cache_rows")}, "scenes": results}
    with tempfile.TemporaryDirectory() as tmp:
        def save() -> None:  # written row by row: a cut-off run keeps what it measured
            doc["seconds"] = round(time.perf_counter() - started, 1)
            (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=str))

        ON_ROW.append(save)
        for path in args.scenes:
            bench_scene(path, args, Path(tmp), exe, results)
            save()
    if args.scale:
        doc["scale"] = scale_rows(args.scale, args.scale_presets, args.scale_threads)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=str))
    if results:
        plot(results, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / (args.name + '.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""NeuralGS beside LightGaussian `balanced` and `max` at equal bytes: for each scene, LightGaussian's two
files are written first, then NeuralGS with --target-size set to each of their sizes; every file is
decoded and scored by render PSNR against the input on the standard orbit views (bench/scene_codecs.py's
helpers). Times are CPU seconds (time.process_time, torch at one thread). Writes
bench/results/<name>.json (after every row) and a PSNR-vs-bytes plot.

    python bench/neuralgs.py ../shared/data/gaussians/fruit_drops.ply ... [--views 16 --width 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scene_codecs  # noqa: E402 - the scene bench's scoring, versions and plot

RESULTS = Path(__file__).resolve().parent / "results"


def _lightgaussian(scene: Any, path: Path, preset: str, args: argparse.Namespace,
                   work: Path) -> tuple[Path, float]:
    from fieldpress.scenes.lightgaussian.pipeline import CompressOptions, compress

    steps = args.finetune_steps if preset == "max" else None
    options = CompressOptions(preset=preset, seed=0, significance_views=args.sig_views,
                              significance_width=args.sig_width, train_width=args.train_width,
                              finetune_steps=steps, evaluate=False)
    out = work / f"{path.stem}.lightgaussian-{preset}.fpg"
    t = time.process_time()
    compress(scene, options, source={"name": path.name, "bytes": path.stat().st_size}).write(out)
    return out, time.process_time() - t


def _neuralgs(scene: Any, path: Path, target: int | None, label: str, args: argparse.Namespace,
              work: Path) -> tuple[Path, float, dict[str, Any]]:
    from fieldpress.scenes.neuralgs.pipeline import NeuralGSOptions, compress

    options = NeuralGSOptions(target_bytes=target, seed=0, fit_steps=args.fit_steps,
                              finetune_steps=args.ngs_finetune_steps, significance_views=args.sig_views,
                              significance_width=args.sig_width, train_width=args.ngs_train_width,
                              evaluate=False)
    out = work / f"{path.stem}.neuralgs-{label}.fpg"
    t = time.process_time()
    result = compress(scene, options, source={"name": path.name, "bytes": path.stat().st_size})
    result.write(out)
    cpu = time.process_time() - t
    m = result.metrics
    extra = {"rate_split": m["rate_split"], "plan": m.get("plan"), "fit": m.get("fit"),
             "finetune": m.get("finetune"), "target_bytes": target,
             "options": {k: v for k, v in dataclasses.asdict(options).items() if v is not None}}
    return out, cpu, extra


def _scored(method: str, out: Path, scene: Any, cpu: float, reference: np.ndarray, cams: list[Any],
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from fieldpress.scenes.lightgaussian.codec import read_fpg

    t = time.process_time()
    decoded = read_fpg(out)
    return scene_codecs.score_row(method, out, scene.n, cpu, time.process_time() - t, reference, decoded,
                                  cams, {"time": "cpu seconds", **(extra or {})})


class SceneBench:
    """One scene: its evaluation views and reference renders, LightGaussian's rows (run here, or taken
    from an earlier bench/scene_codecs.py result made with the same views and width), NeuralGS rows."""

    def __init__(self, path: Path, args: argparse.Namespace, work: Path) -> None:
        from fieldpress.scenes.formats import load_scene
        from fieldpress.scenes.lightgaussian.pipeline import eval_cameras, render_views

        self.path, self.args, self.work = path, args, work
        self.scene = load_scene(path)
        print(f"{path.name}: {self.scene.n:,} Gaussians, SH degree {self.scene.sh_degree}", flush=True)
        self.cams = eval_cameras(self.scene, None, args.views, args.width)
        self.reference = render_views(self.scene, self.cams)
        self.rows: list[dict[str, Any]] = []
        self.result = {"scene": path.name, "input_bytes": path.stat().st_size, "gaussians": self.scene.n,
                       "sh_degree": self.scene.sh_degree, "rows": self.rows}

    def lightgaussian(self, preset: str) -> dict[str, Any]:
        """LightGaussian `preset`: run now, or the row of --lightgaussian-from for this scene."""
        if self.args.lightgaussian_from:
            doc = json.loads(Path(self.args.lightgaussian_from).read_text())
            scene = next(r for r in doc["scenes"] if r["scene"] == self.path.name)
            row = dict(next(r for r in scene["rows"] if r["method"] == f"fieldpress-{preset}"))
            row.update(method=f"lightgaussian-{preset}", source=str(self.args.lightgaussian_from),
                       source_settings=doc["settings"], time="wall seconds of that run")
        else:
            out, cpu = _lightgaussian(self.scene, self.path, preset, self.args, self.work)
            row = _scored(f"lightgaussian-{preset}", out, self.scene, cpu, self.reference, self.cams)
        self.rows.append(row)
        return row

    def neuralgs(self, preset: str) -> None:
        """NeuralGS with --target-size = LightGaussian `preset`'s bytes."""
        target = next(r for r in self.rows if r["method"] == f"lightgaussian-{preset}")["bytes"]
        out, cpu, extra = _neuralgs(self.scene, self.path, int(target), f"at-{preset}", self.args, self.work)
        self.rows.append(_scored(f"neuralgs@{preset}-bytes", out, self.scene, cpu, self.reference, self.cams,
                                 extra))
        if preset == "max":
            self.result["bar"] = bar(self.rows)


def bar(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Does NeuralGS reach LightGaussian max's render PSNR in fewer bytes? The numbers either way."""
    by = {r["method"]: r for r in rows}
    lg, ngs = by["lightgaussian-max"], by["neuralgs@max-bytes"]
    return {"lightgaussian_max": {"bytes": lg["bytes"], "render_psnr": lg["render_psnr"]},
            "neuralgs_at_max_bytes": {"bytes": ngs["bytes"], "render_psnr": ngs["render_psnr"]},
            "psnr_gap_db": round(ngs["render_psnr"] - lg["render_psnr"], 3),
            "reached": bool(ngs["render_psnr"] >= lg["render_psnr"] and ngs["bytes"] < lg["bytes"])}


# the lines of the plot: LightGaussian's two presets and NeuralGS at their bytes
CURVES = (("lightgaussian-", "LightGaussian max / balanced", "C0-"),
          ("neuralgs@", "NeuralGS at LightGaussian's bytes", "C3-"))


def plot(results: list[dict[str, Any]], out: Path) -> None:
    """One PSNR-vs-bytes panel per scene, drawn by bench/scene_codecs.py's plot."""
    scene_codecs.plot(results, out, curves=CURVES, ours="neuralgs", short=("lightgaussian-", "LG-"),
                      legend="best")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scenes", nargs="*", type=Path)
    p.add_argument("--views", type=int, default=16, help="orbit evaluation views (16)")
    p.add_argument("--width", type=int, default=512, help="evaluation width (512)")
    p.add_argument("--sig-views", type=int, default=16)
    p.add_argument("--sig-width", type=int, default=256)
    p.add_argument("--train-width", type=int, default=256, help="LightGaussian max fine-tune width")
    p.add_argument("--finetune-steps", type=int, default=50, help="LightGaussian max fine-tune steps")
    p.add_argument("--fit-steps", type=int, default=1000, help="NeuralGS attribute-fitting steps")
    p.add_argument("--ngs-finetune-steps", type=int, default=60, help="NeuralGS render fine-tune steps")
    p.add_argument("--ngs-train-width", type=int, default=192, help="NeuralGS fine-tune width")
    p.add_argument("--targets", nargs="*", default=["max", "balanced"], choices=["max", "balanced"],
                   help="LightGaussian presets whose bytes NeuralGS is given as --target-size")
    p.add_argument("--lightgaussian-from", type=Path, help="take LightGaussian's rows from this earlier "
                   "bench/scene_codecs.py JSON (same --views/--width) instead of running them")
    p.add_argument("--name", default="neuralgs")
    p.add_argument("--replot", type=Path, help="only redraw the plot of an earlier JSON result")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.replot:
        plot(json.loads(args.replot.read_text())["scenes"], args.replot.with_suffix(".png"))
        return 0
    torch.set_num_threads(1)
    if args.lightgaussian_from:
        earlier = json.loads(args.lightgaussian_from.read_text())["settings"]
        if (earlier["views"], earlier["width"]) != (args.views, args.width):
            raise SystemExit(f"{args.lightgaussian_from} was scored on {earlier['views']} views at "
                             f"{earlier['width']} px: pass the same --views/--width")
    started = time.process_time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    doc: dict[str, Any] = {
        "benchmark": "neuralgs", "machine": platform.platform(), "device": "cpu", "threads": 1,
        "time": f"CPU seconds (time.process_time), torch at one thread, nice {os.nice(0)} on a shared "
                f"2-core machine (load average {os.getloadavg()[0]:.1f} at the start)",
        "versions": scene_codecs.versions(), "settings": {k: (str(v) if isinstance(v, Path) else v)
                                             for k, v in vars(args).items() if k != "scenes"},
        "complete": False, "scenes": results}
    with tempfile.TemporaryDirectory() as tmp:
        def save() -> None:
            doc["cpu_seconds"] = round(time.process_time() - started, 1)
            (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2, default=str))

        benches = []
        for path in args.scenes:  # LightGaussian first (it sets the byte targets)
            bench = SceneBench(path, args, Path(tmp))
            benches.append(bench)
            results.append(bench.result)
            for preset in ("max", "balanced"):
                bench.lightgaussian(preset)
                save()
        for preset in args.targets:  # then NeuralGS, every scene at max's bytes before balanced's
            for bench in benches:
                bench.neuralgs(preset)
                save()
        doc["complete"] = True
        save()
    if results:
        plot(results, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / (args.name + '.json')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

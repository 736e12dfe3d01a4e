"""How well NeuralGS's per-cluster MLPs fit the attributes, before and after each change to the fit: for
each variant, the normalised error (MSE of the attribute columns in units of their standard deviation,
i.e. 1 - R^2; plain and importance-weighted) per attribute group, the file's bytes and the render PSNR of
the decoded file (no render fine-tune, so only the fit is measured). CPU seconds (time.process_time, torch
at one thread). Writes bench/results/<name>.json and a bar plot.

Variants: `before` (every column weighted alike in the loss and in k-means, MLPs start from zero: the
previous release), `+bias-init` (each cluster's output bias starts at its members' mean), `+groups`
(the attribute groups weighted alike in the loss and in the clustering metric: the shipped fit).

    python bench/neuralgs_fit.py ../shared/data/gaussians/fruit_drops.ply --views 8 --width 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scene_codecs  # noqa: E402 - versions of the scene bench

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = {"opacity": slice(0, 1), "scale": slice(1, 4), "rotation": slice(4, 8), "dc": slice(8, 11),
          "sh_rest": slice(11, None)}


def _variant(name: str) -> tuple[dict[str, Any], bool]:
    """(GROUP_WEIGHTS, whether the output bias starts at the cluster means) of a variant."""
    from fieldpress.scenes.neuralgs import pipeline

    uniform = {"all": (slice(0, None), 1.0)}  # one group: every column counts alike (the old loss)
    return {"before": (uniform, False), "+bias-init": (uniform, True),
            "+groups": (dict(pipeline.GROUP_WEIGHTS), True)}[name]


def fit_row(scene: Any, scores: np.ndarray, reference: np.ndarray, cams: list[Any], variant: str,
            steps: int, target: int) -> dict[str, Any]:
    """Plan, prepare, fit (no fine-tune), encode and decode one variant; its errors, bytes and PSNR."""
    from fieldpress.codec.registry import encode_file
    from fieldpress.scenes.lightgaussian.pipeline import evaluate
    from fieldpress.scenes.neuralgs import pipeline as P
    from fieldpress.scenes.neuralgs.codec import decode_streams
    from fieldpress.scenes.neuralgs.declaration import NEURALGS
    from fieldpress.scenes.neuralgs.model import ClusterFields

    groups, init = _variant(variant)
    shipped = P.GROUP_WEIGHTS
    P.GROUP_WEIGHTS = groups  # read by column_weights: the loss and the clustering metric
    try:
        t = time.process_time()
        options = P.NeuralGSOptions(target_bytes=target, fit_steps=steps, finetune_steps=0, evaluate=False)
        plan = P.plan_sizes(scene, scores, options)
        prep = P._prepare(scene, scores, plan, options)
        fields = ClusterFields(plan.config, seed=0)
        x, norm, w = (torch.from_numpy(np.ascontiguousarray(prep[k])) for k in ("x", "norm", "weights"))
        labels = torch.from_numpy(prep["labels"])
        if init:
            P.init_fields(fields, labels, norm, w)
        fit = P.fit_attributes(fields, x, labels, norm, w, plan, options, "cpu", False)
        fields.eval()
        fields._cache = None
        encoded = P._encode(prep, fields, scene, {}, plan, options)
        size = len(encode_file(NEURALGS, encoded))
        decoded = decode_streams(encoded.header, encoded.streams)
        cpu = time.process_time() - t
    finally:
        P.GROUP_WEIGHTS = shipped
    with torch.no_grad():
        err = ((fields(x, labels) - norm) ** 2).numpy()
    weights = prep["weights"]
    return {"variant": variant, "fit_steps": steps, "target_bytes": target, "bytes": size,
            "clusters": plan.config.clusters, "hidden": plan.config.hidden,
            "rate_split": encoded.header["rate"],
            "error": {g: round(float(err[:, c].mean()), 4) for g, c in GROUPS.items() if err[:, c].size},
            "error_weighted": {g: round(float((err[:, c].mean(1) * weights).sum() / weights.sum()), 4)
                               for g, c in GROUPS.items() if err[:, c].size},
            **evaluate(reference, decoded, cams), "cpu_s": round(cpu, 1), "fit": fit}


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    """Normalised error per attribute group, one bar per variant, PSNR in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    groups = list(rows[0]["error"])
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs = np.arange(len(groups)) + i * width
        label = f"{row['variant']} {row['fit_steps']} steps: {row['bytes']:,} B, {row['render_psnr']:.2f} dB"
        ax.bar(xs, [row["error"][g] for g in groups], width, label=label)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("normalised MSE (1 - R^2)")
    ax.set_title("NeuralGS attribute fit on fruit_drops (no fine-tune)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scene", type=Path)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--target", type=int, default=42019, help="--target-size (LightGaussian max's bytes)")
    p.add_argument("--steps", type=int, nargs="*", default=[600], help="fitting steps of every variant")
    p.add_argument("--final-steps", type=int, nargs="*", default=[], help="extra step counts of +groups")
    p.add_argument("--name", default="neuralgs_fit")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from fieldpress.scenes.cameras import orbit
    from fieldpress.scenes.formats import load_scene
    from fieldpress.scenes.lightgaussian.pipeline import render_views
    from fieldpress.scenes.lightgaussian.significance import significance

    started = time.process_time()
    scene = load_scene(args.scene)
    cams = orbit(scene, args.views, width=args.width)
    scores = significance(scene, cams)
    reference = render_views(scene, cams)
    rows: list[dict[str, Any]] = []
    doc = {"benchmark": "neuralgs_fit", "scene": args.scene.name, "machine": platform.platform(),
           "versions": scene_codecs.versions(), "settings": {k: str(v) for k, v in vars(args).items()},
           "time": f"CPU seconds (time.process_time), torch at one thread, nice {os.nice(0)}",
           "error": "MSE of the normalised attribute columns (1 - R^2), mean over the kept Gaussians; "
                    "error_weighted: weighted by importance as the loss is", "rows": rows}
    jobs = [(v, s) for s in args.steps for v in ("before", "+bias-init", "+groups")]
    jobs += [("+groups", s) for s in args.final_steps]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for variant, steps in jobs:
        rows.append(fit_row(scene, scores, reference, cams, variant, steps, args.target))
        r = rows[-1]
        print(f"{variant:>11} {steps:5d} steps: {r['bytes']:,} B  {r['render_psnr']:.2f} dB  {r['error']}",
              flush=True)
        doc["cpu_seconds"] = round(time.process_time() - started, 1)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2))
    plot(rows, RESULTS / f"{args.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

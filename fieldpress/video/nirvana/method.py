"""The NIRVANA `VideoMethod`: fit every group in order (checkpointing after each), write the integers
through the ``video/nirvana`` codec, and measure the file's own bytes decoded back."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.engine.budget import BudgetPlan
from fieldpress.runtime import Stopwatch, cpu_threads, make_progress, torch_threads
from fieldpress.video.nirvana.codec import best_rows, coded_bits
from fieldpress.video.nirvana.fit import (
    NirvanaFit,
    fit_group,
    groups_for,
    load_progress,
    plan_steps,
    probe_step_seconds,
    save_progress,
    settings,
)
from fieldpress.video.nirvana.grouping import Group
from fieldpress.video.nirvana.model import NirvanaConfig, initial_integers


def _intra_cheaper(ints: list[torch.Tensor], prev: list[torch.Tensor]) -> bool:
    """True when coding the group on its own takes no more bits than its residual to `prev`."""
    own = [x.cpu().numpy() for x in ints]
    res = [(x - p).cpu().numpy() for x, p in zip(ints, prev)]
    return coded_bits(own, best_rows(own)) <= coded_bits(res, best_rows(res))


def _start_scales(cfg: NirvanaConfig, key: bool, prev: torch.Tensor | None, prev_key: bool) -> torch.Tensor:
    """Initial log-scales: a wide prior for a key group, the previous residual's for a residual group."""
    n = len(cfg.shapes())
    if key:
        return torch.full((n,), math.log(cfg.qmax / 4))
    return prev.clone() if prev is not None and not prev_key else torch.zeros(n)


def fit_groups(frames: np.ndarray, cfg: NirvanaConfig, groups: list[Group], fit: NirvanaFit,
               device: torch.device, *, output: Path | None, resume: bool, signature: dict,
               show_progress: bool, budget: BudgetPlan | None = None,
               ) -> tuple[list[list[torch.Tensor]], list[Group], list[dict]]:
    """Fit the groups in order (`fit.steps` per group); returns every group's integers, the groups (keys
    updated) and facts. `budget` (a ``--minutes`` plan) goes into every checkpoint."""
    targets = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255.0)
    n_tensors = len(cfg.shapes())
    done: list[list[torch.Tensor]] = []
    scales, facts = None, []
    if resume and output is not None:
        done, scales, groups, facts = load_progress(output, signature, n_tensors)
    init = initial_integers(cfg, torch.Generator().manual_seed(fit.seed))
    with make_progress(show_progress) as bar:
        task = bar.add_task("fit nirvana", total=len(groups), completed=len(done), info="")
        for g in range(len(done), len(groups)):
            grp, prev = groups[g], (done[g - 1] if g else None)
            start = [p.float() for p in prev] if prev is not None else init
            reference = [torch.zeros_like(s) for s in start] if grp.key else [p.float() for p in prev]
            t0 = time.process_time()
            lr_fit = fit if g == 0 else replace(fit, lr=fit.lr * fit.warm_lr)
            steps = fit.steps * (2 if grp.reason in ("first", "cut") else 1)
            net, fact = fit_group(cfg, targets[grp.start:grp.start + grp.length].to(device),
                                  [s.to(device) for s in start], [r.to(device) for r in reference],
                                  _start_scales(cfg, grp.key, scales, g > 0 and groups[g - 1].key).to(device),
                                  lr_fit, steps, fit.seed * 1_000_003 + g)
            ints = [x.cpu() for x in net.hard_integers()]
            if not grp.key and _intra_cheaper(ints, prev):  # the residual's rate jumped: a key group
                groups[g] = grp = replace(grp, key=True, reason="rate")
            done.append(ints)
            scales = net.log_scales.detach().cpu()
            facts.append({**fact, "group": g, "key": grp.key,
                          "cpu_seconds": round(time.process_time() - t0, 3)})
            if output is not None:
                save_progress(output, done, scales, groups, facts, signature, budget)
            bar.update(task, advance=1, info=f"psnr {fact['psnr']:.2f}")
    return done, groups, facts


def _signature(clip: Any, fit: NirvanaFit, cfg: NirvanaConfig) -> dict[str, Any]:
    from dataclasses import asdict

    digest = hashlib.sha256(np.ascontiguousarray(clip.frames).tobytes()).hexdigest()
    return {"nirvana": asdict(fit), "config": cfg.to_dict(), "frames_sha256": digest, "fps": clip.fps}


def _planned(frames: np.ndarray, cfg: NirvanaConfig, groups: list[Group], fit: NirvanaFit,
             device: torch.device, resume_from: Path | None,
             cpu0: float) -> tuple[NirvanaFit, BudgetPlan | None]:
    """The fit to run: `fit` as asked, or with ``--minutes`` its steps per group planned from a probe of
    one step on the first group (a resume reuses the checkpoint's plan)."""
    if fit.minutes is None:
        return fit, None
    g0 = groups[0]
    target = torch.from_numpy(np.ascontiguousarray(frames[g0.start:g0.start + g0.length]))
    target = target.permute(0, 3, 1, 2).float().div(255.0).to(device)
    init = [x.to(device) for x in initial_integers(cfg, torch.Generator().manual_seed(fit.seed))]
    plan = plan_steps(fit, groups, lambda: probe_step_seconds(cfg, target, init, fit),
                      time.process_time() - cpu0, resume_from)
    return replace(fit, steps=plan.epochs["fit"]), plan


def compress(clip: Any, options: Any, device: torch.device, *, output: Path | None = None,
             resume: bool = False, show_progress: bool = True, input: str | None = None,
             **_: Any) -> Any:
    """Fit `clip` with NIRVANA and return a `VideoResult` (the file's bytes and their measurements)."""
    from fieldpress.codec.registry import encode_file, get_codec
    from fieldpress.video.nirvana.codec import CODEC
    from fieldpress.video.pipeline import VideoResult, measure

    fit = settings(options)
    groups = groups_for(clip.frames, fit)
    cfg = NirvanaConfig(clip.height, clip.width, group=fit.group_size, bits=fit.bits)
    threads = cpu_threads() if device.type == "cpu" else 0
    with Stopwatch() as sw, torch_threads(threads):
        cpu0 = time.process_time()
        run_fit, budget = _planned(clip.frames, cfg, groups, fit, device, output if resume else None, cpu0)
        ints, groups, facts = fit_groups(clip.frames, cfg, groups, run_fit, device, output=output,
                                         resume=resume, signature=_signature(clip, fit, cfg),
                                         show_progress=show_progress, budget=budget)
        fit_cpu = sum(f["cpu_seconds"] for f in facts)
        summary = {"lambda": fit.lmbda, "steps": run_fit.steps, "params_per_group": cfg.n_params(),
                   "cuts": [g.start for g in groups if g.reason == "cut"],
                   "rate_keys": [g.start for g in groups if g.reason == "rate"]}
        if budget is not None:
            summary["budget"] = {"cpu_minutes": budget.minutes,
                                 "seconds_per_step": round(budget.seconds_per_step, 6)}
        encoded = CODEC.encode(cfg, groups, [[x.numpy() for x in g] for g in ints], frames=clip.count,
                               fps=clip.fps, frame_start=clip.frame_start, source=clip.source,
                               extra={"fit": summary})
        codec = get_codec("video", "nirvana")
        data = encode_file(codec, encoded)
        encode_cpu = time.process_time() - cpu0
        metrics = {"model": "nirvana", "params": cfg.n_params() * len(groups), **measure(data, clip, device)}
    metrics.update({
        "frames": clip.count, "size": f"{clip.width}x{clip.height}", "groups": len(groups),
        "key_groups": sum(g.key for g in groups), "group_size": fit.group_size, "lambda": fit.lmbda,
        "rate": encoded.header["rate"], "fit_cpu_seconds": round(fit_cpu, 2),
        "encode_cpu_seconds": round(encode_cpu, 2), "group_psnr": [f["psnr"] for f in facts],
        "steps_per_group": run_fit.steps, **({"budget": summary["budget"]} if budget is not None else {}),
        **{k: v for k, v in summary.items() if k in ("cuts", "rate_keys")},
    })
    return VideoResult(codec, data, metrics, input=input, seconds=sw.seconds, device=str(device))

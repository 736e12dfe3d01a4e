"""``fit-video --model latent``: lambda from ``--lambda``, ``--quality`` or ``--target-bpp``, a CPU-time
budget from ``--minutes``, a group-by-group fit, the file's bytes and their measurements.

New files use a key frame (``reference="key"``, model.py): each group's first frame is coded as an
image and every later frame is that key frame warped by a decoded flow, times a mask, plus a residual,
from latent frames that hold only the levels from ``p_first_level`` on. Static content then costs the
later frames almost nothing and they need no fine latents, so the rate falls and each step is cheaper.
Measured against the design below (``reference="none"``) at 128 CPU-s on carphone 0:32 at quality 4,
file bytes: 28.76 dB at 0.167 bpp (382 steps) -> 29.54 at 0.173 (796 steps) with ``p_first_level`` 1
and 8 frames a step; 29.47 at 0.123 (1,154 steps) with 2; 29.58 at 0.121 with 2 and 12 frames a step;
29.15 at 0.102 with 3. On all of carphone at the preview's 8 CPU-minutes (two fits side by side):
``p_first_level`` 1 gave 30.81 / 31.44 / 31.50 dB at 0.194 / 0.263 / 0.330 bpp (quality 4 / 6 / 8), 2
gave 30.66 dB at both 0.174 and 0.209 bpp (quality 6 / 8: without the finer levels the later frames
cannot get sharper than the key frame they warp), 0 gave 31.26 at 0.347 (quality 6); the design below
gave 30.22 / 30.70 / 31.00 dB at 0.160 / 0.216 / 0.295. So 1 is the default: +0.3 to +0.55 dB at equal
rate. The key frames stay the weakest frames (27.8-33.0 dB; carphone's frame 0 is a hard picture: the
latent image codec gives it 28.4 dB at 0.80 bpp after 2,000 steps, JPEG 29.7 at 0.96). Not kept, on
0:32 at quality 4 (p_first_level 2, 12 frames a step): a key-frame-only phase of 40% of the steps
instead of 25% (29.12 dB at 0.121 bpp), the key frame's error weighted 4x (29.63 at 0.123), and a
flow of 2 pixels per unit instead of 8 (a training-only probe, 0.1 dB worse); on all of carphone at 8
CPU-minutes, groups of 16 (a nearer key frame, twice the key frames and networks): 30.42 dB at 0.261
bpp and 31.01 at 0.395 (quality 4 / 6), against 30.76 at 0.176 and 31.52 at 0.266 with 32. Runs of
the same setting differ: quality 6 on 0:32 gave 29.04 dB at 0.183 bpp in one run and 29.53 at 0.169 in
another. A still clip (frame 0 repeated 32 times, 128 CPU-s, quality 4): 35.94 dB at 0.141 bpp,
against 32.61 at 0.135 without the key frame.

Then two changes to the training and the layout, measured at 128 CPU-s on carphone 0:32 (file bytes,
two fits side by side): the key frame alone for 5% of a group's CPU time instead of a quarter, with
those steps coding only the key's latents (model.KEY_FIRST_SHARE has the sweep), took quality 6 from
30.05 dB at 0.285 bpp to 30.22 at 0.245; and one later latent frame every 2nd frame instead of every
4th (``time_stride`` 2: the later frames' latents hold no full-resolution level, so doubling them is
cheap) gave 29.37 / 30.92 / 31.82 / 31.87 dB at 0.094 / 0.168 / 0.298 / 0.414 bpp (quality 2 / 4 / 6 /
8), where a stride of 4 gave 29.64 at 0.123 (quality 3), 30.22 at 0.245 and 30.38 at 0.309; a stride of
1 gave 30.67 at 0.188 (quality 4). On all of carphone at 8 CPU-minutes the two took quality 2 / 4 / 6 /
8 from 29.40 / 30.76 / 31.52 / 31.50 dB at 0.103 / 0.176 / 0.266 / 0.334 bpp to 29.92 / 31.85 / 32.75 /
32.49 at 0.085 / 0.182 / 0.298 / 0.400 (the key-frame share alone: 29.67 / 31.05 / 31.36 / 31.54 at
0.083 / 0.160 / 0.243 / 0.305). Not kept: a latent learning rate of 0.3 (30.32 dB at 0.269 bpp, quality
6, against 0.2's 30.22 at 0.245, stride 4), 16 frames a step (31.38 at 0.295, quality 6, against 12's
31.82 at 0.298, stride 2), a synthesis width of 32 (31.06 at 0.279, quality 6, stride 2: fewer steps)
and, on all of carphone at quality 6, the first group's share of the budget per frame at 1 or 3 instead
of fit.FIRST_GROUP_SHARE's 2 (32.55 dB at 0.296 bpp and 32.54 at 0.291, against 32.75 at 0.298).

Then the optimizer. Steps were what the fits lacked: twice the CPU time took carphone 0:32 at quality 6
from 31.75 dB at 0.303 bpp (522 steps) to 32.72 at 0.311 (1,046). Adam's second moments decaying at
0.95 instead of 0.999 (``ADAM_BETA2`` has the sweep: each step draws other frames, and the latents'
gradients change as the proxy anneals) took that point to 32.40 dB at 0.262 bpp, and a network learning
rate of 0.014 instead of 0.02 (``LR_NETWORKS``) to 32.51 at 0.252. On all of carphone at 8 CPU-minutes
the two took quality 2 / 3 / 4 / 5 / 6 / 8 to 30.20 / 31.24 / 32.28 / 32.94 / 33.29 / 33.88 dB at
0.079 / 0.105 / 0.146 / 0.202 / 0.256 / 0.360 bpp (bench/results/video_rd_carphone.json). The
gradient-norm clip (1.0) made no difference beyond run-to-run spread: 10 gave 32.63 dB at 0.252 bpp,
0.3 gave 32.66 at 0.250. Retried with the new optimizer and not kept (0:32, quality 6, 128 CPU-s): 8 or
16 frames a step (32.46 dB at 0.256 bpp, 32.31 at 0.255), a straight-through phase of 20% (32.39 at
0.254), and a key-frame-only share of 10% (32.69 at 0.250: within the spread of the default's runs).

The design without a key frame, as first built:

Why this design (one latent frame every `time_stride` frames per group, blended linearly in time, a
context model that sees the previous latent frame, networks shared by the group, each group
warm-started from the previous one) rather than a latent pyramid per frame or a motion model: on the
CPU the encoder's cost is the context model and synthesis evaluated over every latent at every step,
and a CPU budget of minutes gives each group only a few hundred steps. Measured on carphone frames
0:32 at the preview budget (128 CPU-s, load 10-14; docs/formats/video-latent.md): a pyramid per frame
got 56-76 steps per group and 25.1 dB at 0.42 bpp; one latent frame per 4 frames got 72-142 steps and
28.1 dB at 0.27 bpp (fewer latents to code and to evaluate). The previous-latent-frame context makes
static content nearly free without a motion model (no motion search fits the budget). Groups are
coded independently, so decoding is random access by group; the warm start only shapes the fit.
Later measurements (idle machine, same 128 CPU-s on 0:32 at quality 4): groups of 16 gave 28.62 dB at
0.223 bpp; one group of 32 (half the network bytes) with 8 of its frames synthesized per step (the
rate still over every latent) 28.90 dB at 0.162 bpp (493 steps). Not kept: time stride 2 (29.17 dB at
0.244 bpp) or 8 (28.26 at 0.169, quality 5), synthesis width 16 (28.48 at 0.169) or 40 (28.85 at
0.185), context width 8 (28.81 at 0.162), and coding only a window of 3 or 5 of the 8 latent frames
per step (819 / 692 steps, 28.83 dB at 0.199 bpp / 28.81 at 0.180: more steps, worse gradients).
``torch.compile`` of a group model's forward (eager: 0.30 CPU-s a step) had not finished compiling
after 10 wall-minutes with two benches on the cores, so it cannot pay inside a budget of minutes.
Also not kept: a context model whose mean is an offset from the previous latent frame's latent at the
same place (a repeat predicted exactly before training): carphone 0:32 at quality 4 went from 28.69 dB
at 0.174 bpp to 28.77 at 0.168, frame 0 repeated 32 times from 32.61 at 0.135 to 32.90 at 0.129, but
the quick start's panning sample went from 35,001 bytes at 27.73 dB to 35,359 at 27.69 (same budget,
run side by side), and all of carphone at quality 3 gave 29.43 dB at 0.126 bpp (29.49 at 0.116 before,
another day's run). A straight-through phase of 30% of the steps instead of 10% (so the context model
could learn the small scales of repeated latents, which uniform noise hides): 28.67 dB at 0.178 bpp on
0:32 and 32.39 at 0.144 on the still clip, both worse.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldpress.codec.rate_control import DEFAULT_QUALITY, check_lambda, quality_lambda, search_lambda
from fieldpress.codec.registry import encode_file, get_codec
from fieldpress.errors import InputError
from fieldpress.fields.latent.fit import FitConfig
from fieldpress.fields.latent.pipeline import to_uint8
from fieldpress.runtime import make_progress, torch_threads
from fieldpress.video.latent import bitstream, codec
from fieldpress.video.latent.config import VideoLatentConfig
from fieldpress.video.latent.fit import GroupFit, fit_clip
from fieldpress.video.pipeline import VideoResult, measure, warn_short_budget

LR_LATENTS = 0.2  # twice the image codec's: CPU budgets give a video a few hundred steps per group
# (with ADAM_BETA2, carphone 0:32 at 128 CPU-s, quality 6: 0.13 gave 31.91 dB at 0.232 bpp, 0.2 32.40 at
# 0.262, 0.3 32.51 at 0.288)
LR_NETWORKS = 0.014  # the image codec's 0.02 is too high for a video's shared networks (with ADAM_BETA2,
# carphone 0:32 at 128 CPU-s, quality 6: 0.005 gave 32.50 dB at 0.274 bpp, 0.01 32.49 at 0.261, 0.014
# 32.51 at 0.252, 0.02 32.40 at 0.262, 0.04 31.32 at 0.258)
ADAM_BETA2 = 0.95  # Adam's second-moment decay: a few hundred steps a group, each drawing other frames,
# need second moments that follow the gradients. Carphone 0:32 at 128 CPU-s, quality 6: 0.999 (Adam's
# default) gave 31.83 dB at 0.306 bpp, 0.99 32.02 at 0.284, 0.95 32.40 at 0.262, 0.9 32.14 at 0.250,
# 0.8 32.13 at 0.258; 0.99 with a first-moment decay of 0.8 31.83 at 0.292. At four times the CPU time
# (512 CPU-s, about 2,100 steps) it still wins: with LR_NETWORKS 33.77 dB at 0.246 bpp, against 33.11 at
# 0.308 with 0.999 and 0.02 (the image codec keeps 0.999: at 2,200 steps on a Kodak crop 0.95 lost 5% in bits)
DEFAULT_CONFIG = VideoLatentConfig(reference="key", p_first_level=1, time_stride=2)
PROBE_FRACTION = 6  # a --target-bpp probe fits the first groups for 1/PROBE_FRACTION of the budget
MAX_PROBES = 4
MIN_PROBE_STEPS = 20
FRAMES_PER_STEP: int | None = 12  # frames synthesized per training step (None: the whole group); on
# carphone 0:32 at 128 CPU-s, all 32 frames a step gave 216 steps and 28.35 dB at 0.192 bpp, 8 gave 493
# steps and 28.90 dB at 0.162 bpp, 4 gave 516 steps and 28.91 dB at 0.177 bpp (no key frame); with the
# key frame (p_first_level 2), 12 gave 29.58 dB at 0.121 against 8's 29.47 at 0.123


@dataclasses.dataclass
class LatentVideoResult(VideoResult):
    """A `VideoResult` plus the encoder's own reconstruction (uint8 (T, H, W, 3)) of the coded groups."""

    reconstruction: np.ndarray | None = None


def _frames_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def _budget(options: Any) -> dict[str, float | int]:
    """CPU seconds for the whole clip (--minutes), or steps per group (--epochs without --minutes)."""
    if options.minutes is not None:
        if not options.minutes > 0:
            raise InputError("--minutes must be positive")
        return {"seconds": float(options.minutes) * 60.0}
    return {"steps": int(options.epochs)}


def encode_groups(fits: list[GroupFit], x: torch.Tensor, clip: Any, lambda_: float,
                  facts: dict[str, Any]) -> tuple[bytes, np.ndarray]:
    """(container bytes, the encoder's reconstruction) of fitted groups."""
    groups, recon = [], []
    for gf in fits:
        target = x[gf.start:gf.start + gf.model.frames]
        entry, words, weights, coded = bitstream.encode_group(gf.model, lambda_, target)
        groups.append((entry, words, weights))
        with torch.no_grad():
            frames = coded.synthesize([p.detach().double().float() for p in coded.latents]).clamp(0, 1)
        recon += [to_uint8(f) for f in frames]
    encoded = codec.encode_clip(groups, fits[0].model.config, width=clip.width, height=clip.height,
                                fps=clip.fps, frame_start=clip.frame_start, source=clip.source,
                                lambda_=lambda_, extra={"fit": facts})
    return encode_file(get_codec("video", "latent"), encoded), np.stack(recon)


def _lambda_for(x: torch.Tensor, clip: Any, options: Any, budget: dict, fit: FitConfig,
                config: VideoLatentConfig) -> tuple[float, list[dict[str, float]]]:
    """The lambda of --lambda, --quality (default DEFAULT_QUALITY) or a --target-bpp search whose probes
    are short fits of the first two groups, measured from their encoded bytes."""
    given = [n for n in ("lmbda", "quality", "target_bpp") if getattr(options, n, None) is not None]
    if len(given) > 1:
        raise InputError("give at most one of --lambda, --quality and --target-bpp")
    if options.lmbda is not None:
        return check_lambda(options.lmbda), []
    if options.target_bpp is None:
        return quality_lambda(options.quality if options.quality is not None else DEFAULT_QUALITY), []
    head = x[:2 * config.group]
    short = ({"steps": max(MIN_PROBE_STEPS, int(budget["steps"]) // PROBE_FRACTION)} if "steps" in budget
             else {"seconds": float(budget["seconds"]) * head.shape[0] / x.shape[0] / PROBE_FRACTION})

    def probe(lam: float) -> float:
        fits = fit_clip(head, config, lam, fit=fit, frames_per_step=FRAMES_PER_STEP, **short)
        data, _ = encode_groups(fits, head, clip, lam, {})
        return len(data) * 8.0 / (head.shape[0] * clip.width * clip.height)

    lam, probes = search_lambda(options.target_bpp, probe, max_probes=MAX_PROBES)
    return lam, [{"lambda": p.lambda_, "bpp": round(p.bpp, 4)} for p in probes]



def compress_latent(clip: Any, options: Any, device: Any, *, output: Path | None = None, resume: bool = False,
                    show_progress: bool = True, input: str | None = None,
                    config: VideoLatentConfig = DEFAULT_CONFIG) -> LatentVideoResult:
    """The ``latent`` `VideoMethod`: fit on the CPU (one thread; the budget is CPU time), encode, and
    measure the file's own bytes decoded back."""
    if resume:
        raise InputError("--model latent keeps no checkpoint to resume from; run without --resume")
    if clip.width < 2 or clip.height < 2:
        raise InputError("--model latent needs frames of at least 2x2 pixels")
    if clip.width * clip.height > codec.MAX_PIXELS or clip.width * clip.height * config.group > \
            codec.MAX_GROUP_PIXELS:
        raise InputError(f"--model latent: {clip.width}x{clip.height} frames are too large for groups of "
                         f"{config.group} frames (use --resize or --crop)")
    t_wall = time.perf_counter()
    budget = _budget(options)
    fit = FitConfig(seed=options.seed, lr_latents=LR_LATENTS, lr_networks=LR_NETWORKS, adam_beta2=ADAM_BETA2)
    x = _frames_tensor(clip.frames)
    with torch_threads(1):
        t0 = time.process_time()
        lam, search = _lambda_for(x, clip, options, budget, fit, config)
        search_s = time.process_time() - t0
        with make_progress(show_progress) as bar:
            task = bar.add_task("fit latent", total=-(-clip.count // config.group), info="")

            def progress(done: int, total: int, rec: dict[str, float]) -> None:
                bar.update(task, completed=done, info=f"{rec['psnr']:.2f} dB {rec['bpp']:.3f} bpp")
                if done == 1 and "seconds" in budget:
                    _warn_if_too_short(int(rec["steps"]), float(options.minutes), total)

            fits = fit_clip(x, config, lam, fit=fit, progress=progress, frames_per_step=FRAMES_PER_STEP,
                            **budget)
        fit_s = time.process_time() - t0 - search_s
        facts = {"steps_per_group": [f.steps for f in fits], "fit_cpu_seconds": round(fit_s, 1)}
        t1 = time.process_time()
        data, recon = encode_groups(fits, x, clip, lam, facts)
        encode_s = time.process_time() - t1
        t2 = time.process_time()
        metrics = measure(data, clip, torch.device("cpu"))
        decode_s = time.process_time() - t2
    header_groups = [g for g in _groups_of(data)]
    metrics.update({
        "model": "latent", "lambda": lam, "frames": clip.count, "size": f"{clip.width}x{clip.height}",
        "groups": len(fits), "group_frames": config.group, "steps_per_group": facts["steps_per_group"],
        "fit_cpu_seconds": round(fit_s, 1), "search_cpu_seconds": round(search_s, 1),
        "encode_cpu_seconds": round(encode_s, 2), "decode_cpu_seconds": round(decode_s, 2),
        "latent_bytes": sum(g["latent_bytes"] for g in header_groups),
        "weight_bytes": sum(g["weight_bytes"] for g in header_groups),
        "macs_per_pixel": round(fits[0].model.macs_per_pixel(), 1),
        "train_psnr_last_group": round(fits[-1].last.get("psnr", 0.0), 3),
    })
    if search:
        metrics["lambda_search"] = search
    return LatentVideoResult(get_codec("video", "latent"), data, metrics, input=input,
                             seconds=time.perf_counter() - t_wall, device="cpu", reconstruction=recon)


MIN_USEFUL_FIRST_STEPS = 150  # the first group (twice the others' share) below this: a blurred picture


def _warn_if_too_short(first_steps: int, minutes: float, groups: int) -> None:
    """Say plainly, once the first group is fitted, when the budget buys too few steps for a useful
    picture (carphone 0:32: 216 steps gave 28.4 dB, 70-140 steps 28.1 dB; the image codec needs 100-200
    to pass JPEG), and what would."""
    if first_steps >= MIN_USEFUL_FIRST_STEPS:
        return
    shortfall = (f"the {minutes:g}-minute budget bought only {first_steps} steps for the first of {groups} "
                 "group(s)")
    warn_short_budget(shortfall, first_steps, MIN_USEFUL_FIRST_STEPS, minutes, "CPU-minutes")


def _groups_of(data: bytes) -> list[dict[str, Any]]:
    from fieldpress.codec.container import open_container

    return list(open_container(data).header["groups"])

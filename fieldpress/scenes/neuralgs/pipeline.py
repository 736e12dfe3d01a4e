"""The NeuralGS pipeline behind `compress-splat --codec neuralgs`: significance pruning, attribute
clustering, per-cluster MLP fitting (importance-weighted, rate in the loss), a photometric + frequency
fine-tune against the input's own renders, coding, and evaluation of the decoded file.

Order (Tang et al. 2025): importance -> prune 40% -> k-means on attributes -> fit one MLP per cluster to
its Gaussians' attributes -> fine-tune the MLPs through the renderer -> store positions + MLPs.
`compress(input, options, device) -> Result`: the file's bytes and metrics measured on what they decode to.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fieldpress.codec.registry import Encoded, Result, encode_file
from fieldpress.errors import InputError
from fieldpress.scenes.lightgaussian.position import encode_positions
from fieldpress.scenes.neuralgs.cluster import kmeans
from fieldpress.scenes.neuralgs.codec import (
    POSITION_BITS,
    attribute_dims,
    decode_streams,
    encode_neuralgs,
    scene_attributes,
    split_attributes,
    unit_positions,
)
from fieldpress.scenes.neuralgs.declaration import NEURALGS
from fieldpress.scenes.neuralgs.model import ClusterFields, FieldConfig

# --quality 1..9: MLP width, finest weight step (2**-shift) and lambda (per bit per Gaussian).
QUALITY: dict[int, tuple[int, int, float]] = {
    1: (12, 5, 3e-3), 2: (16, 5, 1.6e-3), 3: (16, 6, 8e-4), 4: (24, 6, 4e-4), 5: (32, 6, 2e-4),
    6: (40, 7, 1e-4), 7: (48, 7, 5e-5), 8: (64, 7, 2.5e-5), 9: (96, 8, 1.2e-5)}
DEFAULT_QUALITY = 5
HEADER_BYTES = 3000  # kept free for the JSON header when sizing to --target-size
MAX_BATCH = 8192  # Gaussians per attribute-fitting step
FREQ_WEIGHT = 0.1  # weight of the frequency (Fourier amplitude) loss in the fine-tune
FINETUNE_LR = 0.02  # the fine-tune's learning rate, relative to the fit's
Progress = Callable[[str], None]


@dataclass(frozen=True)
class NeuralGSOptions:
    """What compress-splat --codec neuralgs can be told; None means "sized from the scene / budget"."""

    prune: float = 0.4
    clusters: int | None = None
    hidden: int | None = None
    layers: int = 3
    frequencies: int = 10
    quality: int | None = None
    target_bytes: int | None = None
    fit_steps: int = 1000
    finetune_steps: int = 60
    lr: float = 1e-2
    seed: int = 0
    significance_views: int = 16
    significance_width: int = 256
    train_width: int = 192
    evaluate: bool = True
    eval_views: int = 16
    eval_width: int = 512
    spz_axes: str | None = None

    def validate(self) -> None:
        """InputError on the first bad value (before any work)."""
        if not 0.0 <= self.prune < 1.0:
            raise InputError(f"--prune must be in [0, 1), got {self.prune}")
        if self.clusters is not None and self.clusters < 1:
            raise InputError(f"--clusters must be at least 1, got {self.clusters}")
        if self.hidden is not None and not 2 <= self.hidden <= 512:
            raise InputError(f"--mlp-width must be in 2..512, got {self.hidden}")
        if self.quality is not None and self.quality not in QUALITY:
            raise InputError(f"--quality must be an integer 1-9, got {self.quality}")
        if self.fit_steps < 1 or self.finetune_steps < 0:
            raise InputError("--fit-steps must be >= 1 and --finetune-steps >= 0")
        if self.eval_views < 1 or self.eval_width < 16:
            raise InputError("--eval-views must be >= 1 and --eval-width >= 16")
        FieldConfig(clusters=1, hidden=self.hidden or 32, layers=self.layers,
                    frequencies=self.frequencies).validate()


# ----------------------------------------------------------------------------- sizing
def bits_per_weight(shift: int) -> float:
    """A prior for the coded bits of one weight at step 2**-shift (fruit_drops, 800 fitting steps:
    6.1-6.5 bits at shift 6, 8.0 at shift 8 with 10% of the weights at the clamp)."""
    return max(1.0, shift + 0.5)


def auto_clusters(n: int) -> int:
    """Clusters for n kept Gaussians when neither --clusters nor a budget says: sqrt(n)/8 in 4..64 (the
    paper's 6-10 for objects, 40-140 for rooms and outdoor scenes of millions)."""
    return int(min(max(round(math.sqrt(n) / 8), 4), 64, n))


@dataclass(frozen=True)
class Plan:
    """The sizes chosen for one run: kept fraction, field config, lambda."""

    prune: float
    config: FieldConfig
    lmbda: float
    budget: dict[str, Any]


def plan_sizes(scene: Any, scores: np.ndarray, options: NeuralGSOptions) -> Plan:
    """Prune ratio, clusters and MLP width: from the flags, the quality ladder, or --target-size (then
    positions and labels are measured, and the MLPs get what is left)."""
    from fieldpress.scenes.lightgaussian.significance import prune_mask

    level = options.quality or DEFAULT_QUALITY
    hidden, shift, lmbda = QUALITY[level]
    hidden = options.hidden or hidden
    prune = options.prune
    dims = attribute_dims(scene.sh_degree)
    budget: dict[str, Any] = {"quality": level}
    if options.target_bytes is not None:
        keep = prune_mask(scores, prune)
        per_g = _position_bytes(scene.means.numpy()[keep]) / max(int(keep.sum()), 1) + 0.5  # + labels
        room = options.target_bytes - HEADER_BYTES
        if per_g * keep.sum() > 0.6 * room:  # positions would crowd out the MLPs: prune more
            prune = min(0.99, 1.0 - 0.6 * room / per_g / scene.n)
        n_kept = int(prune_mask(scores, prune).sum())
        mlp_bytes = room - per_g * n_kept

        def fit_count(width: int) -> int:
            cfg = FieldConfig(1, width, options.layers, options.frequencies, shift, dims)
            return int(mlp_bytes * 8 / (cfg.params_per_cluster() * bits_per_weight(shift)))

        fit = fit_count(hidden)
        while fit < 1 and hidden > 4:
            hidden = max(4, hidden // 2)
            fit = fit_count(hidden)
        if fit < 1:
            raise InputError(f"cannot reach {options.target_bytes:,} bytes: the positions alone need "
                             f"about {int(per_g * n_kept):,}")
        clusters = options.clusters or min(fit, auto_clusters(n_kept) * 2, n_kept)
        budget.update(target_bytes=options.target_bytes, mlp_bytes=int(mlp_bytes))
    else:
        n_kept = int(prune_mask(scores, prune).sum())
        clusters = options.clusters or auto_clusters(n_kept)
    if clusters > n_kept:
        raise InputError(f"--clusters {clusters} is more than the {n_kept} Gaussians kept after pruning")
    config = FieldConfig(clusters, hidden, options.layers, options.frequencies, shift, dims)
    config.validate()
    return Plan(round(prune, 4), config, lmbda, budget)


def _position_bytes(means: np.ndarray) -> int:
    from fieldpress.codec import entropy

    pos = encode_positions(means, POSITION_BITS)
    return sum(len(entropy.encode_best(a)[1]) for a in (pos.lengths, pos.mantissa))


# ----------------------------------------------------------------------------- attribute fitting
class _Gaussians:
    """DataSource over the kept Gaussians: a batch is their indices."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: Tensor) -> dict[str, Tensor]:
        return {"index": indices.reshape(-1).to(torch.int64)}


# the attribute groups (columns of `scene_attributes`) and their share of the fitting loss: each group
# counts alike however many columns it has (the SH rest, least visible, at half), so the 45 SH-rest
# columns of an SH-3 scene no longer outweigh opacity, scale and rotation, which decide the render (on
# fruit_drops, true geometry with fitted colour renders at 43 dB, fitted geometry with true colour at 32)
GROUP_WEIGHTS = {"opacity": (slice(0, 1), 1.0), "scale": (slice(1, 4), 1.0), "rotation": (slice(4, 8), 1.0),
                 "dc": (slice(8, 11), 1.0), "sh_rest": (slice(11, None), 0.5)}


def column_weights(dims: int) -> Tensor:
    """(dims,) loss weight of each attribute column (GROUP_WEIGHTS spread over the group), summing to 1."""
    w = torch.zeros(dims)
    for cols, share in GROUP_WEIGHTS.values():
        n = len(range(dims)[cols])
        if n:
            w[cols] = share / n
    return w / w.sum()


class AttributeFit(nn.Module):
    """The fields plus what the attribute loss needs (positions, labels, targets, importance)."""

    def __init__(self, fields: ClusterFields, x: Tensor, labels: Tensor, targets: Tensor,
                 weights: Tensor, bits_per: float) -> None:
        super().__init__()
        self.fields = fields
        for name, value in (("x", x), ("labels", labels), ("targets", targets), ("weights", weights),
                            ("columns", column_weights(targets.shape[1]))):
            self.register_buffer(name, value, persistent=False)
        self.bits_per = bits_per  # 1 / Gaussians: the rate in bits per Gaussian

    def rate_bits(self, info: Any) -> Tensor:
        return self.fields.rate_bits(info) * self.bits_per


def attribute_loss(model: nn.Module, batch: dict[str, Tensor], info: Any) -> tuple[Tensor, dict[str, Any]]:
    """Importance-weighted MSE of the normalised attributes (Tang et al. Eq. 3), columns weighted by group."""
    assert isinstance(model, AttributeFit)
    idx = batch["index"]
    pred = model.fields(model.x[idx], model.labels[idx], info)
    err = ((pred - model.targets[idx]) ** 2) @ model.columns
    w = model.weights[idx]
    loss = (w * err).sum() / w.sum()
    return loss, {"loss": loss.detach(), "mse": err.mean().detach()}


def _groups(module: nn.Module, lr: float) -> list[dict[str, Any]]:
    """Weights at lr, the rate models' log-scales 10x faster (they track the weight spread)."""
    rate = [p for n, p in module.named_parameters() if "rate_models" in n]
    rest = [p for n, p in module.named_parameters() if "rate_models" not in n]
    return [{"params": rest, "lr": lr, "name": "weights"}, {"params": rate, "lr": 10 * lr, "name": "rate"}]


def fit_attributes(fields: ClusterFields, x: Tensor, labels: Tensor, targets: Tensor, weights: Tensor,
                   plan: Plan, options: NeuralGSOptions, device: Any, show: bool) -> dict[str, Any]:
    """Fit the MLPs to their Gaussians' attributes through the Fitter's `rd` stage."""
    from fieldpress.engine import FitConfig, Fitter, Stage

    n = x.shape[0]
    model = AttributeFit(fields, x, labels, targets, weights, 1.0 / n)
    cfg = FitConfig(batch_size=min(n, MAX_BATCH), seed=options.seed, device=str(device),
                    steps_per_epoch=options.fit_steps, description="neuralgs fit",
                    checkpoint_every_s=math.inf)
    stage = Stage.rd(1, options.lr, plan.lmbda, lambda_warmup=0.3, schedule="cosine", min_lr_ratio=0.05)
    result = Fitter(model, _Gaussians(n), attribute_loss, cfg, [stage], param_groups=_groups,
                    show_progress=show).run()
    last = result.stages[-1] if result.stages else {}
    return {"steps": int(result.steps), "seconds": round(float(result.seconds), 3),
            **{k: _num(last[k]) for k in ("loss", "mse", "rate_bits") if k in last}}


def init_fields(fields: ClusterFields, labels: Tensor, targets: Tensor, weights: Tensor) -> None:
    """Start every cluster's MLP at its members' importance-weighted mean attributes (the output bias):
    the fit then learns only the variation inside a cluster."""
    k = fields.config.clusters
    w = weights.double()
    total = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, w).clamp_min(1e-12)
    sums = torch.zeros(k, targets.shape[1], dtype=torch.float64)
    sums.index_add_(0, labels, targets.double() * w[:, None])
    fields.set_output_bias((sums / total[:, None]).float())


def _num(v: Any) -> float:
    return round(float(v), 6)


# ----------------------------------------------------------------------------- fine-tune
class RenderFit(nn.Module):
    """The fields as a scene with fixed positions, for fitting renders."""

    def __init__(self, fields: ClusterFields, template: Any, x: Tensor, labels: Tensor,
                 mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.fields = fields
        self.template = template
        for name, value in (("x", x), ("labels", labels), ("mean", mean), ("std", std)):
            self.register_buffer(name, value, persistent=False)
        self.bits_per = 1.0 / x.shape[0]

    def scene(self, info: Any = None) -> Any:
        attrs = self.fields(self.x, self.labels, info) * self.std + self.mean
        return self.template.replace(**split_attributes(attrs))

    def rate_bits(self, info: Any) -> Tensor:
        return self.fields.rate_bits(info) * self.bits_per


def render_loss(model: nn.Module, batch: dict[str, Tensor], info: Any) -> tuple[Tensor, dict[str, Any]]:
    """(1 - 0.2) L1 + 0.2 (1 - SSIM) + FREQ_WEIGHT x L1 of Fourier amplitudes (Tang et al. Eq. 4-5)."""
    from fieldpress.scenes.lightgaussian.distill import render_views_loss

    assert isinstance(model, RenderFit)
    return render_views_loss(model.scene(info), batch, extra=_frequency_term)


def _frequency_term(rgb: Tensor, target: Tensor, cam: Any) -> Tensor:
    """FREQ_WEIGHT x the mean L1 distance of the two images' Fourier amplitudes, size-normalised."""
    freq = (torch.fft.rfft2(rgb, dim=(0, 1)).abs() - torch.fft.rfft2(target, dim=(0, 1)).abs()).abs()
    return FREQ_WEIGHT * (freq.mean() / math.sqrt(cam.width * cam.height))


def fine_tune(model: RenderFit, teacher: Any, cameras: Sequence[Any], plan: Plan, options: NeuralGSOptions,
              device: Any, show: bool) -> dict[str, Any]:
    """Fine-tune the MLPs (positions fixed) to the teacher's renders, rate still in the loss."""
    from fieldpress.engine import FitConfig, Fitter, Stage
    from fieldpress.scenes.lightgaussian.distill import TeacherFitConfig, TeacherViews

    if options.finetune_steps == 0:
        return {"steps": 0}
    views = [c.scaled(options.train_width) for c in cameras]
    data = TeacherViews(teacher, views, TeacherFitConfig(pseudo_views=False, seed=options.seed))
    cfg = FitConfig(batch_size=1, seed=options.seed, device=str(device),
                    steps_per_epoch=options.finetune_steps, description="neuralgs fine-tune",
                    checkpoint_every_s=math.inf)
    stage = Stage.rd(1, options.lr * FINETUNE_LR, plan.lmbda, warmup=0.2, schedule="cosine", min_lr_ratio=0.1)
    model.fields.straight_through = True
    try:
        result = Fitter(model, data, render_loss, cfg, [stage], param_groups=_groups,
                        show_progress=show).run()
    finally:
        model.fields.straight_through = False
    last = result.stages[-1] if result.stages else {}
    return {"steps": int(result.steps), "seconds": round(float(result.seconds), 3),
            **{k: _num(last[k]) for k in ("loss", "psnr", "rate_bits") if k in last}}


# ----------------------------------------------------------------------------- the run
@dataclass
class Encoding:
    """The encoded file contents, the scene they decode to, and what happened on the way."""

    encoded: Encoded
    decoded: Any
    gaussians_in: int
    gaussians_out: int
    prune: float
    reports: dict[str, Any]


def _prepare(scene: Any, scores: np.ndarray, plan: Plan, options: NeuralGSOptions) -> dict[str, Any]:
    """Prune, quantize positions as the file will, normalise attributes and cluster them."""
    from fieldpress.scenes.lightgaussian.position import dequantize_positions, make_grid, quantize_positions
    from fieldpress.scenes.lightgaussian.prune import prune_scene

    pruned, keep = prune_scene(scene, scores, plan.prune)
    grid = make_grid(pruned.means.numpy(), POSITION_BITS)
    means = dequantize_positions(quantize_positions(pruned.means.numpy(), grid), grid).astype(np.float32)
    attrs = scene_attributes(pruned)
    mean = attrs.astype(np.float64).mean(axis=0)
    std = np.maximum(attrs.astype(np.float64).std(axis=0), 1e-3)
    norm = ((attrs - mean) / std).astype(np.float32)
    importance = np.asarray(scores, np.float64)[keep]
    importance = importance / max(float(importance.mean()), 1e-30)
    weights = (0.1 + np.minimum(importance, 20.0)).astype(np.float32)
    # cluster in the loss's metric (groups weighted alike), so each cluster is homogeneous in geometry too
    metric = np.sqrt(column_weights(norm.shape[1]).numpy() * norm.shape[1]).astype(np.float32)
    labels, _ = kmeans(norm * metric, plan.config.clusters, weights, seed=options.seed)
    grid_means = make_grid(means, POSITION_BITS)  # the grid the file will carry (over the coded positions)
    return {"pruned": pruned, "means": means, "x": unit_positions(means, grid_means).astype(np.float32),
            "norm": norm, "mean": mean, "std": std, "weights": weights, "labels": labels}


def _encode(prep: dict[str, Any], fields: ClusterFields, scene: Any, source: dict[str, Any],
            plan: Plan, options: NeuralGSOptions) -> Encoded:
    src = {**source, "gaussians": scene.n, "sh_degree": scene.sh_degree}
    pruned = prep["pruned"]
    enc = encode_neuralgs(prep["means"], POSITION_BITS, prep["labels"], fields, (prep["mean"], prep["std"]),
                          pruned.sh_degree, dict(pruned.extras), dict(pruned.meta), src)
    enc.header["pipeline"] = {"prune": plan.prune, "seed": options.seed, "lambda": plan.lmbda,
                              "fit_steps": options.fit_steps, "finetune_steps": options.finetune_steps,
                              **{k: v for k, v in plan.budget.items() if k != "target_bytes"}}
    return enc


def encode_pipeline(scene: Any, options: NeuralGSOptions, cameras: Sequence[Any] | None = None,
                    device: Any = "cpu", progress: Progress | None = None,
                    source: dict[str, Any] | None = None, show_progress: bool = False) -> Encoding:
    """Run every stage on a loaded GaussianScene; returns the encoded contents and their decoded scene."""
    from fieldpress.scenes.lightgaussian.pipeline import significance_cameras
    from fieldpress.scenes.lightgaussian.significance import significance

    options.validate()
    log = progress or (lambda _: None)
    torch.manual_seed(options.seed)
    scene = scene.detach().to("cpu")
    if scene.n == 0:
        raise InputError("the scene has no Gaussians to compress")
    kept = scene.n - min(int(round(options.prune * scene.n)), scene.n - 1)  # what pruning will keep
    if options.clusters is not None and options.clusters > kept:
        raise InputError(f"--clusters {options.clusters} is more than the {kept} Gaussians kept after "
                         "pruning")
    reports: dict[str, Any] = {}
    t = time.perf_counter()
    log("significance")
    scores = significance(scene, significance_cameras(scene, cameras, options))
    plan = plan_sizes(scene, scores, options)
    prep = _prepare(scene, scores, plan, options)
    reports["stage_seconds"] = {"prepare": round(time.perf_counter() - t, 3)}
    fields = ClusterFields(plan.config, seed=options.seed)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(prep[k])) for k in ("x", "norm", "weights")}
    labels = torch.from_numpy(prep["labels"])
    init_fields(fields, labels, tensors["norm"], tensors["weights"])
    log(f"fitting {plan.config.clusters} MLPs")
    reports["fit"] = fit_attributes(fields, tensors["x"], labels, tensors["norm"], tensors["weights"], plan,
                                    options, device, show_progress)
    if options.finetune_steps:
        log("render fine-tune")
        fields._cache = None
        model = RenderFit(fields, prep["pruned"].detach(), tensors["x"], labels,
                          torch.from_numpy(prep["mean"]).float(), torch.from_numpy(prep["std"]).float())
        train_cams = cameras if cameras else _orbit(scene, options)
        reports["finetune"] = fine_tune(model, scene, train_cams, plan, options, device, show_progress)
    fields.eval()
    encoded = _encode(prep, fields, scene, source or {}, plan, options)
    coarsened = 0
    while options.target_bytes is not None and _size(encoded) > options.target_bytes:
        if coarsened >= 6:
            raise InputError(f"cannot reach {options.target_bytes:,} bytes with these MLPs (file "
                             f"{_size(encoded):,} bytes: {encoded.header['rate']})")
        fields.coarsen(1)  # doubling every step: fewer bits per weight, coarser attributes
        coarsened += 1
        encoded = _encode(prep, fields, scene, source or {}, plan, options)
    reports["plan"] = {"clusters": plan.config.clusters, "hidden": plan.config.hidden, "prune": plan.prune,
                       "lambda": plan.lmbda, "coarsened": coarsened, **plan.budget}
    decoded = decode_streams(encoded.header, encoded.streams)
    return Encoding(encoded, decoded, scene.n, decoded.n, plan.prune, reports)


def _orbit(scene: Any, options: NeuralGSOptions) -> list[Any]:
    from fieldpress.scenes.cameras import orbit

    return orbit(scene, options.significance_views, width=options.train_width)


def _size(encoded: Encoded) -> int:
    return len(encode_file(NEURALGS, encoded))


def rate_split(encoded: Encoded, size: int) -> dict[str, int]:
    """Bytes of the file by part: positions, cluster labels, MLP weights, the rest (header, table, extras)."""
    rate = dict(encoded.header.get("rate", {}))
    return {**rate, "rest": size - sum(rate.values())}


def compress(input: Any, options: NeuralGSOptions, device: Any = "cpu", *,
             cameras: Sequence[Any] | None = None, progress: Progress | None = None,
             source: dict[str, Any] | None = None, show_progress: bool = False) -> Result:
    """Compress a scene file (path) or a loaded GaussianScene into NeuralGS `.fpg` bytes; metrics are
    measured on the scene those bytes decode to."""
    from fieldpress.scenes.lightgaussian.pipeline import eval_cameras, evaluate, load_input, render_views

    started = time.perf_counter()
    options.validate()
    scene, loaded_from, path, _ = load_input(input, options.spz_axes)
    source = {**loaded_from, **(source or {})}
    run = encode_pipeline(scene, options, cameras, device, progress, source, show_progress)
    data = encode_file(NEURALGS, run.encoded)
    input_bytes = source.get("bytes")
    metrics: dict[str, Any] = {
        "codec": "neuralgs", "input_bytes": input_bytes, "output_bytes": len(data),
        "ratio": round(input_bytes / len(data), 3) if input_bytes else None,
        "gaussians_in": run.gaussians_in, "gaussians_out": run.gaussians_out,
        "bytes_per_gaussian": round(len(data) / max(run.gaussians_in, 1), 3),
        "sh_degree_in": scene.sh_degree, "sh_degree_out": run.decoded.sh_degree, "prune": run.prune,
        "rate_split": rate_split(run.encoded, len(data)), "render_psnr": None, **run.reports}
    if options.evaluate:
        if progress:
            progress("evaluation")
        cams = eval_cameras(scene, cameras, options.eval_views, options.eval_width)
        metrics.update(evaluate(render_views(scene, cams, device), run.decoded, cams, device))
        metrics["eval_views"] = len(cams)
    return Result(NEURALGS, data, metrics, input=path, seconds=time.perf_counter() - started,
                  device=str(device))


def options_replace(options: NeuralGSOptions, **changes: Any) -> NeuralGSOptions:
    """A copy of the options with `changes` (for benches and tests)."""
    return dataclasses.replace(options, **changes)

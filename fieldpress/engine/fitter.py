"""The Fitter: one training loop for every fit in fieldpress (videos, images, scenes).

It owns seeding, device and precision, the stages (fit, prune + fine-tune, QAT), warmup + cosine
schedules, Adam, time and epoch budgets, progress, checkpoints with exact resume, Ctrl-C, the JSONL
metrics log and data parallelism under torchrun. The hot loop reads nothing back from the device
except at log intervals, so on a GPU it adds no host syncs to the model's own (under torchrun the
ranks agree on Ctrl-C each step through a host-side gloo all-reduce, also without a device sync).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fieldpress.codec.prunable import enforce_masks, mask_pairs
from fieldpress.engine import distributed as ddp
from fieldpress.engine.budget import BudgetPlan
from fieldpress.engine.checkpoint import (
    checkpoint_dir,
    flatten_optimizer,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from fieldpress.engine.config import (
    DataSource,
    EvaluateFn,
    FitConfig,
    FitResult,
    LossFn,
    ParamGroupsFn,
    Stage,
    StepInfo,
    loss_takes_info,
)
from fieldpress.engine.metrics_log import MetricsLog, log_path
from fieldpress.engine.rng import EpochOrder, capture_rng, restore_rng, seed_everything
from fieldpress.engine.schedule import lr_factor
from fieldpress.engine.stages import STAGE_KINDS, StageKind
from fieldpress.errors import InputError, ResumeError

BUDGET_CHECK_EVERY = 8  # steps between the (collective) time-budget checks under DDP
DDP_SIGINT_GRACE_S = 5.0  # under torchrun a SIGINT this soon after the first is torchrun forwarding it
PROGRESS_EVERY_S = 0.2  # the bar is advanced at most this often (rich's lock and redraws are not free)


def _late_sigint(previous: Any, until: float) -> Any:
    """The SIGINT handler left behind by a fit interrupted under torchrun: torchrun's forwarded copy of
    the Ctrl-C may land after the fit has stopped, so SIGINTs before `until` are dropped; after it the
    previous handler is back."""

    def handler(signum: int, frame: Any) -> None:
        if time.monotonic() < until:
            return
        signal.signal(signal.SIGINT, previous)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    return handler


def _normalise(obj: Any) -> Any:
    """JSON round trip, so tuples/lists and int/float keys compare as they will after loading."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _diff_keys(a: Any, b: Any) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [] if a == b else ["<value>"]


def _resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    from fieldpress.runtime import resolve_device

    return resolve_device(name)


class Fitter:
    """Fit `model` to `data` with `loss_fn` through `stages`; docs/ENGINE.md has the stage-kind contract.

    `budget` is the time-budget plan the stages were sized by (`fieldpress.engine.budget`), stored in
    each checkpoint's meta so `--resume` reuses it instead of probing again.
    """

    def __init__(self, model: nn.Module, data: DataSource, loss_fn: LossFn, config: FitConfig,
                 stages: Sequence[Stage], output: str | os.PathLike[str] | None = None,
                 signature: dict[str, Any] | None = None, param_groups: ParamGroupsFn | None = None,
                 evaluate: EvaluateFn | None = None, show_progress: bool = True,
                 budget: BudgetPlan | None = None) -> None:
        if not stages:
            raise InputError("a fit needs at least one stage")
        if len(data) < 1:
            raise InputError("nothing to fit: the data source is empty")
        self.model = model
        self.data = data
        self.loss_fn = loss_fn
        self._loss_takes_info = loss_takes_info(loss_fn)  # decided once: loss_fn(model, batch[, info])
        self.config = config
        self.stages = list(stages)
        self.output = None if output is None else Path(output)
        self.signature = _normalise(signature or {})
        self.param_groups = param_groups
        self.evaluate = evaluate
        self.show_progress = show_progress
        self.budget = budget  # recorded in the checkpoint's meta, so a resumed fit reuses the plan
        self.masks: dict[str, Tensor] | None = None
        self.stage_state: dict[str, Any] = {}
        self._interrupt = False

    # ------------------------------------------------------------------ plan
    @property
    def steps_per_epoch(self) -> int:
        cfg = self.config
        return cfg.steps_per_epoch or math.ceil(len(self.data) / cfg.batch_size)

    def _items_per_epoch(self) -> int:
        cfg = self.config
        return cfg.steps_per_epoch * cfg.batch_size if cfg.steps_per_epoch else len(self.data)

    def _plan(self) -> dict[str, Any]:
        return _normalise({"config": self.config.plan(), "stages": [s.to_dict() for s in self.stages],
                           "items": len(self.data)})

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> FitResult:
        """Run every stage (or continue from `<output>.ckpt/` with resume=True) and return the result."""
        cfg = self.config
        self._interrupt = False
        device = _resolve_device(cfg.device)
        precision = cfg.precision
        if precision == "bf16" and device.type != "cuda":
            warnings.warn("bf16 autocast is only used on CUDA; fitting in fp32 on the CPU", stacklevel=2)
            precision = "fp32"
        self.dist = ddp.setup(device)
        if self.dist.world_size > cfg.batch_size:
            ddp.teardown(self.dist)
            raise InputError(f"the global batch ({cfg.batch_size}) is smaller than the number of ranks "
                             f"({self.dist.world_size}): every rank needs at least one item")
        self.device = ddp.local_device(device, self.dist)
        self.autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if precision == "bf16"
                         else contextlib.nullcontext())
        self.precision = precision
        self.ckpt = checkpoint_dir(self.output) if self.output is not None else None
        main = self.dist.is_main
        self.log = MetricsLog(log_path(self.output) if (self.output is not None and main) else None)
        try:
            self.model.to(self.device)
            self.model.train()
            if resume:
                restored = self._load(self.device)
            else:
                seed_everything(cfg.seed)
                restored = None
            ddp.broadcast_model(self.model, self.dist)
            self.log.start(restored["meta"]["global_step"] if restored else None)
            with self._sigint_guard():
                return self._loop(restored)
        finally:
            ddp.teardown(self.dist)

    # ------------------------------------------------------------------ resume
    def _load(self, device: torch.device) -> dict[str, Any]:
        if self.ckpt is None:
            raise ResumeError("cannot resume: the fit has no output path to find a checkpoint beside")
        tensors, meta = load_checkpoint(self.ckpt)
        if meta.get("signature") != self.signature:
            keys = _diff_keys(meta.get("signature"), self.signature)
            raise ResumeError(f"cannot resume: the flags differ from the checkpoint's ({', '.join(keys)}); "
                              "rerun without --resume to start over")
        if meta.get("plan") != self._plan():
            keys = _diff_keys(meta.get("plan"), self._plan())
            raise ResumeError("cannot resume: the fit plan differs from the checkpoint's "
                              f"({', '.join(keys)})")
        return {"tensors": tensors, "meta": meta}

    def _restore_model(self, tensors: dict[str, Tensor]) -> None:
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ResumeError(f"cannot resume: the checkpoint does not fit this model: {first}") from None

    # ------------------------------------------------------------------ Ctrl-C
    @contextlib.contextmanager
    def _sigint_guard(self):  # noqa: ANN202
        """First Ctrl-C: finish the step, checkpoint, raise KeyboardInterrupt. Second: raise at once.
        Under torchrun a terminal's Ctrl-C reaches each rank twice (from the terminal, then forwarded
        by torchrun), so a second SIGINT within DDP_SIGINT_GRACE_S of the first is not a second Ctrl-C;
        the ranks agree on stopping after the same step (`_after_step`)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        first = [0.0]

        def handler(signum: int, frame: Any) -> None:
            if self._interrupt:
                if self.dist.enabled and time.monotonic() - first[0] < DDP_SIGINT_GRACE_S:
                    return
                raise KeyboardInterrupt
            self._interrupt, first[0] = True, time.monotonic()

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            late = self._interrupt and self.dist.enabled and first[0] > 0
            signal.signal(signal.SIGINT, _late_sigint(previous, first[0] + DDP_SIGINT_GRACE_S) if late
                          else previous)

    # ------------------------------------------------------------------ optimizer
    def _make_optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        groups = [dict(g) for g in self.param_groups(self.model, stage.lr)] if self.param_groups else []
        seen = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in trainable if id(p) not in seen]
        if rest:
            groups.append({"params": rest, "lr": stage.lr})
        for g in groups:
            g["params"] = list(g["params"])
            g.setdefault("lr", stage.lr)
            g["base_lr"] = g["lr"]
        self.params = [p for g in groups for p in g["params"]]
        fused = self.device.type == "cuda" and all(p.is_cuda and p.is_floating_point() for p in self.params)
        kwargs: dict[str, Any] = {"fused": True} if fused else {}
        return torch.optim.Adam(groups, lr=stage.lr, betas=tuple(self.config.betas),
                                weight_decay=self.config.weight_decay, **kwargs)

    # ------------------------------------------------------------------ checkpoint
    def _save(self, pos: dict[str, Any], optimizer: torch.optim.Optimizer | None,
              acc: dict[str, Tensor], acc_steps: int) -> None:
        if self.ckpt is None or not self.dist.is_main:
            return
        tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_meta = None
        if optimizer is not None:
            t, optim_meta = flatten_optimizer(optimizer)
            tensors.update(t)
        rng_t, rng_s = capture_rng()
        tensors.update(rng_t)
        for k, m in (self.masks or {}).items():
            tensors[f"mask.{k}"] = m
        for k, v in acc.items():
            tensors[f"acc.{k}"] = v
        meta = {
            "signature": self.signature, "plan": self._plan(), "position": pos,
            "global_step": self.global_step, "seconds": self._elapsed(), "stage_results": self.results,
            "rng": rng_s, "optimizer": optim_meta, "acc_steps": acc_steps, "stage_state": self.stage_state,
            "world_size": self.dist.world_size, "torch": torch.__version__, "budget_hit": self.budget_hit,
            "budget": self.budget.to_dict() if self.budget is not None else None,
        }
        save_checkpoint(self.ckpt, tensors, _normalise(meta))
        self._last_ckpt = time.perf_counter()

    # ------------------------------------------------------------------ helpers
    def _elapsed(self) -> float:
        return self._seconds_before + (time.perf_counter() - self._t0)

    def _budget_over(self) -> bool:
        minutes = self.config.minutes
        return minutes is not None and self._elapsed() >= minutes * 60.0

    def _index_device(self) -> torch.device | None:
        """The data source's `device` when it keeps its data on CUDA: indices are made there once per
        permutation, so indexing GPU-resident frames never copies indices (and syncs) step by step."""
        dev = getattr(self.data, "device", None)
        return torch.device(dev) if dev is not None and torch.device(dev).type == "cuda" else None

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.device
        return {k: (v.to(dev, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in batch.items()}

    def _accumulate(self, acc: dict[str, Tensor], loss: Tensor, metrics: dict[str, Any]) -> None:
        for key, value in (("loss", loss), *metrics.items()):
            if isinstance(value, Tensor):
                value = value.detach()
                if value.numel() != 1:
                    continue
                value = value.reshape(())
            elif not isinstance(value, (int, float)):
                continue
            if key not in acc:
                acc[key] = torch.zeros((), dtype=torch.float64, device=self.device)
            acc[key] += value

    def _summarise(self, acc: dict[str, Tensor], steps: int) -> dict[str, float]:
        """Mean of each accumulated metric over `steps` (and over ranks): the one host sync per log."""
        if not acc or steps == 0:
            return {}
        keys = sorted(acc)
        stacked = torch.stack([acc[k] for k in keys])
        stacked = ddp.all_reduce_sum(stacked, self.dist) / self.dist.world_size
        values = (stacked / steps).tolist()
        return dict(zip(keys, values))

    def _run_eval(self) -> dict[str, float]:
        if self.evaluate is None or not self.dist.is_main:
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.evaluate(self.model)
        finally:
            self.model.train(was_training)
        return {k: float(v) for k, v in out.items()}

    # ------------------------------------------------------------------ the loop
    def _loop(self, restored: dict[str, Any] | None) -> FitResult:
        spe = self.steps_per_epoch
        self._t0 = time.perf_counter()
        self._last_ckpt = self._t0
        self.results: list[dict[str, Any]] = []
        self.global_step = 0
        self.budget_hit = False
        self._seconds_before = 0.0
        pos = {"stage": 0, "epoch": 0, "step": 0, "begun": False}
        self.masks, self.stage_state = None, {}
        if restored is not None:
            tensors, meta = restored["tensors"], restored["meta"]
            pos = dict(meta["position"])
            self.results = list(meta["stage_results"])
            self.global_step = int(meta["global_step"])
            self._seconds_before = float(meta["seconds"])
            self.budget_hit = bool(meta.get("budget_hit", False))
            self.stage_state = dict(meta.get("stage_state") or {})
            masks = {k[len("mask."):]: v.to(torch.bool) for k, v in tensors.items() if k.startswith("mask.")}
            self.masks = masks or None
            if not pos["begun"]:
                self._restore_model(tensors)
        total = sum(s.epochs * spe for s in self.stages)
        done = sum(s.epochs * spe for s in self.stages[: pos["stage"]]) + pos["epoch"] * spe + pos["step"]
        from fieldpress.runtime import make_progress

        self.progress = make_progress(self.show_progress and self.dist.is_main)
        with self.progress:
            self.task = self.progress.add_task(self.config.description, total=max(total, 1), completed=done,
                                               info="")
            for si in range(pos["stage"], len(self.stages)):
                if self.budget_hit:
                    break
                here = restored if (restored is not None and si == pos["stage"]) else None
                self._run_stage(si, here)
        return FitResult(model=self.model, stages=self.results, seconds=self._elapsed(),
                         steps=self.global_step, masks=self.masks, interrupted=self.budget_hit)

    def _run_stage(self, si: int, restored: dict[str, Any] | None) -> None:
        """Run stage `si` from its start, or from the checkpoint position when `restored` is given."""
        run = self._start_stage(si, restored)
        while run.done < run.total and not run.stop:
            self._run_epoch(run)
        self._end_stage(run)

    def _start_stage(self, si: int, restored: dict[str, Any] | None) -> _StageRun:
        """Begin the stage's kind, build its optimizer and restore the checkpointed part of the stage."""
        stage = self.stages[si]
        kind = STAGE_KINDS[stage.kind]
        pos = restored["meta"]["position"] if restored else {"epoch": 0, "step": 0, "begun": False}
        resumed = bool(restored and pos["begun"])
        kind.begin(self, stage, resumed=resumed)
        optimizer = self._make_optimizer(stage)
        acc: dict[str, Tensor] = {}
        acc_steps = 0
        if restored:
            tensors, meta = restored["tensors"], restored["meta"]
            if resumed:
                self._restore_model(tensors)
                restore_optimizer(optimizer, tensors, meta["optimizer"])
                acc = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("acc.")}
                acc_steps = int(meta["acc_steps"])
            restore_rng(tensors, meta["rng"])
        if len(self.results) <= si:
            self.results.append({"kind": stage.kind, "epochs": stage.epochs})
        spe = self.steps_per_epoch
        now = time.perf_counter()
        run = _StageRun(si=si, stage=stage, kind=kind, optimizer=optimizer,
                        pairs=mask_pairs(self.model, self.masks) if self.masks else [],
                        total=stage.epochs * spe, done=pos["epoch"] * spe + pos["step"],
                        seconds_before=float(pos.get("stage_seconds", 0.0)), t0=now, shown=now,
                        acc=acc, acc_steps=acc_steps, lr=stage.lr)
        label = f"{self.config.description} [{stage.kind} {si + 1}/{len(self.stages)}]"
        self.progress.update(self.task, description=label)
        return run

    def _run_epoch(self, run: _StageRun) -> None:
        """The rest of the current epoch (from the checkpointed step when resuming), then log/eval."""
        cfg, spe, stage = self.config, self.steps_per_epoch, run.stage
        epoch, first = divmod(run.done, spe)
        order = EpochOrder(len(self.data), cfg.seed, run.si, epoch, self._index_device())
        items = self._items_per_epoch()
        for step in range(first, spe):
            factor = lr_factor(run.done, run.total, stage.warmup, stage.schedule, stage.min_lr_ratio)
            run.lr = stage.lr * factor
            for g in run.optimizer.param_groups:
                g["lr"] = g["base_lr"] * (run.lr / stage.lr)
            info = StepInfo(run.si, stage.kind, run.done / run.total, self.global_step, run.done, run.total)
            lo = step * cfg.batch_size
            self._step(run, order.take(lo, min(lo + cfg.batch_size, items)), info)
            run.acc_steps += 1
            run.done += 1
            self.global_step += 1
            run.pending += 1
            self._after_step(run, step)
            if run.stop:
                break
        self.progress.update(self.task, advance=run.pending)
        run.pending = 0
        if run.stop or run.done == run.total or (epoch + 1) % cfg.log_every == 0:
            run.last = self._summarise(run.acc, run.acc_steps) or run.last
            run.acc, run.acc_steps = {}, 0
            self._log_train(run.si, stage, run.done / spe, run.last, run.lr)
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and run.done < run.total and not run.stop:
            ev = self._run_eval()
            if ev:
                self.log.write({"event": "eval", "stage": run.si, "kind": stage.kind, "epoch": epoch + 1,
                                "step": self.global_step, **ev, "seconds": round(self._elapsed(), 3)})

    def _after_step(self, run: _StageRun, step: int) -> None:
        """Per-step bookkeeping: progress bar, Ctrl-C, checkpoint cadence, the time budget (run.stop)."""
        cfg, dist, spe = self.config, self.dist, self.steps_per_epoch
        if time.perf_counter() - run.shown >= PROGRESS_EVERY_S:
            self.progress.update(self.task, advance=run.pending)
            run.pending, run.shown = 0, time.perf_counter()
        if ddp.any_rank_host(self._interrupt, dist):  # every rank stops after the same step
            self.progress.update(self.task, advance=run.pending)
            self._save(run.position(spe), run.optimizer, run.acc, run.acc_steps)  # rank 0 only
            ddp.host_barrier(dist)  # torchrun stops the job at the first rank's exit: not before the save
            raise KeyboardInterrupt
        every = cfg.checkpoint_every_steps
        if (time.perf_counter() - self._last_ckpt >= cfg.checkpoint_every_s
                or (every and self.global_step % every == 0)):
            self._save(run.position(spe), run.optimizer, run.acc, run.acc_steps)
        if not dist.enabled:
            run.stop = self._budget_over()
        elif (step + 1) % BUDGET_CHECK_EVERY == 0 or step + 1 == spe:
            run.stop = ddp.any_rank(self._budget_over(), self.device, dist)

    def _end_stage(self, run: _StageRun) -> None:
        """End the kind, evaluate, report and log the stage, and checkpoint the next stage's start."""
        si, stage, spe, stop = run.si, run.stage, self.steps_per_epoch, run.stop
        facts = run.kind.end(self, stage)
        ev = self._run_eval()
        extra = {**facts, **({"eval": ev} if ev else {}), **({"stopped_by_budget": True} if stop else {})}
        self.results[si].update({"epochs_done": run.done / spe, "steps": run.done,
                                 "seconds": round(run.seconds(), 3), "lr_end": run.lr, **run.last, **extra})
        self.budget_hit = self.budget_hit or stop
        if stop and self.show_progress and self.dist.is_main:
            skipped = len(self.stages) - si - 1
            self.progress.console.print(f"time budget of {self.config.minutes:g} min reached: ended the "
                                        f"{stage.kind} stage after {run.done}/{run.total} steps, "
                                        f"skipped {skipped} stage(s)")
        self.log.write({"event": "stage_end", "stage": si, "kind": stage.kind, "epoch": run.done / spe,
                        "step": self.global_step, **extra, "seconds": round(self._elapsed(), 3)})
        nxt = len(self.stages) if stop else si + 1
        self._save({"stage": nxt, "epoch": 0, "step": 0, "begun": False}, None, {}, 0)

    def _log_train(self, si: int, stage: Stage, epoch: float, last: dict[str, float], lr: float) -> None:
        if not last:
            return
        epoch = int(epoch) if float(epoch).is_integer() else round(epoch, 4)
        self.log.write({"event": "train", "stage": si, "kind": stage.kind, "epoch": epoch,
                        "step": self.global_step, **last, "lr": lr, "seconds": round(self._elapsed(), 3)})
        info = f"loss {last['loss']:.4g}" + (f"  psnr {last['psnr']:.2f}" if "psnr" in last else "")
        self.progress.update(self.task, info=info)

    def _step(self, run: _StageRun, idx: Tensor, info: StepInfo) -> None:
        """One optimisation step on the global batch `idx` (this rank's share of it under DDP)."""
        dist = self.dist
        local = torch.tensor_split(idx, dist.world_size)[dist.rank] if dist.enabled else idx
        if local.numel():
            batch = self._to_device(self.data.batch(local))
            with self.autocast:
                if self._loss_takes_info:
                    loss, metrics = self.loss_fn(self.model, batch, info)
                else:
                    loss, metrics = self.loss_fn(self.model, batch)
                loss, metrics = run.kind.adjust_loss(self, run.stage, info, loss, metrics)
            if dist.enabled:
                (loss * (local.numel() / idx.numel())).backward()
            else:
                loss.backward()
            self._accumulate(run.acc, loss, metrics)
        ddp.all_reduce_grads(self.params, dist)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        enforce_masks(run.pairs)
        run.kind.on_step(self, run.stage, info)


@dataclasses.dataclass
class _StageRun:
    """The moving parts of one running stage, shared by the loop's helpers."""

    si: int
    stage: Stage
    kind: StageKind
    optimizer: torch.optim.Optimizer
    pairs: list[tuple[Tensor, Tensor]]
    total: int  # steps in the stage
    done: int  # steps of the stage done so far
    seconds_before: float  # the stage's seconds before a resume
    t0: float
    shown: float  # when the progress bar was last advanced
    acc: dict[str, Tensor] = dataclasses.field(default_factory=dict)
    acc_steps: int = 0
    lr: float = 0.0
    last: dict[str, float] = dataclasses.field(default_factory=dict)
    stop: bool = False
    pending: int = 0  # steps not yet shown on the progress bar

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def position(self, spe: int) -> dict[str, Any]:
        """The checkpoint position of the step just done."""
        return {"stage": self.si, "epoch": self.done // spe, "step": self.done % spe, "begun": True,
                "stage_seconds": self.seconds()}

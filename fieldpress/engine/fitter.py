"""The Fitter: one training loop for every fit in fieldpress (videos, images, scenes).

It owns seeding, device and precision, the stages (fit, prune + fine-tune, QAT), warmup + cosine
schedules, Adam, time and epoch budgets, progress, checkpoints with exact resume, Ctrl-C, the JSONL
metrics log and data parallelism under torchrun. The hot loop reads nothing back from the device
except at log intervals, so on a GPU it adds no host syncs to the model's own.
"""

from __future__ import annotations

import contextlib
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
)
from fieldpress.engine.metrics_log import MetricsLog, log_path
from fieldpress.engine.rng import EpochOrder, capture_rng, restore_rng, seed_everything
from fieldpress.engine.schedule import lr_factor
from fieldpress.engine.stages import STAGE_KINDS
from fieldpress.errors import InputError, ResumeError

BUDGET_CHECK_EVERY = 8  # steps between the (collective) time-budget checks under DDP
PROGRESS_EVERY_S = 0.2  # the bar is advanced at most this often (rich's lock and redraws are not free)


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
    """Fit `model` to `data` with `loss_fn` through `stages`; see docs/DEVELOPING.md for the contract."""

    def __init__(self, model: nn.Module, data: DataSource, loss_fn: LossFn, config: FitConfig,
                 stages: Sequence[Stage], output: str | os.PathLike[str] | None = None,
                 signature: dict[str, Any] | None = None, param_groups: ParamGroupsFn | None = None,
                 evaluate: EvaluateFn | None = None, show_progress: bool = True) -> None:
        if not stages:
            raise InputError("a fit needs at least one stage")
        if len(data) < 1:
            raise InputError("nothing to fit: the data source is empty")
        self.model = model
        self.data = data
        self.loss_fn = loss_fn
        self.config = config
        self.stages = list(stages)
        self.output = None if output is None else Path(output)
        self.signature = _normalise(signature or {})
        self.param_groups = param_groups
        self.evaluate = evaluate
        self.show_progress = show_progress
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
        """First Ctrl-C: finish the step, checkpoint, raise KeyboardInterrupt. Second: raise at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._interrupt:
                raise KeyboardInterrupt
            self._interrupt = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

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
        cfg, dist, stage = self.config, self.dist, self.stages[si]
        spe, items, n_items = self.steps_per_epoch, self._items_per_epoch(), len(self.data)
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
        pairs = mask_pairs(self.model, self.masks) if self.masks else []
        seconds_before = float(pos.get("stage_seconds", 0.0))
        stage_t0 = time.perf_counter()
        stage_total = stage.epochs * spe
        done = pos["epoch"] * spe + pos["step"]
        last: dict[str, float] = {}
        stop = False
        lr = stage.lr
        pending, shown = 0, time.perf_counter()

        def position() -> dict[str, Any]:
            return {"stage": si, "epoch": done // spe, "step": done % spe, "begun": True,
                    "stage_seconds": seconds_before + time.perf_counter() - stage_t0}

        label = f"{cfg.description} [{stage.kind} {si + 1}/{len(self.stages)}]"
        self.progress.update(self.task, description=label)
        while done < stage_total and not stop:
            epoch, first = divmod(done, spe)
            order = EpochOrder(n_items, cfg.seed, si, epoch, self._index_device())
            for step in range(first, spe):
                lr = stage.lr * lr_factor(done, stage_total, stage.warmup, stage.schedule, stage.min_lr_ratio)
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * (lr / stage.lr)
                lo = step * cfg.batch_size
                self._step(optimizer, order.take(lo, min(lo + cfg.batch_size, items)), acc, pairs)
                acc_steps += 1
                done += 1
                self.global_step += 1
                pending += 1
                if time.perf_counter() - shown >= PROGRESS_EVERY_S:
                    self.progress.update(self.task, advance=pending)
                    pending, shown = 0, time.perf_counter()
                if self._interrupt:
                    self.progress.update(self.task, advance=pending)
                    self._save(position(), optimizer, acc, acc_steps)
                    raise KeyboardInterrupt
                every = cfg.checkpoint_every_steps
                if (time.perf_counter() - self._last_ckpt >= cfg.checkpoint_every_s
                        or (every and self.global_step % every == 0)):
                    self._save(position(), optimizer, acc, acc_steps)
                if not dist.enabled:
                    stop = self._budget_over()
                elif (step + 1) % BUDGET_CHECK_EVERY == 0 or step + 1 == spe:
                    stop = ddp.any_rank(self._budget_over(), self.device, dist)
                if stop:
                    break
            self.progress.update(self.task, advance=pending)
            pending = 0
            if stop or done == stage_total or (epoch + 1) % cfg.log_every == 0:
                last = self._summarise(acc, acc_steps) or last
                acc, acc_steps = {}, 0
                self._log_train(si, stage, done / spe, last, lr)
            if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and done < stage_total and not stop:
                ev = self._run_eval()
                if ev:
                    self.log.write({"event": "eval", "stage": si, "kind": stage.kind, "epoch": epoch + 1,
                                    "step": self.global_step, **ev, "seconds": round(self._elapsed(), 3)})
        facts = kind.end(self, stage)
        ev = self._run_eval()
        extra = {**facts, **({"eval": ev} if ev else {}), **({"stopped_by_budget": True} if stop else {})}
        self.results[si].update({"epochs_done": done / spe, "steps": done,
                                 "seconds": round(seconds_before + time.perf_counter() - stage_t0, 3),
                                 "lr_end": lr, **last, **extra})
        self.budget_hit = self.budget_hit or stop
        if stop and self.show_progress and self.dist.is_main:
            skipped = len(self.stages) - si - 1
            self.progress.console.print(f"time budget of {self.config.minutes:g} min reached: ended the "
                                        f"{stage.kind} stage after {done}/{stage_total} steps, "
                                        f"skipped {skipped} stage(s)")
        self.log.write({"event": "stage_end", "stage": si, "kind": stage.kind, "epoch": done / spe,
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

    def _step(self, optimizer: torch.optim.Optimizer, idx: Tensor, acc: dict[str, Tensor],
              pairs: list[tuple[Tensor, Tensor]]) -> None:
        """One optimisation step on the global batch `idx` (this rank's share of it under DDP)."""
        dist = self.dist
        local = torch.tensor_split(idx, dist.world_size)[dist.rank] if dist.enabled else idx
        if local.numel():
            batch = self._to_device(self.data.batch(local))
            with self.autocast:
                loss, metrics = self.loss_fn(self.model, batch)
            if dist.enabled:
                (loss * (local.numel() / idx.numel())).backward()
            else:
                loss.backward()
            self._accumulate(acc, loss, metrics)
        ddp.all_reduce_grads(self.params, dist)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        enforce_masks(pairs)

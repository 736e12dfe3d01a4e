"""fieldpress.engine: the Fitter, one training loop for every fit (stages, schedules, budgets,
checkpoints with exact resume, Ctrl-C, JSONL log, DDP under torchrun).

    from fieldpress.engine import FitConfig, Fitter, Stage

    stages = [Stage("fit", 300, 1e-3, warmup=0.1),                    # warmup from 0.1 x lr, cosine
              Stage.prune(50, 5e-4, amount=0.4),                      # global magnitude prune + fine-tune
              Stage.qat(30, 1e-4, bits=8)]                            # fake-quant, removed at the end
    # the same with the kinds' option dataclasses: Stage("prune", 50, 5e-4, options=PruneOptions(0.4))
    result = Fitter(model, data, loss_fn, FitConfig(batch_size=2, device="cuda", precision="bf16",
                    minutes=30), stages, output="clip.fpv", signature=vars(args)).run(resume=args.resume)
    result.masks            # {weight name: bool mask (True = kept)} for compress_state_dict(masks=...)
    result.stages[-1]["axes"]   # the QAT axis of every weight, for compress_state_dict(axes=...)

`data` has `__len__` and `batch(indices) -> dict of tensors`; `loss_fn(model, batch) -> (mean loss,
{"psnr": ...})`, or `loss_fn(model, batch, info)` to get the StepInfo (stage progress, global step).
Checkpoints go to `clip.fpv.ckpt/`, the metrics log to `clip.fpv.log.jsonl`. `--minutes` budgets are
planned by `plan_budget` (one step probe; the plan is kept in the checkpoint). See docs/ENGINE.md.
"""

from fieldpress.engine.budget import BudgetPlan, plan_budget
from fieldpress.engine.config import DataSource, FitConfig, FitResult, LossFn, Stage, StepInfo
from fieldpress.engine.fitter import Fitter
from fieldpress.engine.rng import seed_everything
from fieldpress.engine.schedule import SCHEDULES, lr_factor, register_schedule
from fieldpress.engine.stages import (
    STAGE_KINDS,
    FitOptions,
    PruneOptions,
    QatOptions,
    RdOptions,
    StageKind,
    StageOptions,
    register_stage_kind,
)

__all__ = [
    "BudgetPlan", "DataSource", "FitConfig", "FitOptions", "FitResult", "Fitter", "LossFn", "PruneOptions",
    "QatOptions", "RdOptions", "SCHEDULES", "STAGE_KINDS", "Stage", "StageKind", "StageOptions", "StepInfo",
    "lr_factor", "plan_budget", "register_schedule", "register_stage_kind", "seed_everything",
]

"""fieldpress.engine: the Fitter, one training loop for every fit (stages, schedules, budgets,
checkpoints with exact resume, Ctrl-C, JSONL log, DDP under torchrun)."""

from fieldpress.engine.config import DataSource, FitConfig, FitResult, LossFn, Stage
from fieldpress.engine.fitter import Fitter
from fieldpress.engine.rng import seed_everything
from fieldpress.engine.schedule import SCHEDULES, lr_factor, register_schedule
from fieldpress.engine.stages import STAGE_KINDS, StageKind, register_stage_kind

__all__ = [
    "DataSource", "FitConfig", "FitResult", "Fitter", "LossFn", "SCHEDULES", "STAGE_KINDS", "Stage",
    "StageKind", "lr_factor", "register_schedule", "register_stage_kind", "seed_everything",
]

"""Time a few optimisation steps before a fit, so a time budget can become a step or epoch count."""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from fieldpress.engine.config import DataSource, LossFn, ParamGroupsFn, StepInfo, loss_takes_info


def seconds_per_step(
    model: nn.Module,
    data: DataSource,
    loss_fn: LossFn,
    batch_size: int,
    device: torch.device,
    *,
    lr: float = 1e-3,
    param_groups: ParamGroupsFn | None = None,
    steps: int = 4,
    warmup: int = 2,
) -> float:
    """Mean wall time of one Adam step (batch fetch, forward, backward, update) on a throwaway copy
    of `model`, after `warmup` untimed steps; the model itself is left untouched. A loss taking a
    StepInfo gets one for the first step of a "fit" stage."""
    probe = copy.deepcopy(model).to(device).train()
    groups = param_groups(probe, lr) if param_groups else probe.parameters()
    optimizer = torch.optim.Adam(groups, lr=lr)
    gen = torch.Generator().manual_seed(0)
    info = StepInfo(stage=0, kind="fit", progress=0.0, global_step=0, stage_step=0, stage_steps=1)
    args = (info,) if loss_takes_info(loss_fn) else ()
    t0 = time.perf_counter()
    for k in range(warmup + steps):
        if k == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        idx = torch.randint(len(data), (batch_size,), generator=gen)
        batch = {key: v.to(device) for key, v in data.batch(idx).items()}
        loss, _ = loss_fn(probe, batch, *args)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps

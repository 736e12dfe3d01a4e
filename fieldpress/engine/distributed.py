"""Data-parallel fitting under `torchrun`, detected from RANK / WORLD_SIZE / LOCAL_RANK.

The global batch is split over ranks; each rank's loss is weighted by its share of the items and
the gradients are summed with one all-reduce per step (one flat buffer), so every rank takes the
same step as a single process on the whole batch, up to floating-point summation order.
gloo on the CPU, nccl on CUDA. Only rank 0 writes checkpoints, logs and progress.

Ctrl-C is agreed on every step through a gloo group on the host (`any_rank_host`): every rank stops
after the same step, without a device sync (the flag travels in its own gloo group, under NCCL too).
A command that does more than fit (encode, measure, write) holds the group itself (`command_group`),
does that work on rank 0 only (`is_main_process`) and lets the other ranks wait at `host_barrier`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fieldpress.errors import InputError

HOST_TIMEOUT = datetime.timedelta(hours=6)  # the host group's barrier waits out rank 0's encode + measure


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    host_group: Any = dataclasses.field(default=None, compare=False, repr=False)  # gloo, for host flags

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        raise InputError(f"environment variable {name}={text!r} is not an integer") from None


def from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) outside it."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world > 1 and not (0 <= rank < world and local >= 0):
        raise InputError(f"inconsistent torchrun environment: RANK={rank}, LOCAL_RANK={local}, "
                         f"WORLD_SIZE={world}")
    return rank, world, local


def setup(device: torch.device) -> DistInfo:
    """Join (or create) the process group when launched by torchrun; a no-op for one process."""
    rank, world, local = from_env()
    if world <= 1:
        return DistInfo()
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        owns = True
    host = dist.new_group(backend="gloo", timeout=HOST_TIMEOUT)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, owns_group=owns,
                    host_group=host)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP on CUDA each rank uses cuda:LOCAL_RANK."""
    if info.enabled and device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return device


def broadcast_model(model: nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def all_reduce_grads(params: list[nn.Parameter], info: DistInfo) -> None:
    """Sum gradients over ranks in one flat all-reduce (missing grads count as zeros)."""
    if not info.enabled or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        chunk = flat[offset:offset + n].view_as(g)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True when the flag is set on any rank (one tiny all-reduce)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def any_rank_host(flag: bool, info: DistInfo) -> bool:
    """True when the flag is set on any rank: a one-number all-reduce on the host (no device sync)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.host_group)
    return bool(t.item())


def is_main_process() -> bool:
    """Rank 0 under torchrun (read from the environment, so it holds after the group is gone), or a
    single process: the one that encodes, measures and writes."""
    return from_env()[0] == 0


@contextlib.contextmanager
def command_group(device: torch.device) -> Iterator[DistInfo]:
    """Hold the process group for a whole command under torchrun (the Fitter, not owning it, then
    leaves it up for the barrier after the fit); a no-op for one process."""
    info = setup(device)
    try:
        yield info
    finally:
        teardown(info)


def host_barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (the host gloo group: no device sync, a long timeout)."""
    if info.enabled:
        dist.barrier(group=info.host_group)

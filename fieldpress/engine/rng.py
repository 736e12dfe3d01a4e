"""Seeding and random-number state: seed every generator, capture and restore them as uint8 tensors
(for safetensors checkpoints, no pickle), and the per-epoch data order derived from (seed, stage, epoch)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python `random`, numpy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 style), so nearby (seed, epoch) give unrelated orders."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def epoch_order(n: int, count: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    """`count` item indices for one epoch: concatenated random permutations of range(n).

    A torch.Generator seeded from (seed, stage, epoch, chunk) makes the order independent of the
    global RNG, so a resumed fit replays it exactly.
    """
    chunks, have, k = [], 0, 0
    gen = torch.Generator()
    while have < count:
        gen.manual_seed(_mix(seed, stage, epoch, k))
        chunks.append(torch.randperm(n, generator=gen))
        have += n
        k += 1
    return torch.cat(chunks)[:count] if chunks else torch.empty(0, dtype=torch.int64)


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global RNG state as (uint8 tensors, JSON scalars)."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state.clone()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.uint32).view(np.uint8).copy())
    version, internal, gauss_next = random.getstate()
    tensors["rng.python"] = torch.from_numpy(np.asarray(internal, dtype=np.uint32).view(np.uint8).copy())
    scalars = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [version, gauss_next]}
    return tensors, scalars


def restore_rng(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8).cpu())
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        for key in cuda[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(tensors[key].cpu(), int(key.rsplit(".", 1)[1]))
    name, pos, has_gauss, cached = scalars["numpy"]
    keys = tensors["rng.numpy"].numpy().view(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    version, gauss_next = scalars["python"]
    internal = tuple(int(v) for v in tensors["rng.python"].numpy().view(np.uint32))
    random.setstate((version, internal, gauss_next))

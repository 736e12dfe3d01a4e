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


class EpochOrder:
    """The item order of one epoch: random permutations of range(n), concatenated as far as needed.

    Permutation k is drawn from a torch.Generator seeded with (seed, stage, epoch, k), so the order does
    not depend on the global RNG and a resumed fit replays it exactly. Permutations are made lazily and
    only the last two are kept, so an epoch of many large batches over millions of pixels costs O(n)
    memory. With `device`, each permutation is moved there once (from pinned memory, asynchronously).
    """

    def __init__(self, n: int, seed: int, stage: int, epoch: int, device: torch.device | None = None) -> None:
        self.n, self.key, self.device = n, (seed, stage, epoch), device
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, k: int) -> torch.Tensor:
        if k not in self._cache:
            gen = torch.Generator().manual_seed(_mix(*self.key, k))
            perm = torch.randperm(self.n, generator=gen)
            if self.device is not None and self.device.type == "cuda":
                perm = perm.pin_memory().to(self.device, non_blocking=True)
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[k] = perm
        return self._cache[k]

    def take(self, start: int, stop: int) -> torch.Tensor:
        """Indices at positions [start, stop) of the epoch's order."""
        parts = []
        pos = start
        while pos < stop:
            k, off = divmod(pos, self.n)
            m = min(stop - pos, self.n - off)
            parts.append(self._perm(k)[off:off + m])
            pos += m
        if not parts:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def epoch_order(n: int, count: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    """The first `count` indices of an epoch's order (see :class:`EpochOrder`)."""
    return EpochOrder(n, seed, stage, epoch).take(0, count)


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

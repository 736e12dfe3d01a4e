"""Which weights the prune and QAT stages act on: the `weight` of every Linear and Conv layer that
ends up in the file. A model lists the submodules it does not store (HNeRV's encoder, dropped after
fitting) in a class attribute `unstored_prefixes`, so pruning amounts and QAT apply to stored weights only."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)


def prunable_weights(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """(state-dict name of the weight, its module, attribute name) for every stored Linear/Conv weight."""
    unstored = tuple(f"{prefix}." for prefix in getattr(model, "unstored_prefixes", ()))
    for mod_name, module in model.named_modules():
        if unstored and f"{mod_name}.".startswith(unstored):
            continue
        if isinstance(module, PRUNABLE_TYPES) and getattr(module, "weight", None) is not None:
            yield (f"{mod_name}.weight" if mod_name else "weight"), module, "weight"


def weight_tensor(module: nn.Module, attr: str) -> torch.Tensor:
    """The trainable tensor behind `module.attr` (the original when it is parametrized)."""
    if parametrize.is_parametrized(module, attr):
        return getattr(module.parametrizations, attr).original
    return getattr(module, attr)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries (mask False) of every masked weight, in place."""
    with torch.no_grad():
        for name, module, attr in prunable_weights(model):
            mask = masks.get(name)
            if mask is not None:
                w = weight_tensor(module, attr)
                w.mul_(mask.to(device=w.device, dtype=w.dtype))


def mask_pairs(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask in the weight's dtype and device) pairs, prepared once for the per-step re-masking."""
    pairs = []
    for name, module, attr in prunable_weights(model):
        mask = masks.get(name)
        if mask is not None:
            w = weight_tensor(module, attr)
            pairs.append((w, mask.to(device=w.device, dtype=w.dtype)))
    return pairs


def enforce_masks(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Re-apply prepared masks after an optimizer step (one foreach kernel launch on CUDA)."""
    if pairs:
        with torch.no_grad():
            torch._foreach_mul_([w for w, _ in pairs], [m for _, m in pairs])

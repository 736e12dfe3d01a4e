"""Stage kinds by name. A kind prepares the model when its stage begins and tidies up when it ends;
the Fitter runs the optimisation steps in between.

- "fit": plain fitting.
- "prune": global magnitude pruning of Linear/Conv weights (`fieldpress.codec.quant.magnitude_prune`),
  then fine-tuning; the masks stay enforced after every later step (this and later stages).
- "qat": fake-quantizes the same weights for the stage (see `fieldpress.engine.qat`), then removes
  the parametrization, leaving float weights for the codec to quantize exactly.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from fieldpress.codec.prunable import apply_masks, prunable_weights, weight_tensor


class StageState(Protocol):
    """What a stage kind may touch: the model, the pruning masks (True = kept) and `stage_state`, a
    JSON-serialisable dict saved in checkpoints (so a resumed stage re-creates what begin() chose)."""

    model: nn.Module
    masks: dict[str, torch.Tensor] | None
    stage_state: dict[str, Any]


class StageKind:
    """Base stage kind: nothing to prepare or undo."""

    name = "fit"

    def begin(self, state: StageState, stage: Any, resumed: bool) -> None:
        """Prepare the model; `resumed`: the stage had begun, its state comes from the checkpoint."""

    def end(self, state: StageState, stage: Any) -> dict[str, Any]:
        """Undo what begin() did that must not outlive the stage; return facts for the stage report."""
        return {}


class FitKind(StageKind):
    name = "fit"


class PruneKind(StageKind):
    name = "prune"

    def begin(self, state: StageState, stage: Any, resumed: bool) -> None:
        if resumed:
            return  # the masks come from the checkpoint
        from fieldpress.codec.quant import magnitude_prune

        names = [name for name, _, _ in prunable_weights(state.model)]
        if not names or stage.prune_amount <= 0:
            return
        weights = {name: weight_tensor(m, a).detach() for name, m, a in prunable_weights(state.model)}
        masks = magnitude_prune(weights, stage.prune_amount, scope="global", names=names)
        masks = {k: v.to(torch.bool).cpu() for k, v in masks.items()}
        if state.masks:
            masks = {k: masks[k] & state.masks[k] if k in state.masks else masks[k] for k in masks}
        state.masks = masks
        apply_masks(state.model, masks)

    def end(self, state: StageState, stage: Any) -> dict[str, Any]:
        if not state.masks:
            return {"sparsity": 0.0}
        kept = sum(int(m.sum()) for m in state.masks.values())
        total = sum(m.numel() for m in state.masks.values())
        return {"sparsity": 1.0 - kept / max(total, 1)}


class QatKind(StageKind):
    name = "qat"

    def begin(self, state: StageState, stage: Any, resumed: bool) -> None:
        from fieldpress.engine.qat import add_fake_quant

        axes = state.stage_state["qat_axes"] if resumed else stage.axis
        state.stage_state["qat_axes"] = add_fake_quant(state.model, stage.bits, axes, stage.symmetric)

    def end(self, state: StageState, stage: Any) -> dict[str, Any]:
        from fieldpress.engine.qat import remove_fake_quant

        remove_fake_quant(state.model)
        axes = state.stage_state.pop("qat_axes", {})
        return {"bits": stage.bits, "axes": axes, "symmetric": stage.symmetric}


STAGE_KINDS: dict[str, StageKind] = {k.name: k for k in (FitKind(), PruneKind(), QatKind())}


def register_stage_kind(kind: StageKind) -> None:
    """Add a stage kind (looked up by `Stage.kind`)."""
    STAGE_KINDS[kind.name] = kind

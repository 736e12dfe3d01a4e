"""The Fitter: fitting, schedules, data order, stages (fit -> prune -> qat), budgets, precision,
param groups, evaluation and the JSONL log."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from fieldpress.engine import FitConfig, Fitter, Stage, lr_factor
from fieldpress.engine.rng import EpochOrder, epoch_order
from fieldpress.engine.schedule import WARMUP_START
from fieldpress.errors import InputError
from tests.helpers.threads import one_thread  # noqa: F401 - autouse fixture
from tests.helpers.tiny_fit import Points, make_loss, make_model


def _fit(stages, output=None, **config):
    model = make_model(dropout=0.0)
    cfg = FitConfig(**{"batch_size": 8, "seed": 3, **config})
    result = Fitter(model, Points(), make_loss(), cfg, stages, output=output, show_progress=False).run()
    return model, result


def test_schedule_warmup_then_cosine() -> None:
    assert lr_factor(0, 100, 0.1) == pytest.approx(WARMUP_START)
    assert lr_factor(5, 100, 0.1) == pytest.approx(WARMUP_START + (1 - WARMUP_START) * 0.5)
    assert lr_factor(10, 100, 0.1) == pytest.approx(1.0)
    values = [lr_factor(s, 100, 0.1, "cosine", 0.2) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_factor(50, 100, 0.0, "constant") == 1.0


def test_epoch_order_is_deterministic_and_covers_items() -> None:
    a = epoch_order(7, 40, seed=1, stage=0, epoch=3)
    assert torch.equal(a, epoch_order(7, 40, seed=1, stage=0, epoch=3))
    assert not torch.equal(a, epoch_order(7, 40, seed=1, stage=0, epoch=4))
    assert torch.bincount(a, minlength=7).min() >= 5  # concatenated permutations: every item 5-6 times
    assert sorted(epoch_order(7, 7, 0, 0, 0).tolist()) == list(range(7))
    lazy = EpochOrder(100, seed=1, stage=2, epoch=3)  # windows across permutation boundaries
    assert torch.equal(lazy.take(150, 260), epoch_order(100, 260, seed=1, stage=2, epoch=3)[150:260])
    assert len(lazy._cache) <= 2


def test_fit_reduces_loss_and_logs_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "fit.fpi"
    model, result = _fit([Stage("fit", 8, 1e-2, warmup=0.1)], output=out)
    assert result.steps == 8 * 8 and not result.interrupted and result.masks is None
    log = [json.loads(line) for line in Path(f"{out}.log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["event"] == "train"]
    assert len(train) == 8
    for key in ("stage", "epoch", "step", "loss", "psnr", "lr", "seconds"):
        assert key in train[0]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert result.stages[0]["loss"] == pytest.approx(train[-1]["loss"])
    assert log[-1]["event"] == "stage_end"


def test_steps_per_epoch_and_index_batches() -> None:
    seen: list[torch.Tensor] = []

    class Recording(Points):
        def batch(self, indices):
            seen.append(indices.clone())
            return super().batch(indices)

    data = Recording(7)
    cfg = FitConfig(batch_size=4, steps_per_epoch=10, seed=1)
    Fitter(make_model(), data, make_loss(), cfg, [Stage("fit", 2, 1e-3)], show_progress=False).run()
    assert len(seen) == 20 and all(len(s) == 4 for s in seen)
    first_epoch = torch.cat(seen[:10])
    assert torch.equal(first_epoch, epoch_order(7, 40, seed=1, stage=0, epoch=0))


def test_fit_prune_qat_stages() -> None:
    data = Points()
    start = float(make_loss()(make_model(dropout=0.0), data.batch(torch.arange(len(data))))[0].detach())
    stages = [Stage("fit", 6, 1e-2), Stage.prune(3, 2e-3, amount=0.5),
              Stage.qat(2, 1e-3, bits=6)]
    model, result = _fit(stages)
    weights = {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == round(0.5 * total)  # exact global sparsity, kept through fine-tuning and QAT
    assert result.masks is not None and set(result.masks) == {f"{n}.weight" for n in weights}
    assert sum(int((~m).sum()) for m in result.masks.values()) == zeros
    assert result.stages[1]["sparsity"] == pytest.approx(0.5, abs=1 / total)
    assert result.stages[2]["bits"] == 6 and set(result.stages[2]["axes"]) == set(result.masks)
    assert not any("parametrizations" in k for k in model.state_dict())  # QAT removed, weights float
    assert all(w.dtype == torch.float32 for w in weights.values())
    losses = [s["loss"] for s in result.stages]
    assert all(loss < 0.5 * start for loss in losses), (start, losses)


@pytest.mark.parametrize("axis", ["auto", 0, 1, None])
def test_qat_forward_equals_codec_decoded_weights(axis) -> None:
    from fieldpress.codec.quant import compress_state_dict, decompress_state_dict
    from fieldpress.engine.qat import add_fake_quant, remove_fake_quant

    model = make_model()
    with torch.no_grad():
        model[3].weight[:, :5] *= 20  # wide input columns: per-row and per-column ranges now differ
    x = torch.rand(5, 2)
    axes = add_fake_quant(model, bits=5, axes=axis)
    fake = model(x)
    remove_fake_quant(model)
    assert not any("parametrizations" in k for k in model.state_dict())
    weights = {k: v for k, v in model.state_dict().items() if k in axes}
    streams, meta = compress_state_dict(weights, bits=5, axes=axes)
    with torch.no_grad():
        model.load_state_dict(decompress_state_dict(streams, meta), strict=False)
    assert torch.equal(model(x), fake)


def test_time_budget_ends_stage_and_skips_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "budget.fpi"
    model = make_model()
    cfg = FitConfig(batch_size=8, minutes=0.3 / 60)
    stages = [Stage("fit", 1000, 1e-3), Stage("fit", 5, 1e-3)]
    fitter = Fitter(model, Points(), make_loss(sleep=0.01), cfg, stages, output=out, show_progress=False)
    result = fitter.run()
    assert result.interrupted
    assert 0 < result.steps < 1000 * 8
    assert result.stages[0]["stopped_by_budget"] and len(result.stages) == 1
    log = [json.loads(line) for line in Path(f"{out}.log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "stage_end" and log[-1]["stopped_by_budget"]


def test_bf16_on_cpu_warns_and_fits_in_fp32() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, result = _fit([Stage("fit", 1, 1e-3)], precision="bf16")
    assert any("fp32" in str(w.message) for w in caught)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_param_groups_callback_sets_group_lrs() -> None:
    model = make_model()
    frozen = model[0].weight.detach().clone()
    moved = model[3].weight.detach().clone()

    def groups(m: nn.Module, lr: float) -> list[dict]:
        return [{"params": [m[0].weight], "lr": 0.0}, {"params": [m[3].weight], "lr": 10 * lr}]

    Fitter(model, Points(), make_loss(), FitConfig(batch_size=8), [Stage("fit", 1, 1e-3)],
           param_groups=groups, show_progress=False).run()
    assert torch.equal(model[0].weight, frozen)  # lr 0: untouched
    assert not torch.equal(model[3].weight, moved)
    assert not torch.equal(model[0].bias, make_model()[0].bias)  # left-over params train at the stage lr


def test_evaluate_runs_at_stage_end_in_eval_mode() -> None:
    modes: list[bool] = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        modes.append(m.training)
        return {"psnr": 12.5}

    model = make_model(dropout=0.1)
    result = Fitter(model, Points(), make_loss(), FitConfig(batch_size=8, eval_every=1),
                    [Stage("fit", 2, 1e-3)], evaluate=evaluate, show_progress=False).run()
    assert modes == [False, False] and model.training
    assert result.stages[0]["eval"] == {"psnr": 12.5}


def test_bad_configs_are_input_errors() -> None:
    with pytest.raises(InputError, match="stage kind"):
        Stage("distill", 1, 1e-3)
    with pytest.raises(InputError, match="schedule"):
        Stage("fit", 1, 1e-3, schedule="step")
    with pytest.raises(InputError, match="precision"):
        FitConfig(precision="fp8")
    for field in ("checkpoint_every_steps", "eval_every", "checkpoint_every_s"):
        with pytest.raises(InputError, match=field):
            FitConfig(**{field: -1})
    with pytest.raises(InputError, match="checkpoint_every_s"):
        FitConfig(checkpoint_every_s=float("nan"))
    with pytest.raises(InputError, match="empty"):
        Fitter(make_model(), Points(0), make_loss(), FitConfig(), [Stage("fit", 1, 1e-3)])


def test_same_seed_same_weights() -> None:
    a, _ = _fit([Stage("fit", 2, 1e-2)])
    b, _ = _fit([Stage("fit", 2, 1e-2)])
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k


def test_progress_bar_and_budget_report(capsys) -> None:
    cfg = FitConfig(batch_size=8, minutes=0.2 / 60)
    result = Fitter(make_model(), Points(), make_loss(sleep=0.01), cfg, [Stage("fit", 500, 1e-3)],
                    show_progress=True).run()
    assert result.interrupted
    err = capsys.readouterr().err
    assert "time budget" in err and "skipped 0 stage(s)" in err


def test_prune_and_qat_skip_submodules_the_model_does_not_store() -> None:
    """HNeRV-style models drop their encoder after fitting: its weights must not take a share of the
    pruning amount (or get fake-quantized)."""
    from torch import nn

    from fieldpress.engine.prunable import prunable_weights

    class WithEncoder(nn.Module):
        unstored_prefixes = ("encoder",)

        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
            self.encoder_head = nn.Linear(4, 4)  # a prefix of the name, not of the path: kept
            self.decoder = nn.Linear(4, 2)

    names = [name for name, _, _ in prunable_weights(WithEncoder())]
    assert names == ["encoder_head.weight", "decoder.weight"]


def test_seconds_per_step_times_a_copy_and_leaves_the_model_alone() -> None:
    from fieldpress.engine.probe import seconds_per_step

    model = make_model(dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = []

    def param_groups(m, lr):
        groups.append(lr)
        return [{"params": list(m.parameters()), "lr": lr}]

    seconds = seconds_per_step(model, Points(), make_loss(), 8, torch.device("cpu"), lr=0.5,
                               param_groups=param_groups)
    assert seconds > 0 and math.isfinite(seconds) and groups == [0.5]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

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

    from fieldpress.codec.prunable import prunable_weights

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


# ----------------------------------------------------------------------------- stage options
def test_stage_options_belong_to_their_kind() -> None:
    from fieldpress.engine import FitOptions, PruneOptions, QatOptions, RdOptions

    assert Stage("fit", 1, 1e-3).options == FitOptions()
    assert Stage("qat", 1, 1e-3).options == QatOptions()  # None: the kind's defaults
    assert Stage.prune(2, 1e-3, amount=0.3) == Stage("prune", 2, 1e-3, options=PruneOptions(0.3))
    assert Stage.qat(2, 1e-3, bits=6, axis=0) == Stage("qat", 2, 1e-3, options=QatOptions(6, 0))
    assert Stage.rd(2, 1e-3, 0.5, lambda_warmup=0.2).options == RdOptions(0.5, 0.2)
    with pytest.raises(InputError, match="PruneOptions, got QatOptions"):
        Stage("prune", 1, 1e-3, options=QatOptions())
    with pytest.raises(InputError, match="needs options=RdOptions"):
        Stage("rd", 1, 1e-3)
    for bad in (lambda: PruneOptions(1.0), lambda: QatOptions(bits=1), lambda: QatOptions(axis="x"),
                lambda: RdOptions(-1.0), lambda: RdOptions(1.0, warmup=2.0)):
        with pytest.raises(InputError):
            bad()
    d = Stage.qat(2, 1e-3, bits=6, warmup=0.1).to_dict()
    assert d == {"kind": "qat", "epochs": 2, "lr": 1e-3, "warmup": 0.1, "schedule": "cosine",
                 "min_lr_ratio": 0.0, "options": {"bits": 6, "axis": "auto", "symmetric": False}}
    assert json.loads(json.dumps(d)) == d
    assert Stage("fit", 1, 1e-3).to_dict()["options"] == {}


# ----------------------------------------------------------------------------- StepInfo and on_step
def test_loss_takes_info_is_decided_from_the_signature() -> None:
    from fieldpress.engine.config import loss_takes_info

    def two(model, batch): ...
    def three(model, batch, info): ...
    def named_default(model, batch, info=None): ...
    def other_default(model, batch, weight=1.0): ...
    def star(*args): ...

    assert [loss_takes_info(f) for f in (two, three, named_default, other_default, star, len)] == [
        False, True, True, False, False, False]


def test_loss_receives_step_info() -> None:
    from fieldpress.engine import StepInfo

    seen: list[StepInfo] = []
    plain = make_loss()

    def loss_fn(model, batch, info):
        seen.append(info)
        return plain(model, batch)

    cfg = FitConfig(batch_size=16, seed=1)  # 4 steps per epoch
    Fitter(make_model(), Points(), loss_fn, cfg, [Stage("fit", 2, 1e-3), Stage.qat(1, 1e-3)],
           show_progress=False).run()
    assert [i.global_step for i in seen] == list(range(12))
    assert [(i.stage, i.kind, i.stage_step, i.stage_steps) for i in seen[7:9]] == [
        (0, "fit", 7, 8), (1, "qat", 0, 4)]
    assert [i.progress for i in seen[:8]] == [k / 8 for k in range(8)]
    assert [i.progress for i in seen[8:]] == [0.0, 0.25, 0.5, 0.75]


def test_on_step_runs_after_each_optimizer_step() -> None:
    from fieldpress.engine import STAGE_KINDS, StageKind, register_stage_kind

    events: list[tuple[str, int, torch.Tensor]] = []

    class Recording(StageKind):
        name = "recording"

        def on_step(self, state, stage, info) -> None:
            events.append(("on_step", info.global_step, state.model[0].weight.detach().clone()))

    plain = make_loss()

    def loss_fn(model, batch, info):
        events.append(("loss", info.global_step, model[0].weight.detach().clone()))
        return plain(model, batch)

    register_stage_kind(Recording())
    try:
        Fitter(make_model(), Points(), loss_fn, FitConfig(batch_size=32), [Stage("recording", 2, 1e-2)],
               show_progress=False).run()
    finally:
        del STAGE_KINDS["recording"]
    assert [(e, s) for e, s, _ in events] == [(e, s) for s in range(4) for e in ("loss", "on_step")]
    for k in range(0, 6, 2):  # on_step sees the updated weights: those the next step's loss sees
        assert not torch.equal(events[k][2], events[k + 1][2])
        assert torch.equal(events[k + 1][2], events[k + 2][2])


# ----------------------------------------------------------------------------- rd stage
def test_rd_lambda_warms_up_linearly() -> None:
    from fieldpress.engine import RdOptions
    from fieldpress.engine.stages import rd_lambda

    assert rd_lambda(RdOptions(2.0), 0.0) == 2.0
    assert [rd_lambda(RdOptions(2.0, 0.5), p) for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 1.0, 2.0, 2.0]


def _rated_fit(stages, **config):
    model = make_model(rated=True)
    cfg = FitConfig(**{"batch_size": 8, "seed": 3, **config})
    result = Fitter(model, Points(), make_loss(), cfg, stages, show_progress=False).run()
    return model, result


def test_rd_stage_trades_distortion_for_rate() -> None:
    """The rate (an L1 penalty on one layer) shrinks under an rd stage, more with a larger lambda, and
    the step metrics report it; the distortion pays for it."""
    fit = [Stage("fit", 4, 1e-2)]
    plain, plain_result = _rated_fit([*fit, Stage("fit", 4, 3e-3)])
    rates, losses = [], []
    for lmbda in (1e-3, 1e-2):
        model, result = _rated_fit([*fit, Stage.rd(4, 3e-3, lmbda, lambda_warmup=0.25)])
        rates.append(float(model.rate_bits(None).detach()))
        losses.append(result.stages[1]["loss"] - lmbda * result.stages[1]["rate_bits"])
        assert result.stages[1]["lambda"] == pytest.approx(lmbda)  # last logged epoch: past the warm-up
        assert result.stages[1]["rate_bits"] > 0
    plain_rate = float(plain.rate_bits(None).detach())
    assert plain_rate > rates[0] > rates[1]
    assert rates[1] < 0.8 * plain_rate
    assert losses[1] > plain_result.stages[1]["loss"]  # distortion (loss minus lambda x rate) went up


def test_steer_lambda_moves_lambda_toward_the_target_rate() -> None:
    from fieldpress.engine.stages import LAMBDA_RANGE, steer_lambda

    up, avg = steer_lambda(1.0, 2.0, 2.0, 1.0)  # rate twice the target: the rate weighs more
    assert up > 1.0 and avg == pytest.approx(2.0)
    down, _ = steer_lambda(1.0, 0.5, 0.5, 1.0)
    assert down < 1.0 and steer_lambda(1.0, 1.0, 1.0, 1.0)[0] == pytest.approx(1.0)
    assert steer_lambda(LAMBDA_RANGE[1], 1e9, 1e9, 1e-9)[0] == LAMBDA_RANGE[1]
    with pytest.raises(InputError):
        Stage.rd(1, 1e-3, 0.1, target_rate=0.0)


class _L1Plant(torch.nn.Module):
    """Distortion |w - w0|^2 against rate |w|_1: at lambda the optimum is w0 shrunk by lambda / 2, so
    the rate falls as lambda grows, and grows back when it falls."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w0", torch.linspace(-2.0, 2.0, 64))
        self.w = torch.nn.Parameter(self.w0.clone())

    def rate_bits(self, info) -> torch.Tensor:  # noqa: ANN001
        return self.w.abs().sum()


def _steer(target: float, lmbda: float, steps: int = 600) -> tuple[float, float]:
    """(rate, lambda) after `steps` Adam steps of the rd kind's loss on the plant, steered to `target`."""
    from types import SimpleNamespace

    from fieldpress.engine import StepInfo
    from fieldpress.engine.stages import STAGE_KINDS

    plant = _L1Plant()
    state = SimpleNamespace(model=plant, masks=None, stage_state={})
    stage = Stage.rd(1, 0.05, lmbda, lambda_warmup=0.1, target_rate=target)
    opt = torch.optim.Adam(plant.parameters(), lr=0.02)
    for i in range(steps):
        info = StepInfo(0, "rd", i / steps, i, i, steps)
        distortion = ((plant.w - plant.w0) ** 2).sum()
        loss, _ = STAGE_KINDS["rd"].adjust_loss(state, stage, info, distortion, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(plant.rate_bits(None).detach()), STAGE_KINDS["rd"].end(state, stage)["lambda"]


def test_a_steered_rd_stage_ends_near_its_target_rate() -> None:
    """With a target rate the rd stage finds its lambda: from a start far too small (lambda 1e-3 keeps
    nearly all of the plant's rate of 64) and from one too large, the rate ends within 5% of the target,
    and the lower target ends at the larger lambda."""
    low, high = _steer(20.0, 1e-3), _steer(60.0, 1.0)
    assert low[0] == pytest.approx(20.0, rel=0.05) and high[0] == pytest.approx(60.0, rel=0.05)
    assert low[1] > high[1] > 0


def test_rd_stage_needs_a_model_with_rate_bits() -> None:
    with pytest.raises(InputError, match="rate_bits"):
        _fit([Stage.rd(1, 1e-3, 0.1)])


# ----------------------------------------------------------------------------- budget planning
def test_plan_budget_sizes_stages_to_the_budget() -> None:
    from fieldpress.engine import plan_budget

    # 60 s x 0.85 = 51 s usable; an epoch is 10 steps x 0.1 s = 1 s: 102 requested epochs -> x 0.5
    plan = plan_budget(1.0, 0.1, epochs={"fit": 60, "prune": 30, "qat": 12}, steps_per_epoch=10, margin=0.85)
    assert plan.epochs == {"fit": 30, "prune": 15, "qat": 6} and plan.cap_minutes == 1.0
    assert plan_budget(10.0, 0.1, epochs={"fit": 60}, steps_per_epoch=10).epochs == {"fit": 60}  # never up
    calls = []

    def probe() -> float:
        calls.append(1)
        return 0.5

    filled = plan_budget(1.0, probe, reserve_seconds=lambda: 9.0, elapsed_seconds=1.0, margin=0.5,
                         min_epochs=10)
    assert calls == [1] and filled.epochs == {"fit": 50} and filled.cap_minutes == pytest.approx(50 / 60)
    assert plan_budget(1.0, 10.0, min_epochs=10).epochs == {"fit": 10}
    kept = plan_budget(1.0, 10.0, epochs={"fit": 500}, shrink=False)
    assert kept.epochs == {"fit": 500} and kept.cap_minutes == 1.0
    with pytest.raises(InputError, match="minutes"):
        plan_budget(0.0, 0.1)


def test_budget_plan_goes_into_the_checkpoint(tmp_path: Path) -> None:
    from fieldpress.engine import BudgetPlan, plan_budget
    from fieldpress.engine.budget import stored_budget
    from fieldpress.engine.checkpoint import checkpoint_dir, load_checkpoint

    out = tmp_path / "b.fpi"
    plan = plan_budget(5.0, 0.01, epochs={"fit": 3})
    Fitter(make_model(), Points(), make_loss(), FitConfig(batch_size=8), [Stage("fit", 3, 1e-3)],
           output=out, show_progress=False, budget=plan).run()
    assert load_checkpoint(checkpoint_dir(out))[1]["budget"] == plan.to_dict()
    assert stored_budget(out) == plan and BudgetPlan.from_dict(plan.to_dict()) == plan
    assert stored_budget(tmp_path / "none.fpi") is None

    def no_probe() -> float:
        raise AssertionError("a resumed fit must not probe again")

    assert plan_budget(5.0, no_probe, epochs={"fit": 3}, resume_from=out) == plan
    assert plan_budget(6.0, 0.02, epochs={"fit": 3}, resume_from=out) != plan  # other flags: a new plan


def test_seconds_per_step_passes_step_info_to_a_three_argument_loss() -> None:
    from fieldpress.engine.probe import seconds_per_step

    kinds = []
    plain = make_loss()

    def loss_fn(model, batch, info):
        kinds.append(info.kind)
        return plain(model, batch)

    seconds_per_step(make_model(), Points(), loss_fn, 8, torch.device("cpu"), steps=1, warmup=1)
    assert kinds == ["fit", "fit"]

"""run_trial on a tiny model and a real offline task: results, determinism, failures as data."""

from __future__ import annotations

import pytest
import torch

from autopeft import methods
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.errors import ConfigError
from autopeft.core.trial_result import MemoryKind, TrialStatus
from autopeft.train.loop import LossGuard, NonFiniteLoss
from autopeft.train.trial import run_trial
from tests.trial_helpers import LORA, make_context, nan_from_call, raising, run_injected


@pytest.fixture(scope="module")
def ctx():
    return make_context()


def test_complete_trial_measures_everything(ctx):
    res = run_trial(ctx, LORA)
    assert res.status is TrialStatus.COMPLETE, res.error
    spec = methods.get("lora")
    assert res.trainable_params == spec.count_params(ctx.profile, LORA.modules[0]) == 2 * 4 * 4 * 64
    assert res.head_params == ctx.profile.head_params
    assert set(res.metrics) >= {"accuracy", "f1", "mcc", "loss"}
    assert 0.0 <= res.metrics["accuracy"] <= 1.0
    assert [h["step"] for h in res.history] == [6, 12]
    assert res.steps == res.target_steps == 12
    assert res.memory_kind is MemoryKind.CPU_ESTIMATE and res.peak_memory_mb > 0
    assert res.predicted_memory_mb > 0 and res.tokens_per_s > 0 and res.wall_time_s > 0
    TrialResultRoundTrip = type(res).model_validate_json(res.model_dump_json())
    assert TrialResultRoundTrip == res


def test_trials_are_deterministic(ctx):
    a, b = run_trial(ctx, LORA), run_trial(ctx, LORA)
    assert a.metrics == b.metrics and a.history == b.history
    assert a.peak_memory_mb == b.peak_memory_mb


def test_low_fidelity_is_a_prefix_of_the_full_run(ctx):
    short, full = run_trial(ctx, LORA, steps=6), run_trial(ctx, LORA)
    assert short.history[0] == full.history[0]


def test_report_can_stop_a_trial_early(ctx):
    seen = []
    res = run_trial(ctx, LORA, report=lambda step, m: seen.append(step) or False)
    assert res.status is TrialStatus.PRUNED and res.steps == 6 and seen == [6]


def test_over_parameter_budget_is_infeasible_without_training():
    ctx = make_context(budget={"max_trainable_params": 100})
    res = run_trial(ctx, LORA)
    assert res.status is TrialStatus.INFEASIBLE and res.steps == 0
    assert "exceed the budget of 100" in res.error and res.trainable_params == 2048


def test_over_memory_budget_is_infeasible_without_training():
    ctx = make_context(budget={"max_memory_mb": 0.001})
    res = run_trial(ctx, LORA)
    assert res.status is TrialStatus.INFEASIBLE and "predicted memory" in res.error


def test_nan_loss_fails_with_the_step_and_the_study_goes_on(ctx):
    res = run_injected(ctx, nan_from_call(4))  # the 1st call is the memory estimate's forward
    assert res.status is TrialStatus.FAILED and res.error_step == 3
    assert "loss is nan at step 3" in res.error
    assert run_trial(ctx, LORA).status is TrialStatus.COMPLETE


def test_exception_fails_with_the_message(ctx):
    res = run_injected(ctx, raising(ValueError("injected failure")))
    assert res.status is TrialStatus.FAILED
    assert res.error.startswith("ValueError: injected failure")


def test_out_of_memory_is_infeasible_and_the_next_trial_runs(ctx):
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    res = run_injected(ctx, raising(oom))
    assert res.status is TrialStatus.INFEASIBLE
    assert res.error.startswith("out of device memory: CUDA out of memory")
    assert run_trial(ctx, LORA).status is TrialStatus.COMPLETE


def test_native_and_peft_modules_train_together(ctx):
    cand = Candidate(
        modules=(
            LORA.modules[0],
            ModuleConfig(
                method="serial_adapter", params={"size": 8, "activation": "relu"}, layers=(2, 3)
            ),
        )
    )
    res = run_trial(ctx, cand)
    assert res.status is TrialStatus.COMPLETE, res.error
    assert res.trainable_params == 2048 + 2 * (2 * 32 * 8 + 8 + 32)


def test_loss_guard_raises_at_once_on_cpu():
    guard = LossGuard(torch.device("cpu"))
    assert not guard.deferred
    guard.see(1, torch.tensor(0.7))
    with pytest.raises(NonFiniteLoss, match="loss is inf at step 2"):
        guard.see(2, torch.tensor(float("inf")))


def test_deferred_loss_guard_reports_the_first_bad_step_when_checked():
    # The GPU mode (no device sync per step), run on CPU tensors.
    guard = LossGuard(torch.device("cpu"), deferred=True)
    for step, value in enumerate([0.7, 0.6], start=1):
        guard.see(step, torch.tensor(value))
    guard.check()  # nothing bad yet
    for step, value in enumerate([float("nan"), float("inf"), 0.5], start=3):
        guard.see(step, torch.tensor(value))  # never raises: nothing is read back
    with pytest.raises(NonFiniteLoss) as err:
        guard.check()
    assert err.value.step == 3


def test_a_batch_larger_than_the_train_split_stops_the_study_before_any_trial():
    with pytest.raises(ConfigError) as info:
        make_context(batch_size=4096)  # sms_spam's train split holds about 3,600
    assert info.value.problems[0].path == "training.batch_size"
    assert "a batch must fit in the train split" in str(info.value)


def test_an_exploding_loss_fails_as_diverged_and_a_sane_rate_completes():
    from autopeft.train.loop import DIVERGENCE_FACTOR

    res = run_trial(make_context(lr=1e6, eval_every=3), LORA)
    assert res.status is TrialStatus.FAILED and res.error_step == 6, res.error
    assert "loss diverged at step 6" in res.error and f"{DIVERGENCE_FACTOR:g}x" in res.error
    assert run_trial(make_context(eval_every=3), LORA).status is TrialStatus.COMPLETE

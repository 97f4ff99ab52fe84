"""GPU-only paths of a trial, on a real CUDA device: allocator peak, deferred NaN check, OOM.

Marked ``gpu``: ``make test`` deselects them (CI has no GPU); ``bench/gpu/checks.sh`` runs
them first on a lent GPU (``pytest -m gpu``). Without a CUDA device they fail, never skip.
"""

from __future__ import annotations

import pytest
import torch

from autopeft.core.result import MemoryKind, TrialStatus
from autopeft.train.trial import check_budget, run_trial
from tests.trial_helpers import LORA, make_context, nan_from_call, run_injected

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.fail("needs a CUDA device: run on a GPU (bench/gpu/checks.sh does)")


@pytest.fixture(scope="module")
def ctx(cuda):
    return make_context(device="cuda")


def test_cuda_trial_reports_the_allocator_peak(ctx):
    res = run_trial(ctx, LORA)
    assert res.status is TrialStatus.COMPLETE, res.error
    assert res.memory_kind is MemoryKind.CUDA and 0 <= res.metrics["accuracy"] <= 1
    # The model lives on the device during the trial: the peak holds at least its weights.
    weights_mb = sum(p.numel() * 4 for p in ctx.base_model.parameters()) / 2**20
    assert res.peak_memory_mb >= weights_mb
    assert res.tokens_per_s > 0 and res.steps == ctx.config.training.steps


def test_nan_on_cuda_fails_with_the_first_bad_step(ctx):
    # On a GPU no memory-estimate forward precedes training: the 3rd call is step 3.
    res = run_injected(ctx, nan_from_call(3))
    # Found at the evaluation point (step 6) without a sync per step, reported at step 3.
    assert res.status is TrialStatus.FAILED and res.error_step == 3, res.error
    assert run_trial(ctx, LORA).status is TrialStatus.COMPLETE


def test_real_cuda_oom_is_infeasible_and_the_next_trial_runs(cuda):
    big = make_context(device="cuda", batch_size=2048, steps=2, eval_every=2)
    cap_mb = 48
    _, predicted_mb, _ = check_budget(big, LORA)
    assert predicted_mb > 4 * cap_mb  # the trial cannot fit under the cap
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap_mb / total_mb)
    try:
        res = run_trial(big, LORA)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert res.status is TrialStatus.INFEASIBLE, res.error
    assert res.error.startswith("out of device memory")
    assert torch.cuda.memory_allocated() < cap_mb * 2**20  # the failed trial's memory is freed
    small = make_context(device="cuda")
    assert run_trial(small, LORA).status is TrialStatus.COMPLETE

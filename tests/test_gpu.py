"""GPU-only paths of a trial, on a real CUDA device: allocator peak, deferred NaN check, OOM.

Marked ``gpu``: ``make test`` deselects them (CI has no GPU); ``bench/gpu/checks.sh`` runs
them first on a lent GPU (``pytest -m gpu``). Without a CUDA device they fail, never skip.
"""

from __future__ import annotations

import pytest
import torch

from autopeft.core.trial_result import MemoryKind, TrialStatus
from autopeft.train.measured_memory import cuda_workspace_bytes
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
    small = make_context(device="cuda")
    # A first trial makes the cuBLAS workspaces, which PyTorch keeps for the process's life.
    assert run_trial(small, LORA).status is TrialStatus.COMPLETE
    big = make_context(device="cuda", batch_size=2048, steps=2, eval_every=2)
    room_mb = 48
    _, predicted_mb, _ = check_budget(big, LORA)
    assert predicted_mb > 4 * room_mb  # the trial cannot fit in the room it is given
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    cap_mb = torch.cuda.memory_reserved() / 2**20 + room_mb
    torch.cuda.set_per_process_memory_fraction(cap_mb / total_mb)
    try:
        res = run_trial(big, LORA)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert res.status is TrialStatus.INFEASIBLE, res.error
    assert res.error.startswith("out of device memory")
    assert torch.cuda.memory_allocated() <= before  # the failed trial's memory is freed
    assert run_trial(small, LORA).status is TrialStatus.COMPLETE


def test_cuda_prediction_counts_the_cublas_workspaces(ctx):
    # After a trial both workspaces (forward's and backward's handle) are allocated: what the
    # allocator holds beyond the context's own tensors is at least the predicted workspace.
    assert run_trial(ctx, LORA).status is TrialStatus.COMPLETE
    workspace = cuda_workspace_bytes(ctx.device)
    assert workspace == 2 * 32 * 2**20  # Hopper, CUBLAS_WORKSPACE_CONFIG unset
    held = torch.cuda.memory_allocated() - sum(
        t.numel() * t.element_size() for t in ctx.base_model.parameters() if t.is_cuda
    )
    assert workspace <= held < workspace + 8 * 2**20, held

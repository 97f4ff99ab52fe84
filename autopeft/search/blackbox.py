"""A synthetic trial runner with a known optimum, for search tests and search benchmarks.

Accuracy depends on the candidate through its exact parameter count and placement, with a
saturating learning curve over steps and seeded noise per (candidate, step), so samplers,
successive halving and executors can be exercised in milliseconds per trial. Budgets are
checked exactly as for real trials.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from typing import TypedDict

from autopeft import methods
from autopeft.core.candidate import Candidate
from autopeft.core.memory_model import predict_memory
from autopeft.core.model_profile import ModelProfile
from autopeft.core.resolve import candidate_params
from autopeft.core.space import Budget
from autopeft.core.study_config import TrainingConfig
from autopeft.core.trial_result import MemoryKind, TrialResult, TrialStatus


class _Common(TypedDict):
    """The fields every result of one trial shares, whatever its outcome."""

    candidate: Candidate
    trainable_params: int
    head_params: int
    predicted_memory_mb: float
    target_steps: int


class BlackboxRunner:
    """Deterministic accuracy = f(parameters, layers, module mix) x learning curve + noise."""

    def __init__(
        self,
        profile: ModelProfile,
        training: TrainingConfig,
        budget: Budget,
        noise: float = 0.005,
        seed: int = 0,
        fail_every: int = 0,
        delay_s: float = 0.0,
    ):
        self.profile, self.training, self.limits = profile, training, budget
        self.noise, self.seed, self.fail_every = noise, seed, fail_every
        self.delay_s = delay_s  # simulated training time per trial (concurrency tests)
        self.calls = 0

    def final_accuracy(self, candidate: Candidate) -> float:
        """The noise-free accuracy at full fidelity (the known truth of the benchmark)."""
        params = candidate_params(candidate, self.profile, methods.registry())
        if not candidate.modules:
            return 0.60
        layers = {i for m in candidate.modules for i in m.layers}
        depth = sum(1 + i / self.profile.num_layers for i in layers) / max(
            1, self.profile.num_layers
        )
        capacity = 1 - math.exp(-params / (0.004 * self.profile.base_params))
        mix = 0.01 * min(3, len(candidate.modules))
        return 0.60 + 0.25 * capacity * (0.6 + 0.4 * depth) + mix

    def budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """Exact params, predicted memory and over-budget reason, as for real trials."""
        params = candidate_params(candidate, self.profile, methods.registry())
        pred = predict_memory(
            self.profile,
            candidate,
            params,
            self.training.batch_size,
            64,
            methods=methods.registry(),
        ).total_mb
        return params, pred, self.limits.violation(params, pred, self.profile.base_params)

    def _noise(self, candidate: Candidate, step: int) -> float:
        digest = hashlib.sha1(f"{self.seed}|{candidate.key()}|{step}".encode()).hexdigest()
        return random.Random(int(digest[:12], 16)).gauss(0.0, self.noise)

    def run(self, candidate: Candidate, report, eval_at: set[int]) -> TrialResult:
        """A synthetic trial: evaluations at ``eval_at`` and the end, stoppable by ``report``."""
        self.calls += 1
        time.sleep(self.delay_s)
        params, pred, over = self.budget(candidate)
        base = _Common(
            candidate=candidate,
            trainable_params=params,
            head_params=self.profile.head_params,
            predicted_memory_mb=pred,
            target_steps=self.training.steps,
        )
        if self.fail_every and self.calls % self.fail_every == 0:
            return TrialResult(status=TrialStatus.FAILED, error="injected failure", **base)
        if over:
            return TrialResult(status=TrialStatus.INFEASIBLE, error=over, **base)
        final, total, history = self.final_accuracy(candidate), self.training.steps, []
        for step in sorted(set(eval_at) | {total}):
            acc = final * (1 - 0.5 * math.exp(-4 * step / total)) + self._noise(candidate, step)
            metrics = {"accuracy": acc, "f1": acc, "mcc": 2 * acc - 1, "loss": 1 - acc}
            history.append({"step": step, **metrics})
            if report is not None and step < total and not report(step, metrics):
                return TrialResult(
                    status=TrialStatus.PRUNED, metrics=metrics, history=history, steps=step, **base
                )
        return TrialResult(
            status=TrialStatus.COMPLETE,
            metrics={k: v for k, v in history[-1].items() if k != "step"},
            peak_memory_mb=pred,
            memory_kind=MemoryKind.CPU_ESTIMATE,
            steps=total,
            history=history,
            **base,
        )


def for_study(study, **kwargs) -> BlackboxRunner:
    """A blackbox runner on a study's profile, training recipe and budget."""
    return BlackboxRunner(
        study.profile, study.config.training, study.config.search_space.budget, **kwargs
    )

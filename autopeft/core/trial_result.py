"""The record of one trial: status, measured objectives, history and the reason of a failure."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autopeft.core.candidate import Candidate


class TrialStatus(str, Enum):
    """How a trial ended (mirrors the Optuna states the study records)."""

    COMPLETE = "COMPLETE"  # trained to its full fidelity
    PRUNED = "PRUNED"  # stopped early by the executor's successive-halving rule
    FAILED = "FAILED"  # NaN/inf loss or an exception; `error` says why
    INFEASIBLE = "INFEASIBLE"  # over budget (never trained) or out of device memory


class MemoryKind(str, Enum):
    """Where a peak-memory figure comes from."""

    CUDA = "cuda"  # the CUDA allocator's peak for the trial: a measurement
    CPU_ESTIMATE = "cpu-estimate"  # weights + optimiser state + saved activations: an estimate


class TrialResult(BaseModel):
    """Everything a trial produced; frozen and JSON-serialisable (stored in the study)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: TrialStatus
    candidate: Candidate
    metrics: dict[str, float] = Field(default_factory=dict)  # accuracy, f1, mcc, loss
    trainable_params: int = 0
    head_params: int = 0
    predicted_memory_mb: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: MemoryKind | None = None
    wall_time_s: float = 0.0
    steps: int = 0
    target_steps: int = 0
    tokens_per_s: float | None = None
    history: list[dict[str, float]] = Field(default_factory=list)
    error: str | None = None
    error_step: int | None = None

    def objective(self, metric: str) -> float | None:
        """The value of an objective metric, or None when the trial did not produce it."""
        if metric in self.metrics:
            return self.metrics[metric]
        value: Any = {
            "trainable_params": self.trainable_params,
            "peak_memory": self.peak_memory_mb,
            "predicted_memory": self.predicted_memory_mb,
            "wall_time": self.wall_time_s,
        }.get(metric)
        return None if value is None else float(value)

    def objective_values(
        self, metrics: Sequence[str], directions: Sequence[str]
    ) -> list[float | None]:
        """The values of a study's objectives: what Optuna is told, the front and report read.

        Peak memory falls back to the prediction (an infeasible trial never trained); an
        infeasible trial's missing task metric is the worst value of its direction.
        """
        out = []
        for metric, direction in zip(metrics, directions):
            value = self.objective(metric)
            if metric == "peak_memory" and value is None:
                value = self.predicted_memory_mb
            if value is None and self.status is TrialStatus.INFEASIBLE:
                value = -1.0 if direction == "maximize" else float("inf")
            out.append(value)
        return out

"""A surrogate trial runner fitted to real trial results, for search-quality benchmarks.

``bench/collect_real_trials.py`` trains random candidates of ``search_spaces/bench.yaml`` for
real and records their accuracy at each evaluation step. This module fits, per evaluation
step, a kernel ridge regression (RBF kernel on standardised candidate features, plus a
constant) to those accuracies and serves it through the executor's ``Runner`` interface, like
:class:`autopeft.search.blackbox.BlackboxRunner`: accuracy at a step = the fitted prediction
+ seeded noise with the fit's leave-one-out residual spread (correlated across the steps of
one trial as the real residuals are). Trainable parameters and predicted memory are exact,
from autopeft's formulas, so the parameter and memory objectives are the real ones.

Features of a candidate: per module type whether it is on and its log2 size, whether LoRA
targets the FFN too, the fraction of layers on, the lowest layer on and the log of the exact
trainable-parameter count.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from autopeft import methods
from autopeft.core.candidate import Candidate
from autopeft.core.memory import predict_memory
from autopeft.core.profile import ModelProfile
from autopeft.core.resolve import candidate_params
from autopeft.core.result import MemoryKind, TrialResult, TrialStatus
from autopeft.core.space import Budget
from autopeft.core.study_config import TrainingConfig

DATA = Path(__file__).parent / "results" / "real_trials_minilm.jsonl"
#: Module types of the bench space and their size parameter.
MODULES = {"lora": "rank", "serial_adapter": "size", "parallel_adapter": "size", "prefix": "length"}
FEATURES = [
    *(f"{m}.{k}" for m in MODULES for k in ("on", "log_size")),
    "lora.ffn",
    "layers_on",
    "lowest_layer",
    "log_params",
]
#: Candidate kernel widths and ridge penalties; the pair with the lowest LOO error is kept.
WIDTHS = (1.0, 2.0, 3.0, 4.0, 6.0, 10.0)
PENALTIES = (0.03, 0.1, 0.3, 1.0, 3.0)


def features(candidate: Candidate, profile: ModelProfile) -> list[float]:
    """The surrogate's input for one candidate (see :data:`FEATURES`)."""
    out: list[float] = []
    for name, size_param in MODULES.items():
        m = candidate.module(name)
        size = int(m.params[size_param]) if m else 0
        out += [1.0 if m else 0.0, math.log2(size) if size > 0 else 0.0]
    lora = candidate.module("lora")
    out.append(1.0 if lora and any(t.startswith("ffn") for t in lora.targets) else 0.0)
    layers = {i for m in candidate.modules for i in m.layers}
    n = profile.num_layers
    out.append(len(layers) / n)
    out.append(min(layers) / n if layers else 1.0)
    out.append(math.log10(1 + candidate_params(candidate, profile, methods.registry())))
    return out


def _rbf(a: torch.Tensor, b: torch.Tensor, width: float) -> torch.Tensor:
    return torch.exp(-torch.cdist(a, b).pow(2) / (2 * width**2))


@dataclass
class StepModel:
    """Kernel ridge regression of the accuracy at one evaluation step."""

    x: torch.Tensor  # standardised training features
    alpha: torch.Tensor  # dual weights
    mean: float  # the constant part (training mean)
    width: float
    penalty: float
    loo_residuals: torch.Tensor  # leave-one-out residuals, in training order

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor) -> StepModel:
        """Fit on standardised ``x``; width and penalty chosen by exact LOO error."""
        best = None
        for width in WIDTHS:
            k = _rbf(x, x, width)
            for penalty in PENALTIES:
                res = _loo(k, y, penalty)
                rmse = float(res.pow(2).mean().sqrt())
                if best is None or rmse < best[0]:
                    best = (rmse, width, penalty, res)
        _, width, penalty, res = best
        mean = float(y.mean())
        k = _rbf(x, x, width)
        alpha = torch.linalg.solve(k + penalty * torch.eye(len(y), dtype=x.dtype), y - mean)
        return cls(x, alpha, mean, width, penalty, res)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted accuracy for standardised features ``x``."""
        return self.mean + _rbf(x, self.x, self.width) @ self.alpha


def _loo(k: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Exact leave-one-out residuals of kernel ridge with a centred target.

    With the hat matrix ``H = K (K + p I)^-1``, the LOO residual is ``r_i / (1 - H_ii)``;
    centring by the full-data mean is a negligible (1/n) leak.
    """
    n = len(y)
    hat = k @ torch.linalg.inv(k + penalty * torch.eye(n, dtype=k.dtype))
    resid = (y - y.mean()) - hat @ (y - y.mean())
    return resid / (1 - hat.diagonal())


class Surrogate:
    """Accuracy(candidate, step), fitted to real trials; one :class:`StepModel` per step."""

    def __init__(self, records: list[dict], profile: ModelProfile):
        self.profile = profile
        done = [r for r in records if r["status"] == "COMPLETE"]
        if len(done) < 10:
            raise ValueError(f"need at least 10 complete real trials, got {len(done)}")
        self.candidates = [Candidate.model_validate(r["candidate"]) for r in done]
        raw = torch.tensor([features(c, profile) for c in self.candidates], dtype=torch.float64)
        self.center, self.scale = raw.mean(0), raw.std(0).clamp(min=1e-6)
        x = (raw - self.center) / self.scale
        self.steps = sorted({int(h["step"]) for r in done for h in r["history"]})
        self.targets: dict[int, torch.Tensor] = {}
        self.models: dict[int, StepModel] = {}
        for step in self.steps:
            y = torch.tensor([_at_step(r["history"], step) for r in done], dtype=torch.float64)
            self.targets[step] = y
            self.models[step] = StepModel.fit(x, y)
        final = self.models[self.steps[-1]].loo_residuals
        #: Correlation of one trial's residuals across steps (first vs last step).
        self.rho = (
            max(
                0.0,
                float(
                    torch.corrcoef(torch.stack([self.models[self.steps[0]].loo_residuals, final]))[
                        0, 1
                    ]
                ),
            )
            if len(self.steps) > 1
            else 1.0
        )

    @classmethod
    def from_jsonl(cls, path: Path = DATA, profile: ModelProfile | None = None) -> Surrogate:
        """Fit on a file written by ``bench/collect_real_trials.py``."""
        from autopeft.search.study import model_profile

        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
        return cls(records, profile or model_profile("minilm"))

    def predict(self, candidate: Candidate, step: int) -> float:
        """Noise-free accuracy at ``step`` (linear between fitted steps, clamped at the ends)."""
        x = (
            torch.tensor([features(candidate, self.profile)], dtype=torch.float64) - self.center
        ) / self.scale
        at = {s: float(self.models[s].predict(x)[0]) for s in self.steps}
        if step <= self.steps[0]:
            return at[self.steps[0]]
        if step >= self.steps[-1]:
            return at[self.steps[-1]]
        hi = next(s for s in self.steps if s >= step)
        lo = max(s for s in self.steps if s < step)
        w = (step - lo) / (hi - lo)
        return (1 - w) * at[lo] + w * at[hi]

    def noise_std(self, step: int) -> float:
        """The LOO residual spread at the fitted step nearest ``step``."""
        near = min(self.steps, key=lambda s: abs(s - step))
        return float(self.models[near].loo_residuals.std())

    def report(self) -> dict:
        """LOO quality per step: RMSE and MAE vs a constant predictor, and the chosen fit."""
        out = {}
        for step in self.steps:
            m, y = self.models[step], self.targets[step]
            base = (y - y.mean()) * len(y) / (len(y) - 1)  # LOO residuals of the mean
            rmse = float(m.loo_residuals.pow(2).mean().sqrt())
            out[step] = {
                "n": len(y),
                "loo_rmse": rmse,
                "loo_mae": float(m.loo_residuals.abs().mean()),
                "constant_loo_rmse": float(base.pow(2).mean().sqrt()),
                "loo_r2": 1 - rmse**2 / float(base.pow(2).mean()),
                "accuracy_range": [float(y.min()), float(y.max())],
                "width": m.width,
                "penalty": m.penalty,
            }
        return {"steps": out, "residual_correlation_first_last": self.rho}


def _at_step(history: list[dict], step: int) -> float:
    return next(h["accuracy"] for h in history if int(h["step"]) == step)


class SurrogateRunner:
    """A ``Runner`` whose accuracy comes from a :class:`Surrogate` plus seeded noise.

    The noise of a (candidate, step) is fixed by ``seed``, so a repeated candidate gets the
    same result within a run; one trial's noise is correlated across its steps as the real
    residuals are, which is what successive halving's early decisions depend on.
    """

    def __init__(
        self,
        surrogate: Surrogate,
        training: TrainingConfig,
        budget: Budget,
        seq_len: int,
        seed: int = 0,
        noise: float = 1.0,
    ):
        self.surrogate, self.profile = surrogate, surrogate.profile
        self.training, self.limits, self.seq_len = training, budget, seq_len
        self.seed, self.noise = seed, noise

    def budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """Exact params, predicted memory (CPU, as measured) and over-budget reason."""
        params = candidate_params(candidate, self.profile, methods.registry())
        pred = predict_memory(
            self.profile, candidate, params, self.training.batch_size, self.seq_len, "cpu"
        ).total_mb
        limit = self.limits.param_limit(self.profile.base_params)
        if limit is not None and params > limit:
            return params, pred, f"{params:,} trainable parameters exceed the budget of {limit:,}"
        if self.limits.max_memory_mb is not None and pred > self.limits.max_memory_mb:
            return params, pred, f"predicted memory {pred:,.0f} MiB exceeds the budget"
        return params, pred, None

    def _gauss(self, candidate: Candidate, tag: str) -> float:
        digest = hashlib.sha1(f"{self.seed}|{candidate.key()}|{tag}".encode()).hexdigest()
        return random.Random(int(digest[:12], 16)).gauss(0.0, 1.0)

    def accuracy(self, candidate: Candidate, step: int) -> float:
        """Predicted accuracy at ``step`` plus this run's noise, in [0, 1]."""
        rho = self.surrogate.rho
        z = math.sqrt(rho) * self._gauss(candidate, "trial") + math.sqrt(1 - rho) * self._gauss(
            candidate, str(step)
        )
        value = self.surrogate.predict(candidate, step)
        value += self.noise * self.surrogate.noise_std(step) * z
        return min(1.0, max(0.0, value))

    def run(self, candidate: Candidate, report, eval_at: set[int]) -> TrialResult:
        """A surrogate trial: evaluations at ``eval_at`` and the end, stoppable by ``report``."""
        params, pred, over = self.budget(candidate)
        base = dict(
            candidate=candidate,
            trainable_params=params,
            head_params=self.profile.head_params,
            predicted_memory_mb=pred,
            target_steps=self.training.steps,
        )
        if over:
            return TrialResult(status=TrialStatus.INFEASIBLE, error=over, **base)
        total, history = self.training.steps, []
        for step in sorted(set(eval_at) | {total}):
            acc = self.accuracy(candidate, step)
            metrics = {"accuracy": acc}
            history.append({"step": step, **metrics})
            if report is not None and step < total and not report(step, metrics):
                return TrialResult(
                    status=TrialStatus.PRUNED, metrics=metrics, history=history, steps=step, **base
                )
        return TrialResult(
            status=TrialStatus.COMPLETE,
            metrics=dict(metrics),
            peak_memory_mb=pred,
            memory_kind=MemoryKind.CPU_ESTIMATE,
            steps=total,
            history=history,
            **base,
        )


def for_study(study, surrogate: Surrogate, **kwargs) -> SurrogateRunner:
    """A surrogate runner on a study's training recipe, budget and sequence length."""
    cfg = study.config
    return SurrogateRunner(
        surrogate, cfg.training, cfg.search_space.budget, cfg.task.max_length, **kwargs
    )

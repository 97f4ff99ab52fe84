"""The search benchmarks' test bed: a surrogate trial runner fitted to real trial results.

``python -m bench.collect_real_trials`` trains random candidates of ``search_spaces/bench.yaml``
for real and records their accuracy at each evaluation step (``results/real_trials_*.jsonl``).
At a short fidelity the outcome is bimodal: a trial either learns (final accuracy above the
majority-class rate) or stays a constant predictor (exactly the majority, or minority, class
rate). A single regression fits that poorly, so the surrogate is a two-part model over
candidate features:

- ``P(learns)``: logistic regression (ridge-penalised, penalty chosen by leave-one-out);
- the learning curve of a trial that learns: ridge regression per evaluation step, fitted to
  the trials that learned (penalty, and every feature or the parameter count alone, chosen
  by exact leave-one-out).

A surrogate trial draws "learns" with that probability, then takes the predicted curve plus
the leave-one-out residual curve of a randomly drawn real learner (so noise has the real
spread and cross-step correlation), or else the whole curve of a randomly drawn real trial
that did not learn. The evaluation loss is fitted the same way and drawn from the same real
trial, so a study can halve on it (``halving.metric: loss``). Draws are seeded per (run seed,
candidate). Trainable parameters and
predicted memory are exact, from autopeft's formulas (``autopeft.candidate_trainable_params``,
``autopeft.predict_memory``).

Features of a candidate: per module type whether it is on and its log2 size, whether LoRA
targets the FFN too, the fraction of layers on, the lowest layer on and the log of the exact
trainable-parameter count.

Run as a script, it fits a data file and prints the fit's leave-one-out quality:

    python -m bench.surrogate --data bench/results/real_trials_minilm_640.jsonl \\
        --features all,log_params
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import autopeft
from autopeft import Candidate, TrialResult, TrialStatus
from bench.common import CPU_ESTIMATE, RESULTS, real_trials
from bench.fitting import (
    F64,
    auc,
    fit_logistic,
    fit_ridge,
    log_loss,
    logistic_loo,
    ridge_loo,
    spearman,
    with_bias,
)

DATA = RESULTS / "real_trials_minilm.jsonl"
#: Module types of the bench space and their size parameter.
MODULES = {"lora": "rank", "serial_adapter": "size", "parallel_adapter": "size", "prefix": "length"}
FEATURES = [
    *(f"{m}.{k}" for m in MODULES for k in ("on", "log_size")),
    "lora.ffn",
    "layers_on",
    "lowest_layer",
    "log_params",
]
#: Penalties tried; the one with the lowest leave-one-out error is kept.
PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Feature sets a learner-curve step may use: every feature, or the trainable-parameter count
#: alone. Given more than one, each step takes the set (and penalty) with the lowest
#: leave-one-out error. With few real trials the full set is shrunk to a constant while size
#: alone still carries the trend (the first 32 640-step trials: Spearman 0.64 between
#: parameters and final accuracy; all 56: 0.43). The default, every feature, is what the
#: committed 40- and 160-step results were taken with.
FEATURE_SETS = ("all", "log_params")
#: A model's profile (``autopeft.load_profile``): layers, sizes, parameter counts.
Profile = Any


def features(candidate: Candidate, profile: Profile) -> list[float]:
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
    out.append(math.log10(1 + autopeft.candidate_trainable_params(candidate, profile)))
    return out


def _columns(feature_set: str) -> list[int]:
    """The columns of the biased feature matrix a feature set uses (the bias, last, always)."""
    if feature_set == "all":
        return list(range(len(FEATURES) + 1))
    return [FEATURES.index(feature_set), len(FEATURES)]


class Surrogate:
    """Accuracy (and loss) curves of candidates, fitted to real trials (see the module doc)."""

    def __init__(
        self, records: list[dict], profile: Profile, feature_sets: tuple[str, ...] = ("all",)
    ):
        """Fit to ``records`` (lines of a real-trials file) on ``profile``'s model."""
        unknown = set(feature_sets) - set(FEATURE_SETS)
        if unknown or not feature_sets:
            raise ValueError(f"feature sets are {FEATURE_SETS}, but got {feature_sets}")
        self.profile = profile
        done = [r for r in records if r["status"] == "COMPLETE"]
        if len(done) < 20:
            raise ValueError(f"need at least 20 complete real trials, got {len(done)}")
        self.steps = sorted({int(h["step"]) for r in done for h in r["history"]})
        self.curves = torch.tensor(
            [[_at_step(r["history"], s) for s in self.steps] for r in done], dtype=F64
        )
        #: The evaluation loss at the same steps, where every trial recorded it (halving by
        #: ``halving.metric: loss``); it is drawn with the accuracy from the same real trial.
        self.loss_curves = (
            torch.tensor(
                [[_at_step(r["history"], s, "loss") for s in self.steps] for r in done], dtype=F64
            )
            if all("loss" in h for r in done for h in r["history"])
            else None
        )
        final = self.curves[:, -1]
        self.majority = _majority(done)
        self.learned = (
            final > self.majority + 1e-6
            if self.majority is not None
            else torch.ones_like(final, dtype=torch.bool)
        )
        candidates = [Candidate.model_validate(r["candidate"]) for r in done]
        raw = torch.tensor([features(c, profile) for c in candidates], dtype=F64)
        self.center, self.scale = raw.mean(0), raw.std(0).clamp(min=1e-6)
        self.x = with_bias((raw - self.center) / self.scale)
        y = self.learned.to(F64)
        #: Whether some trials never learned: on a long enough fidelity every trial does, and
        #: the surrogate is then the learner curve alone (P(learns) = 1).
        self.bimodal = 0 < int(self.learned.sum()) < len(y)
        if self.bimodal:
            if min(int(y.sum()), int((1 - y).sum())) < 2:
                # One trial alone in its class: every penalty mispredicts it when it is left
                # out, so leave-one-out cannot choose; the weakest penalty fits it best.
                self.class_penalty = min(PENALTIES)
            else:
                losses = {p: log_loss(logistic_loo(self.x, y, p), y) for p in PENALTIES}
                self.class_penalty = min(losses, key=lambda p: losses[p])
            self.class_w = fit_logistic(self.x, y, self.class_penalty)
        elif not self.learned.any():
            raise ValueError("no real trial beat the constant predictor: nothing to fit")
        self.curve_features, self.curve_penalty, self.curve_w, self.residuals = self._fit_curve(
            self.curves, feature_sets
        )
        #: The curves of the trials that did not learn (the learners' are fitted).
        self.flat_curves = self.curves[~self.learned]
        if self.loss_curves is not None:
            self.loss_fit = self._fit_curve(self.loss_curves, feature_sets)
            self.flat_loss_curves = self.loss_curves[~self.learned]

    def _fit_curve(
        self, curves: torch.Tensor, feature_sets: tuple[str, ...]
    ) -> tuple[list[str], list[float], list[torch.Tensor], torch.Tensor]:
        """Per step: the learners' ridge fit (feature set, penalty, weights) and the
        leave-one-out residual curves (one row per learner)."""
        xl = self.x[self.learned]
        names, penalties, weights, residuals = [], [], [], []
        for j in range(len(self.steps)):
            yl = curves[self.learned, j]
            errs = {
                (name, p): float(ridge_loo(xl[:, self._cols(name)], yl, p).pow(2).mean())
                for name in feature_sets
                for p in PENALTIES
            }
            # The first set given wins ties (a step where every trial is at the floor fits
            # all of them exactly, up to rounding).
            first = min((k for k in errs if k[0] == feature_sets[0]), key=lambda k: errs[k])
            other = min(errs, key=lambda k: errs[k])
            name, best = other if errs[other] < errs[first] - 1e-12 else first
            cols = self._cols(name)
            names.append(name)
            penalties.append(best)
            weights.append(fit_ridge(xl[:, cols], yl, best))
            residuals.append(ridge_loo(xl[:, cols], yl, best))
        return names, penalties, weights, torch.stack(residuals, 1)

    @classmethod
    def from_jsonl(
        cls,
        path: Path = DATA,
        profile: Profile | None = None,
        feature_sets: tuple[str, ...] = ("all",),
    ) -> Surrogate:
        """Fit on a file written by ``python -m bench.collect_real_trials``."""
        return cls(
            real_trials(Path(path)), profile or autopeft.load_profile("minilm"), feature_sets
        )

    def runner(self, study: autopeft.Study, seed: int = 0, oracle: bool = False) -> SurrogateRunner:
        """A runner drawing from this surrogate on a study's training, budget and length."""
        cfg = study.config
        return SurrogateRunner(
            self, cfg.training, cfg.search_space.budget, cfg.task.max_length, seed, oracle
        )

    def _cols(self, feature_set: str) -> list[int]:
        return _columns(feature_set)

    def _x(self, candidate: Candidate) -> torch.Tensor:
        raw = torch.tensor([features(candidate, self.profile)], dtype=F64)
        return with_bias((raw - self.center) / self.scale)[0]

    def p_learn(self, candidate: Candidate) -> float:
        """Probability that training the candidate beats the constant predictor."""
        if not self.bimodal:
            return 1.0
        return float(torch.sigmoid(self._x(candidate) @ self.class_w))

    def learner_curve(self, candidate: Candidate) -> list[float]:
        """Predicted accuracy at each fitted step, should the candidate learn."""
        return self._mean_curve(self._x(candidate), self.curve_features, self.curve_w)

    def _mean_curve(
        self, x: torch.Tensor, names: list[str], weights: list[torch.Tensor]
    ) -> list[float]:
        """A fitted curve at the candidate features ``x``: each step's ridge prediction."""
        return [float(x[self._cols(name)] @ w) for name, w in zip(names, weights)]

    def expected(self, candidate: Candidate) -> float:
        """Expected final accuracy (noise-free): the mixture's mean."""
        p = self.p_learn(candidate)
        if p == 1.0:
            return self.learner_curve(candidate)[-1]
        return p * self.learner_curve(candidate)[-1] + (1 - p) * float(
            self.flat_curves[:, -1].mean()
        )

    def sample_curve(self, candidate: Candidate, seed: int) -> list[float]:
        """One trial's accuracy at each fitted step (seeded by ``seed`` and the candidate)."""
        return self.sample_curves(candidate, seed)["accuracy"]

    def sample_curves(self, candidate: Candidate, seed: int) -> dict[str, list[float]]:
        """One trial's accuracy (and loss, where fitted) at each fitted step.

        Both draw from the same real trial: a learner's residual curves, or a non-learner's
        whole curves, so the two metrics keep the real trials' joint noise.
        """
        digest = hashlib.sha1(f"{seed}|{candidate.key()}".encode()).hexdigest()
        rng = random.Random(int(digest[:12], 16))
        out: dict[str, list[float]] = {}
        if rng.random() < self.p_learn(candidate):
            i = rng.randrange(len(self.residuals))
            x = self._x(candidate)
            fits = {"accuracy": (self.curve_features, self.curve_w, self.residuals)}
            if self.loss_curves is not None:
                names, _, weights, residuals = self.loss_fit
                fits["loss"] = (names, weights, residuals)
            for metric, (names, weights, residuals) in fits.items():
                mean = self._mean_curve(x, names, weights)
                out[metric] = [m + float(e) for m, e in zip(mean, residuals[i])]
        else:
            i = rng.randrange(len(self.flat_curves))
            out["accuracy"] = self.flat_curves[i].tolist()
            if self.loss_curves is not None:
                out["loss"] = self.flat_loss_curves[i].tolist()
        out["accuracy"] = [min(1.0, max(0.0, v)) for v in out["accuracy"]]
        if "loss" in out:
            out["loss"] = [max(0.0, v) for v in out["loss"]]
        return out

    def at(self, curve: list[float], step: int) -> float:
        """A curve's value at ``step`` (linear between fitted steps, clamped at the ends)."""
        if step <= self.steps[0]:
            return curve[0]
        if step >= self.steps[-1]:
            return curve[-1]
        hi = next(j for j, s in enumerate(self.steps) if s >= step)
        w = (step - self.steps[hi - 1]) / (self.steps[hi] - self.steps[hi - 1])
        return (1 - w) * curve[hi - 1] + w * curve[hi]

    def report(self) -> dict:
        """Leave-one-out quality: the classifier, the learner curve, the whole mixture."""
        y = self.learned.to(F64)
        if self.bimodal:
            p_loo = logistic_loo(self.x, y, self.class_penalty)
            p_learn = {
                "penalty": self.class_penalty,
                "loo_auc": auc(p_loo, y),
                "loo_log_loss": log_loss(p_loo, y),
                "constant_log_loss": log_loss(torch.full_like(y, float(y.mean())), y),
            }
        else:
            p_loo, p_learn = torch.ones_like(y), None
        n_l = int(self.learned.sum())
        yl = self.curves[self.learned, -1]
        curve_rmse = float(self.residuals[:, -1].pow(2).mean().sqrt())
        const_l = float((yl - yl.mean()).pow(2).mean().sqrt() * n_l / (n_l - 1))
        expected = self._loo_expected(p_loo)
        final = self.curves[:, -1]
        n = len(final)
        const = (final - final.mean()) * n / (n - 1)  # LOO residuals of the mean
        err = final - expected
        return {
            "n": n,
            "steps": self.steps,
            "learned": n_l,
            "majority_accuracy": self.majority,
            "p_learn": p_learn,
            "learner_final_accuracy": {
                "penalty": self.curve_penalty[-1],
                "features": self.curve_features[-1],
                "loo_rmse": curve_rmse,
                "constant_loo_rmse": const_l,
            },
            "expected_final_accuracy": {
                "loo_rmse": float(err.pow(2).mean().sqrt()),
                "loo_mae": float(err.abs().mean()),
                "constant_loo_rmse": float(const.pow(2).mean().sqrt()),
                "constant_loo_mae": float(const.abs().mean()),
                "loo_spearman": spearman(expected, final),
            },
            "accuracy_range": [float(final.min()), float(final.max())],
        }

    def _loo_expected(self, p_loo: torch.Tensor) -> torch.Tensor:
        """Each trial's expected final accuracy from the model fitted without it."""
        out = torch.empty(len(p_loo), dtype=F64)
        final = self.curves[:, -1]
        idx = torch.arange(len(final))
        for i in range(len(final)):
            keep = idx != i
            learned, flat = keep & self.learned, keep & ~self.learned
            x = self.x[:, self._cols(self.curve_features[-1])]
            w = fit_ridge(x[learned], final[learned], self.curve_penalty[-1])
            mu = float(x[i] @ w)
            out[i] = (
                mu if not flat.any() else p_loo[i] * mu + (1 - p_loo[i]) * float(final[flat].mean())
            )
        return out


def _majority(done: list[dict]) -> float | None:
    """The constant predictor's accuracy (the majority-class rate), None if no trial was one.

    It is the best accuracy of an evaluation whose predictions carry no information (MCC
    exactly 0), at any step: on a long fidelity every trial learns by its end, but each one
    still predicts a single class at its first evaluation. Without such an evaluation (a task
    whose trials all learn from the start, like the generated ``rt_order``) there is no floor
    to stay at, so every trial counts as learning: a low final accuracy is a slow learner, not
    a constant predictor, and the most frequent final accuracy is not a floor either.
    """
    constant = [float(h["accuracy"]) for r in done for h in r["history"] if h.get("mcc", 1.0) == 0]
    return round(max(constant), 6) if constant else None


def _at_step(history: list[dict], step: int, metric: str = "accuracy") -> float:
    return next(h[metric] for h in history if int(h["step"]) == step)


class SurrogateRunner:
    """A ``Runner`` whose accuracy curves are drawn from a :class:`Surrogate`.

    The draw of a candidate is fixed by ``seed``, so a repeated candidate gets the same
    result within a run while different seeds see different outcomes.
    """

    def __init__(
        self,
        surrogate: Surrogate,
        training: Any,
        budget: Any,
        seq_len: int,
        seed: int = 0,
        oracle: bool = False,
    ):
        """``training`` and ``budget``: a study's training section and its space's budget."""
        self.surrogate, self.profile = surrogate, surrogate.profile
        self.training, self.limits, self.seq_len, self.seed = training, budget, seq_len, seed
        #: Report the final accuracy at every rung: halving's ceiling, for the benchmark.
        self.oracle = oracle

    def budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """Exact params, predicted memory (CPU, fp32 activations) and over-budget reason."""
        params = autopeft.candidate_trainable_params(candidate, self.profile)
        pred = autopeft.predict_memory(
            self.profile, candidate, params, self.training.batch_size, self.seq_len, "cpu"
        ).total_mb
        return params, pred, self.limits.violation(params, pred, self.profile.base_params)

    def run(
        self,
        candidate: Candidate,
        report: Callable[[int, dict[str, float]], bool] | None,
        eval_at: set[int],
    ) -> TrialResult:
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
        curves = self.surrogate.sample_curves(candidate, self.seed)
        total, history = self.training.steps, []
        for step in sorted(set(eval_at) | {total}):
            at = total if self.oracle else step
            metrics = {name: self.surrogate.at(curve, at) for name, curve in curves.items()}
            history.append({"step": step, **metrics})
            if report is not None and step < total and not report(step, metrics):
                return TrialResult(
                    status=TrialStatus.PRUNED, metrics=metrics, history=history, steps=step, **base
                )
        return TrialResult(
            status=TrialStatus.COMPLETE,
            metrics=dict(metrics),
            peak_memory_mb=pred,
            memory_kind=CPU_ESTIMATE,
            steps=total,
            history=history,
            **base,
        )


def fit_summary(fit: dict) -> str:
    """The surrogate's leave-one-out quality (:meth:`Surrogate.report`) in one paragraph."""
    cls, cur = fit["p_learn"], fit["learner_final_accuracy"]
    exp = fit["expected_final_accuracy"]
    lo, hi = fit["accuracy_range"]
    # Without a trial that never learned there is no P(learns) to fit (it is 1).
    p_learn = (
        f"P(learns) AUC {cls['loo_auc']:.3f}, log-loss {cls['loo_log_loss']:.3f} (constant "
        f"{cls['constant_log_loss']:.3f}); "
        if cls
        else ""
    )
    floor = (
        f"{fit['learned']} of which beat the constant predictor ({fit['majority_accuracy']:.4f})"
        if fit["majority_accuracy"] is not None
        else "none of which ever predicted a single class (every trial learns)"
    )
    return (
        f"Surrogate: fitted to {fit['n']} real {fit.get('steps', [40])[-1]}-step trials of "
        f"`search_spaces/bench.yaml` ({fit.get('source', 'minilm, rotten_tomatoes')}; final "
        f"accuracy {lo:.3f}..{hi:.3f}), {floor}. Leave-one-out: {p_learn}learners' final accuracy "
        f"RMSE {cur['loo_rmse']:.4f} (constant {cur['constant_loo_rmse']:.4f}); expected "
        f"final accuracy of all trials MAE {exp['loo_mae']:.4f} (constant "
        f"{exp['constant_loo_mae']:.4f}), RMSE {exp['loo_rmse']:.4f} (constant "
        f"{exp['constant_loo_rmse']:.4f}), Spearman {exp['loo_spearman']:.2f}. Parameters and "
        "predicted memory are exact."
    )


def feature_sets(text: str) -> tuple[str, ...]:
    """``all,log_params`` -> the feature sets, or the rule and the value."""
    sets = tuple(text.split(","))
    if not sets or set(sets) - set(FEATURE_SETS):
        raise argparse.ArgumentTypeError(
            f"feature sets are {', '.join(FEATURE_SETS)} (comma-separated), but got {text!r}"
        )
    return sets


def main() -> None:
    """Fit a real-trials file and print the leave-one-out report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.surrogate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=DATA, help="real trials (jsonl)")
    parser.add_argument(
        "--features",
        type=feature_sets,
        default=("all",),
        help="learner-curve feature sets, chosen per step by leave-one-out: 'all' (default) "
        "or 'all,log_params'",
    )
    args = parser.parse_args()
    fit = Surrogate.from_jsonl(args.data, feature_sets=args.features).report()
    print(fit_summary(fit))
    print(json.dumps(fit, indent=1))


if __name__ == "__main__":
    main()

"""Re-evaluation of front points over training seeds (``autopeft reeval``).

Each front point is retrained with several training seeds; per-seed results and their mean and
standard deviation are kept in the study's user attributes ``reeval.<trial>`` (read by the
report). Seeds measured before, by an earlier reeval or by the search trial itself, are reused.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError, Problem
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.study_tools import at_least_one, status_counts

#: Study user attributes ``reeval.<trial>``, read by :mod:`autopeft.report.tables`.
REEVAL_ATTR = "reeval"

SeedRunner = Callable[[Candidate, int], TrialResult]


def reeval(
    study: Any,
    top: int = 5,
    seeds: int = 5,
    run: SeedRunner | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Retrain the ``top`` front points (best task metric first) with ``seeds`` training seeds.

    The study gets a ``reeval.<trial>`` user attribute per trial: per-seed metrics and their
    mean/std, so a report can draw error bars. The data split and the base model stay fixed;
    only the training seed (adapter init, batch order, dropout) changes.

    A (candidate, seed) already measured is not trained again: a seed an earlier reeval
    completed is taken from the study, and so is the trial's own search result for the
    study's training seed (``training.seed``: the same training). Running it again with the
    same ``seeds`` trains nothing; with more, only the new seeds. A seed that failed is
    trained again (a failure may be transient, e.g. out of memory beside another job).
    The record keeps every seed measured, also those beyond ``seeds``.

    Args:
        study: an open :class:`~autopeft.search.study.Study`.
        top: front points to re-evaluate.
        seeds: training seeds ``0..seeds-1``.
        run: ``(candidate, seed) -> TrialResult``; default: real training at full fidelity
            (a synthetic runner in tests and benchmarks). The default loads the model only
            when something needs training.
        progress: called with one line before each training and for the seeds reused (the
            CLI prints them on stderr); None: silent.

    Returns:
        One row per re-evaluated trial: ``trial``, ``metric``, ``seeds`` (per-seed status,
        metrics and the error of a failed seed, by seed), ``mean`` (None when every seed
        failed), ``std``, ``trained`` (seeds trained by this call) and ``reused`` (seeds
        measured before).

    Raises:
        ConfigError: for ``top < 1`` or ``seeds < 1`` (checked before anything is trained or
            written), or a study with no front (no COMPLETE trial).
    """
    for name, value in (("top", top), ("seeds", seeds)):
        at_least_one(name, value)
    metric = study.config.task.metric
    everything = study.front_points()
    if not everything:
        raise ConfigError(
            Problem(
                "STUDY",
                f"the study {study.config.name!r} has no Pareto front to re-evaluate: "
                f"{status_counts(study)}",
                hint="only COMPLETE trials form the front; run more trials, or relax the "
                "budget if every trial is INFEASIBLE",
            )
        )
    # Best task metric first, in its direction (the lowest eval_loss, the highest accuracy).
    scores = {n: study.config.task_score(r.metrics) for n, r in everything}

    def rank(item: tuple[int, TrialResult]) -> float:
        score = scores[item[0]]
        return float("inf") if score is None else -score

    front = sorted(everything, key=rank)[:top]
    say = progress or (lambda line: None)
    runner = run
    out = []
    for k, (number, result) in enumerate(front, start=1):
        where = f"reeval: front point {k}/{len(front)} (trial {number})"
        runs = _measured_seeds(study, number, result, seeds)
        reused = [seed for seed in range(seeds) if seed in runs]
        if reused:
            say(f"{where}: {len(reused)} of {seeds} seeds measured before, not retrained")
        trained = 0
        for seed in range(seeds):
            if seed in runs:
                continue
            say(f"{where}, seed {seed + 1}/{seeds}: training")
            runner = runner or _training_seed_runner(study)  # the model loads only if needed
            res = runner(result.candidate, seed)
            runs[seed] = {"seed": seed, "status": res.status.value, **res.metrics}
            if res.error:
                runs[seed]["error"] = res.error
            trained += 1
            # Kept after every seed: an interrupted reeval resumes from here.
            summary = _seed_summary(metric, runs)
            study.optuna.set_user_attr(f"{REEVAL_ATTR}.{number}", summary)
        summary = _seed_summary(metric, runs)
        if not trained:
            # Also when nothing was trained: the search result may be a seed of its own now.
            study.optuna.set_user_attr(f"{REEVAL_ATTR}.{number}", summary)
        out.append({"trial": number, **summary, "trained": trained, "reused": len(reused)})
    return out


def _measured_seeds(
    study: Any, number: int, result: TrialResult, seeds: int
) -> dict[int, dict[str, Any]]:
    """The seeds of front trial ``number`` already measured, by seed (see :func:`reeval`).

    An earlier reeval's completed seeds, and the trial's own result when the study's training
    seed is one of the ``seeds`` asked for (the search trained it exactly so).
    """
    record = study.optuna.user_attrs.get(f"{REEVAL_ATTR}.{number}") or {}
    runs: dict[int, dict[str, Any]] = {}
    for item in record.get("seeds", []):
        if item.get("status") == TrialStatus.COMPLETE.value and isinstance(item.get("seed"), int):
            runs[item["seed"]] = item
    own = study.config.training.seed
    if own < seeds and own not in runs and result.status is TrialStatus.COMPLETE:
        runs[own] = {"seed": own, "status": result.status.value, **result.metrics, "trial": number}
    return runs


def _seed_summary(metric: str, runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The ``reeval.<trial>`` record: the runs by seed, the metric's mean and std."""
    ordered = [runs[seed] for seed in sorted(runs)]
    values = [float(r[metric]) for r in ordered if isinstance(r.get(metric), (int, float))]
    return {
        "metric": metric,
        "seeds": ordered,
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def _training_seed_runner(study) -> SeedRunner:
    """Real training of a candidate under a given training seed (model loaded once)."""
    from autopeft.train.trial import TrialContext, run_trial

    ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
    base_config = ctx.config

    def run(candidate: Candidate, seed: int) -> TrialResult:
        training = base_config.training.model_copy(update={"seed": seed})
        ctx.config = base_config.model_copy(update={"training": training})
        try:
            return run_trial(ctx, candidate)
        finally:
            ctx.config = base_config

    return run

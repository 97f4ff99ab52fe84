"""A study's trials and front as pandas DataFrames, with named columns.

One row per trial; columns, in order:

- ``number``, ``state`` (Optuna's), ``status`` (autopeft's: COMPLETE, PRUNED, INFEASIBLE,
  FAILED, or RUNNING/WAITING for a trial without a result), ``reused`` (for a re-proposed
  candidate that took over an earlier result, the trial that trained it), ``retry_of`` (for a
  trial that re-ran an interrupted one, that trial);
- one column per objective, named as the study names it (``accuracy``, ``trainable_params``,
  ``peak_memory``): the values Optuna was told;
- one column per other metric the trials produced (``eval_loss``, ``f1``,
  ``truncated_share``), by its name;
- the measurements: ``head_params``, ``peak_memory_mb``, ``predicted_memory_mb``,
  ``memory_kind``, ``steps``, ``wall_time_s``, ``tokens_per_s``;
- one column per search parameter, ``param.<name>`` (``param.lora.rank``);
- ``candidate`` (one-line description) and ``error``.

Integer columns stay integers where a row has no value (pandas ``Int64``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from autopeft.core.trial_result import TrialResult, TrialStatus

if TYPE_CHECKING:
    import pandas as pd
    from optuna.trial import FrozenTrial

    from autopeft.search.study import Study

#: Measurement columns after the metrics, and the TrialResult field each reads.
MEASUREMENTS = (
    "head_params",
    "peak_memory_mb",
    "predicted_memory_mb",
    "memory_kind",
    "steps",
    "wall_time_s",
    "tokens_per_s",
)
INTEGER_COLUMNS = ("number", "reused", "retry_of", "trainable_params", "head_params", "steps")


def retries(trials: Iterable[FrozenTrial]) -> dict[int, int]:
    """``{interrupted trial: the trial that re-ran it}`` (from the re-run's ``retry_of``)."""
    from autopeft.search.study import RETRY_OF_ATTR

    return {t.user_attrs[RETRY_OF_ATTR]: t.number for t in trials if RETRY_OF_ATTR in t.user_attrs}


def untold_note(trial: FrozenTrial, retried: dict[int, int]) -> str:
    """Why a trial has no result: ``interrupted (re-run as trial N)``, or ``""`` if running."""
    from autopeft.search.study import CANDIDATE_ATTR, INTERRUPTED_ATTR

    if not trial.user_attrs.get(INTERRUPTED_ATTR):
        return ""
    if trial.number in retried:
        return f"interrupted (re-run as trial {retried[trial.number]})"
    if CANDIDATE_ATTR not in trial.user_attrs:
        return "interrupted while its parameters were sampled (not re-run)"
    return "interrupted (not re-run)"


def reused_from(study: Study, results: dict[int, TrialResult]) -> dict[int, int]:
    """``{reused trial: the trial that trained its candidate}``.

    The trained one is the latest earlier trial of the same candidate with a reusable result
    (``Study.propose`` keeps the latest one per candidate).
    """
    from autopeft.search.study import REUSABLE, REUSED_ATTR

    trials = {t.number: t for t in study.optuna.get_trials(deepcopy=False)}
    trained: dict[str, int] = {}
    out: dict[int, int] = {}
    for number in sorted(results):
        key = results[number].candidate.key()
        if trials[number].user_attrs.get(REUSED_ATTR):
            if key in trained:
                out[number] = trained[key]
        elif results[number].status in REUSABLE:
            trained[key] = number
    return out


def trials_frame(study: Study, numbers: Iterable[int] | None = None) -> pd.DataFrame:
    """The trials of ``study`` (``numbers`` only, in that order, when given) as a DataFrame."""
    import pandas as pd

    from autopeft.search.study import INTERRUPTED_ATTR, RETRY_OF_ATTR

    trials = {t.number: t for t in study.optuna.get_trials(deepcopy=False)}
    results = dict(study.results())
    reused = reused_from(study, results)
    retried = retries(trials.values())
    wanted = sorted(trials) if numbers is None else list(numbers)
    others = sorted(
        {m for n in wanted if n in results for m in results[n].metrics} - set(study.metrics)
    )

    rows = []
    for number in wanted:
        trial, result = trials[number], results.get(number)
        row: dict[str, Any] = {"number": number, "state": trial.state.name}
        if result is not None:
            row["status"] = result.status.value
        elif trial.user_attrs.get(INTERRUPTED_ATTR):
            row["status"] = TrialStatus.FAILED.value
        else:  # running or queued: no status of its own yet
            row["status"] = trial.state.name
        row["reused"] = reused.get(number)
        row["retry_of"] = trial.user_attrs.get(RETRY_OF_ATTR)
        values = study.values_of(result) if result is not None else []
        for i, metric in enumerate(study.metrics):
            row[metric] = values[i] if values else None
        for metric in others:
            row[metric] = result.metrics.get(metric) if result is not None else None
        for field in MEASUREMENTS:
            value = getattr(result, field) if result is not None else None
            row[field] = getattr(value, "value", value)  # an enum's value
        row.update({f"param.{k}": v for k, v in trial.params.items()})
        row["candidate"] = result.candidate.describe() if result is not None else None
        row["error"] = result.error if result is not None else untold_note(trial, retried) or None
        rows.append(row)

    columns = ["number", "state", "status", "reused", "retry_of", *study.metrics, *others]
    columns += list(MEASUREMENTS)
    params = sorted({k for row in rows for k in row if k.startswith("param.")})
    frame = pd.DataFrame(rows, columns=[*columns, *params, "candidate", "error"])
    _keep_integers(frame, trials.values(), params)
    return frame


def front_frame(study: Study) -> pd.DataFrame:
    """The study's Pareto front (see :meth:`Study.front_points`), best first objective first."""
    numbers = [p.number for p in study.front_points()]
    frame = trials_frame(study, numbers)
    first = study.metrics[0]
    ascending = study.direction_of(first) != "maximize"
    return frame.sort_values(first, ascending=ascending, kind="stable").reset_index(drop=True)


def _keep_integers(frame: pd.DataFrame, trials: Iterable[FrozenTrial], params: list[str]) -> None:
    """Integer columns stay integers where a row has no value (``Int64``), not floats."""
    ints = [c for c in INTEGER_COLUMNS if c in frame.columns]
    trials = list(trials)
    for column in params:
        name = column.removeprefix("param.")
        raw = [t.params[name] for t in trials if name in t.params]
        if raw and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            ints.append(column)
    for column in ints:
        frame[column] = frame[column].astype("Int64")

"""The report's figure data as plain tables (lists of dicts): pure, testable, no plotly.

:class:`StudyData` is a snapshot of what a report needs from a study (results, objectives,
reused/interrupted trials, reference point, model depth, configuration). It is taken from a
:class:`~autopeft.search.study.Study` with :meth:`StudyData.from_study` or built directly from
``(number, TrialResult)`` pairs. Every other function maps a ``StudyData`` to rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from autopeft.core.pareto import hypervolume_history, knee_point, known, pareto_front, present
from autopeft.core.secrets import masked_config
from autopeft.core.trial_result import MemoryKind, TrialResult, TrialStatus
from autopeft.reeval import REEVAL_ATTR
from autopeft.search.frames import retries, untold_note

Row = dict[str, Any]
#: Study user attributes ``reeval.<trial>`` (written by :func:`autopeft.reeval.reeval`).
REEVAL_PREFIX = f"{REEVAL_ATTR}."
STATUSES = [s.value for s in TrialStatus]


@dataclass
class StudyData:
    """What the report reads from a study, as plain data.

    Attributes:
        name: the study name.
        metrics: objective metrics, in order.
        directions: ``"maximize"``/``"minimize"`` per objective.
        results: ``(trial number, TrialResult)`` of every told trial, by number.
        num_layers: transformer blocks of the model (rows of the placement heatmap).
        config: the study configuration as JSON-ready data.
        reference: the hypervolume reference point (derived from the results when None).
        reused: trials that reused an identical earlier candidate's result (not compute).
        untold: trials without a result: ``{number: (state, note)}`` (running, interrupted).
        reeval: seed re-evaluations by trial number (``autopeft reeval``): the metric, the
            per-seed runs, mean and std.
    """

    name: str
    metrics: list[str]
    directions: list[str]
    results: list[tuple[int, TrialResult]]
    num_layers: int
    config: dict[str, Any] = field(default_factory=dict)
    reference: list[float] | None = None
    reused: set[int] = field(default_factory=set)
    untold: dict[int, tuple[str, str]] = field(default_factory=dict)
    reeval: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_study(cls, study: Any) -> StudyData:
        """Snapshot a :class:`~autopeft.search.study.Study`."""
        trials = study.optuna.get_trials(deepcopy=False)
        retried = retries(trials)
        untold = {
            t.number: (t.state.name, untold_note(t, retried))  # interrupted (re-run as trial N)
            for t in trials
            if "result" not in t.user_attrs
        }
        return cls(
            name=study.config.name,
            metrics=list(study.metrics),
            directions=list(study.directions),
            results=sorted(study.results(), key=lambda nr: nr[0]),
            num_layers=study.profile.num_layers,
            config=masked_config(study.config.model_dump(mode="json")),
            reference=list(study.reference_point()),
            reused={t.number for t in trials if t.user_attrs.get("reused")},
            untold=untold,
            reeval={
                int(key.removeprefix(REEVAL_PREFIX)): value
                for key, value in study.optuna.user_attrs.items()
                if key.startswith(REEVAL_PREFIX)
            },
        )

    def values(self, result: TrialResult) -> list[float | None]:
        """Objective values of ``result``."""
        return result.objective_values(self.metrics, self.directions)

    def counted(self) -> list[tuple[int, TrialResult]]:
        """COMPLETE trials that count for the front (reused results left out)."""
        return [
            (n, r)
            for n, r in self.results
            if r.status is TrialStatus.COMPLETE and n not in self.reused
        ]

    def known(self, result: TrialResult) -> list[float] | None:
        """The objective values of ``result`` when every one is known, else None."""
        return known(self.values(result))

    def front(self) -> list[tuple[int, TrialResult]]:
        """The Pareto front (as ``Study.front_points``: trials with every objective known)."""
        done, points = [], []
        for n, r in self.counted():
            if (values := self.known(r)) is not None:
                done.append((n, r))
                points.append(values)
        return [done[i] for i in pareto_front(points, self.directions)]

    def knee(self) -> int | None:
        """Trial number of the front's knee (:func:`~autopeft.core.pareto.knee_point`)."""
        front = self.front()
        points = [v for _, r in front if (v := self.known(r)) is not None]
        k = knee_point(points, self.directions)
        return None if k is None else front[k][0]

    def reference_point(self) -> list[float]:
        """The given reference point, else the worst metric / 1.1 x the largest value seen."""
        if self.reference is not None:
            return list(self.reference)
        seen = [self.values(r) for _, r in self.counted()]
        ref = []
        for i, d in enumerate(self.directions):
            col = present(v[i] for v in seen) or [1.0]
            ref.append(min(0.0, min(col)) if d == "maximize" else 1.1 * max(col))
        return ref

    def task_metric(self) -> str:
        """The study's task metric (older snapshots: the first maximised objective)."""
        metric = (self.config.get("task") or {}).get("metric")
        if metric:
            return str(metric)
        return next(
            (m for m, d in zip(self.metrics, self.directions) if d == "maximize"), "accuracy"
        )

    def task_better(self, values: list[float]) -> float | None:
        """The best of ``values`` of the task metric, in its direction (None when empty)."""
        if not values:
            return None
        lower = dict(zip(self.metrics, self.directions)).get(self.task_metric()) == "minimize"
        return min(values) if lower else max(values)


def label(metric: str, direction: str, unit: str = "") -> str:
    """An axis label: the metric, its unit (``[MiB; measured (CUDA)]``) and its direction."""
    where = f" [{unit}]" if unit else ""
    return f"{metric}{where} ({'higher' if direction == 'maximize' else 'lower'} is better)"


#: The objectives that are memory figures, in MiB.
MEMORY_METRICS = ("peak_memory", "predicted_memory")
#: How a memory figure was obtained, in the order they are named.
MEMORY_KINDS = ("measured (CUDA)", "CPU estimate", "predicted")


def memory_kind(result: TrialResult) -> str:
    """How the memory figure was obtained: measured, CPU estimate, predicted or none."""
    if result.peak_memory_mb is not None:
        return "measured (CUDA)" if result.memory_kind is MemoryKind.CUDA else "CPU estimate"
    return "predicted" if result.predicted_memory_mb is not None else ""


def head_only(result: TrialResult) -> bool:
    """Whether the candidate has no PEFT module: only the task head trains."""
    return not result.candidate.modules


def describe(result: TrialResult) -> str:
    """The candidate's description; a head-only one says how many head parameters train."""
    text = result.candidate.describe()
    if not head_only(result):
        return text
    what = (
        f"{result.head_params:,} trained head parameters"
        if result.head_params
        else "nothing trained: the model's head is frozen"
    )
    return text.replace("head only", f"head only ({what})", 1)


def unit(data: StudyData, metric: str) -> str:
    """What an objective's values are: its unit, and how a memory figure was obtained.

    ``peak_memory`` says which of measured (CUDA), CPU estimate and predicted the drawn
    trials (complete and pruned) stored; ``trainable_params`` says it counts the PEFT
    modules only (the task head, trained beside every candidate, is not counted).
    """
    if metric in MEMORY_METRICS:
        if metric == "predicted_memory":
            return "MiB; predicted"
        drawn = (TrialStatus.COMPLETE, TrialStatus.PRUNED)
        seen = {memory_kind(r) for _, r in data.results if r.status in drawn}
        kinds = [k for k in MEMORY_KINDS if k in seen]
        return "MiB" + (f"; {', '.join(kinds)}" if kinds else "")
    if metric == "trainable_params":
        head = any(r.head_params for _, r in data.results)
        return "excl. head" if head else ""
    if metric == "wall_time":
        return "s"
    return ""


def axis_label(data: StudyData, metric: str) -> str:
    """The label of an objective's axis: metric, unit and direction."""
    # An axis that is no objective (the seed plot's parameters) is a cost: lower is better.
    cost = "minimize" if metric in (*MEMORY_METRICS, "trainable_params", "wall_time") else None
    direction = dict(zip(data.metrics, data.directions)).get(metric, cost or "maximize")
    return label(metric, direction, unit(data, metric))


def error_text(result: TrialResult) -> str:
    """The reason a trial failed or was infeasible (with the step of a NaN), else ``""``."""
    if not result.error:
        return ""
    at = f" (step {result.error_step})" if result.error_step is not None else ""
    return result.error + at


def points(data: StudyData) -> list[Row]:
    """One row per told trial: status, objective values, front and knee flags, description."""
    front = {n for n, _ in data.front()}
    knee = data.knee()
    rows = []
    for n, r in data.results:
        vals = data.values(r)
        rows.append(
            {
                "number": n,
                "status": r.status.value,
                "front": n in front,
                "knee": n == knee,
                "reused": n in data.reused,
                "values": dict(zip(data.metrics, vals)),
                "description": describe(r),
                "methods": list(r.candidate.methods),
                "trainable_params": r.trainable_params,
                "head_only": head_only(r),
                "head_params": r.head_params,
                "memory_kind": memory_kind(r),
            }
        )
    return rows


def objective_pairs(data: StudyData) -> list[tuple[int, int]]:
    """Index pairs of objectives for the 2-D fronts."""
    return list(combinations(range(len(data.metrics)), 2))


def pair_front(data: StudyData, i: int, j: int) -> list[Row]:
    """The 2-D non-dominated staircase of objectives ``i`` and ``j`` (sorted along ``i``)."""
    done, pts = [], []
    for n, r in data.counted():
        if (pair := known([data.values(r)[i], data.values(r)[j]])) is not None:
            done.append(n)
            pts.append(pair)
    idx = pareto_front(pts, [data.directions[i], data.directions[j]])
    rows = [{"number": done[k], "x": pts[k][0], "y": pts[k][1]} for k in idx]
    return sorted(rows, key=lambda row: (row["x"], row["y"]))


def hypervolume_rows(data: StudyData) -> list[Row]:
    """Hypervolume after each trial (only COMPLETE, non-reused trials add points)."""
    counted = {n for n, _ in data.counted()}
    pts = [data.known(r) if n in counted else None for n, r in data.results]
    hist = hypervolume_history(pts, data.reference_point(), data.directions)
    rows, best = [], 0.0
    for (n, r), hv in zip(data.results, hist):
        rows.append(
            {"number": n, "hypervolume": hv, "improved": hv > best, "status": r.status.value}
        )
        best = max(best, hv)
    return rows


def trial_rows(data: StudyData) -> list[Row]:
    """The trial table: one row per trial, results and untold (running/interrupted) ones."""
    front = {n for n, _ in data.front()}
    rows = []
    for n, r in data.results:
        memory = r.peak_memory_mb if r.peak_memory_mb is not None else r.predicted_memory_mb
        rows.append(
            {
                "number": n,
                "status": r.status.value,
                "front": n in front,
                "reused": n in data.reused,
                "values": {m: r.objective(m) for m in data.metrics},  # no sentinels
                "trainable_params": r.trainable_params,
                "head_only": head_only(r),
                "head_params": r.head_params,
                "memory_mb": memory,
                "memory_kind": memory_kind(r),
                "steps": r.steps,
                "target_steps": r.target_steps,
                "wall_time_s": r.wall_time_s,
                "description": describe(r),
                "error": error_text(r),
            }
        )
    for n, (state, note) in data.untold.items():
        rows.append(
            {
                "number": n,
                "status": state,
                "front": False,
                "reused": False,
                "values": {},
                "trainable_params": None,
                "head_only": False,
                "head_params": 0,
                "memory_mb": None,
                "memory_kind": "",
                "steps": None,
                "target_steps": None,
                "wall_time_s": None,
                "description": "",
                "error": note,
            }
        )
    return sorted(rows, key=lambda row: row["number"])


def reeval_rows(data: StudyData) -> list[Row]:
    """Seed re-evaluations of front points, best mean first (failed seeds counted apart)."""
    by_number = dict(data.results)
    rows = []
    for n, rec in data.reeval.items():
        result = by_number.get(n)
        if result is None:
            continue
        metric = rec.get("metric") or data.task_metric()
        runs = rec.get("seeds", [])
        values = [run[metric] for run in runs if run.get(metric) is not None]
        rows.append(
            {
                "number": n,
                "metric": metric,
                "mean": rec.get("mean"),
                "std": rec.get("std") or 0.0,
                "min": min(values, default=None),
                "max": max(values, default=None),
                "seeds": len(values),
                "failed_seeds": len(runs) - len(values),
                "search": result.metrics.get(metric),
                "trainable_params": result.trainable_params,
                "head_only": head_only(result),
                "head_params": result.head_params,
                "description": describe(result),
            }
        )
    return sorted(rows, key=lambda row: -(row["mean"] if row["mean"] is not None else -1e9))


def search_cost(data: StudyData) -> Row:
    """Compute spent: GPU/CPU hours, trials by status, steps trained vs full fidelity.

    Reused results cost nothing. A trial's device is GPU when its memory was measured by
    CUDA; a trial without a memory figure (failed early, infeasible) counts on the device
    the study's other trials ran on (GPU if any did).
    """
    trained = [(n, r) for n, r in data.results if n not in data.reused]
    on_gpu = any(r.memory_kind is MemoryKind.CUDA for _, r in trained)
    gpu = cpu = 0.0
    for _, r in trained:
        kind = r.memory_kind
        if kind is MemoryKind.CUDA or (kind is None and on_gpu):
            gpu += r.wall_time_s / 3600
        else:
            cpu += r.wall_time_s / 3600
    by_status = Counter(r.status.value for _, r in data.results)
    states = {s: by_status.get(s, 0) for s in STATUSES}
    for state, _ in data.untold.values():
        states[state] = states.get(state, 0) + 1
    steps = sum(r.steps for _, r in trained)
    started = (TrialStatus.COMPLETE, TrialStatus.PRUNED)
    full = sum(r.target_steps for _, r in trained if r.steps or r.status in started)
    return {
        "gpu_hours": gpu,
        "cpu_hours": cpu,
        "wall_hours": gpu + cpu,
        "trials": len(data.results) + len(data.untold),
        "trained": len(trained),
        "reused": len(data.reused),
        "by_status": states,
        "steps_trained": steps,
        "steps_full_fidelity": full,
    }


def summary(data: StudyData) -> Row:
    """Headline numbers: trials, front size, hypervolume, reference point."""
    hv = hypervolume_rows(data)
    return {
        "name": data.name,
        "trials": len(data.results) + len(data.untold),
        "front": len(data.front()),
        "knee": data.knee(),
        "hypervolume": hv[-1]["hypervolume"] if hv else 0.0,
        "reference": data.reference_point(),
        "objectives": [axis_label(data, m) for m in data.metrics],
    }

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
from statistics import median
from typing import Any

from autopeft import methods
from autopeft.core.candidate import ModuleConfig
from autopeft.core.levers import LEVERS
from autopeft.core.pareto import hypervolume_history, knee_point, pareto_front
from autopeft.core.secrets import masked_config
from autopeft.core.trial_result import MemoryKind, TrialResult, TrialStatus
from autopeft.study_tools import REEVAL_ATTR, retries, untold_note

Row = dict[str, Any]
#: Study user attributes ``reeval.<trial>`` (written by :func:`autopeft.study_tools.reeval`).
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

    def front(self) -> list[tuple[int, TrialResult]]:
        """The Pareto front (as ``Study.front``)."""
        done = self.counted()
        idx = pareto_front([self.values(r) for _, r in done], self.directions)
        return [done[i] for i in idx]

    def knee(self) -> int | None:
        """Trial number of the front's knee (:func:`~autopeft.core.pareto.knee_point`)."""
        front = self.front()
        k = knee_point([self.values(r) for _, r in front], self.directions)
        return None if k is None else front[k][0]

    def reference_point(self) -> list[float]:
        """The given reference point, else the worst metric / 1.1 x the largest value seen."""
        if self.reference is not None:
            return list(self.reference)
        seen = [self.values(r) for _, r in self.counted()]
        ref = []
        for i, d in enumerate(self.directions):
            col = [v[i] for v in seen if v[i] is not None] or [1.0]
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


def label(metric: str, direction: str) -> str:
    """An axis label: the metric with its direction arrow."""
    return f"{metric} ({'higher' if direction == 'maximize' else 'lower'} is better)"


def memory_kind(result: TrialResult) -> str:
    """How the memory figure was obtained: measured, CPU estimate, predicted or none."""
    if result.peak_memory_mb is not None:
        return "measured (CUDA)" if result.memory_kind is MemoryKind.CUDA else "CPU estimate"
    return "predicted" if result.predicted_memory_mb is not None else ""


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
                "description": r.candidate.describe(),
                "methods": list(r.candidate.methods),
                "trainable_params": r.trainable_params,
            }
        )
    return rows


def objective_pairs(data: StudyData) -> list[tuple[int, int]]:
    """Index pairs of objectives for the 2-D fronts."""
    return list(combinations(range(len(data.metrics)), 2))


def pair_front(data: StudyData, i: int, j: int) -> list[Row]:
    """The 2-D non-dominated staircase of objectives ``i`` and ``j`` (sorted along ``i``)."""
    done = data.counted()
    pts = [[data.values(r)[i], data.values(r)[j]] for _, r in done]
    idx = pareto_front(pts, [data.directions[i], data.directions[j]])
    rows = [{"number": done[k][0], "x": pts[k][0], "y": pts[k][1]} for k in idx]
    return sorted(rows, key=lambda row: (row["x"], row["y"]))


def hypervolume_rows(data: StudyData) -> list[Row]:
    """Hypervolume after each trial (only COMPLETE, non-reused trials add points)."""
    counted = {n for n, _ in data.counted()}
    pts = [data.values(r) if n in counted else None for n, r in data.results]
    hist = hypervolume_history(pts, data.reference_point(), data.directions)
    rows, best = [], 0.0
    for (n, r), hv in zip(data.results, hist):
        rows.append(
            {"number": n, "hypervolume": hv, "improved": hv > best, "status": r.status.value}
        )
        best = max(best, hv)
    return rows


def module_size(cfg: ModuleConfig, layer: int) -> int:
    """The size/rank of a module in a layer (1 for module types without a size)."""
    try:
        size_param = methods.get(cfg.method).size_param
    except KeyError:
        size_param = None
    if cfg.sizes is None and size_param is not None and size_param not in cfg.params:
        return 1
    return cfg.size_at(layer, size_param)


def module_types(data: StudyData) -> list[str]:
    """Module types of the search space, then any others seen in results (stable order)."""
    space = list((data.config.get("search_space") or {}).get("modules") or {})
    seen = [m for _, r in data.results for m in r.candidate.methods]
    return list(dict.fromkeys(space + seen))


def placement(data: StudyData) -> list[Row]:
    """Heatmap cells (layer x module type) over the front configurations.

    ``count``: front configurations placing the module in the layer (with a non-zero size);
    ``mean_size``: their mean size/rank there; ``trials``: which front trials.
    """
    front = data.front()
    rows = []
    for layer in range(data.num_layers):
        for method in module_types(data):
            sizes, trials = [], []
            for n, r in front:
                cfg = r.candidate.module(method)
                if cfg is None or layer not in cfg.layers:
                    continue
                size = module_size(cfg, layer)
                if size > 0:
                    sizes.append(size)
                    trials.append(n)
            rows.append(
                {
                    "layer": layer,
                    "module": method,
                    "count": len(sizes),
                    "mean_size": sum(sizes) / len(sizes) if sizes else None,
                    "trials": trials,
                }
            )
    return rows


def module_summary(data: StudyData) -> list[Row]:
    """Per module type: trials, complete and front trials using it, best task metric, ranges."""
    metric = data.task_metric()
    front = {n for n, _ in data.front()}
    rows = []
    for method in module_types(data):
        using = [(n, r) for n, r in data.results if method in r.candidate.methods]
        done = [(n, r) for n, r in using if r.status is TrialStatus.COMPLETE]
        best = [r.objective(metric) for _, r in done if r.objective(metric) is not None]
        params = [r.trainable_params for _, r in using]
        sizes = [
            module_size(cfg, layer)
            for _, r in using
            if (cfg := r.candidate.module(method)) is not None
            for layer in (cfg.layers or (0,))
        ]
        layers = [len(cfg.layers) for _, r in using if (cfg := r.candidate.module(method))]
        rows.append(
            {
                "module": method,
                "trials": len(using),
                "complete": len(done),
                "front": sum(n in front for n, _ in using),
                "best_metric": data.task_better(best),
                "metric": metric,
                "params_min": min(params) if params else None,
                "params_max": max(params) if params else None,
                "size_min": min(sizes) if sizes else None,
                "size_max": max(sizes) if sizes else None,
                "mean_layers": sum(layers) / len(layers) if layers else None,
            }
        )
    return rows


def searched_levers(data: StudyData) -> list[str]:
    """The memory levers (:data:`~autopeft.core.levers.LEVERS`) the study's trials searched."""
    seen = {key for _, r in data.results for key in r.candidate.training}
    return [lever for lever in LEVERS if lever in seen]


def lever_text(value: Any) -> str:
    """A lever value as a study file writes it (``true``, ``nf4``, ``16``; unset: default)."""
    if value is None:
        return "default"
    return str(value).lower() if isinstance(value, bool) else str(value)


def lever_summary(data: StudyData) -> list[Row]:
    """Per searched lever, one row per value: what the trials with that value achieved.

    ``trials`` counts every told trial that trained (or would have) with the value;
    ``complete`` those that completed and were trained, not reused (the medians and the
    best metric are theirs, so a reused result is not counted twice); ``front`` how many
    are on the Pareto front. A trial whose candidate lacks a searched lever (one told
    before the lever was searched) ran with the study's fixed value and counts there.
    Values come in the order the search space lists them.
    """
    metric = data.task_metric()
    front = {n for n, _ in data.front()}
    counted = {n for n, _ in data.counted()}
    fixed = data.config.get("training") or {}
    domains = ((data.config.get("search_space") or {}).get("training") or {}).get("domains") or {}
    rows = []
    for lever in searched_levers(data):
        by_value: dict[str, list[tuple[int, TrialResult]]] = {
            lever_text(v): [] for v in (domains.get(lever) or {}).get("values") or []
        }
        for n, r in data.results:
            value = r.candidate.training.get(lever, fixed.get(lever))
            by_value.setdefault(lever_text(value), []).append((n, r))
        for value, trials in by_value.items():
            done = [r for n, r in trials if n in counted]
            best = [v for r in done if (v := r.objective(metric)) is not None]
            memory = [r.peak_memory_mb for r in done if r.peak_memory_mb is not None]
            speed = [r.tokens_per_s for r in done if r.tokens_per_s is not None]
            rows.append(
                {
                    "lever": lever,
                    "value": value,
                    "trials": len(trials),
                    "complete": len(done),
                    "front": sum(n in front for n, _ in trials),
                    "best_metric": data.task_better(best),
                    "metric": metric,
                    "median_memory_mb": median(memory) if memory else None,
                    "memory_kind": ", ".join(
                        sorted({memory_kind(r) for r in done if r.peak_memory_mb is not None})
                    ),
                    "median_tokens_per_s": median(speed) if speed else None,
                    "median_wall_time_s": median(r.wall_time_s for r in done) if done else None,
                }
            )
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
                "memory_mb": memory,
                "memory_kind": memory_kind(r),
                "steps": r.steps,
                "target_steps": r.target_steps,
                "wall_time_s": r.wall_time_s,
                "description": r.candidate.describe(),
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
                "description": result.candidate.describe(),
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
        "objectives": [label(m, d) for m, d in zip(data.metrics, data.directions)],
    }

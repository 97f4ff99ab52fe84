"""The report's per-module and per-lever summaries of a study (plain rows, no plotly)."""

from __future__ import annotations

from statistics import median
from typing import Any

from autopeft import methods
from autopeft.core.candidate import ModuleConfig
from autopeft.core.levers import LEVERS
from autopeft.core.pareto import present
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.report.tables import Row, StudyData, memory_kind


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
        best = present(r.objective(metric) for _, r in done)
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
            best = present(r.objective(metric) for r in done)
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

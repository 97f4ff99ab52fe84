"""A study's objectives: the metrics every task has, and the short form that names them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from autopeft.core.errors import RuleError, did_you_mean

#: Metrics of every task, with their natural direction: costs of the candidate and its run.
#: A task kind adds its own (``autopeft.tasks``: accuracy for classification, eval_loss and
#: exact_match for causal LMs), known to validation through the pydantic context ``tasks``.
METRICS = {
    "trainable_params": "minimize",
    "peak_memory": "minimize",
    "predicted_memory": "minimize",
    "wall_time": "minimize",
}
#: Objectives known before training: the method formulas give the parameters, the memory model
#: the memory (calibrated on the study's measurements by the pool samplers).
KNOWN_METRICS = ("trainable_params", "peak_memory", "predicted_memory")


class Objective(BaseModel):
    """One objective: a metric and a direction (``-name`` in the string form minimises)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    direction: Literal["maximize", "minimize"]


def parse_objectives(
    value: Any, task_metrics: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """Parse ``"accuracy, -trainable_params"`` or a list of names / dicts.

    Args:
        value: the objectives as written.
        task_metrics: the task kind's metrics with their natural directions; None (no task
            kinds known, e.g. a stored configuration) accepts any name that carries its
            direction (a mapping, or a ``+``/``-`` sign).
    """
    known = {**METRICS, **(task_metrics or {})}

    def unknown(name: str) -> bool:
        return name not in known and task_metrics is not None

    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise RuleError(
            "objectives must be a non-empty list",
            "e.g. 'accuracy, -trainable_params, -peak_memory'",
        )
    out = []
    for item in value:
        if isinstance(item, dict):  # {metric, direction}: the same name check as the short form
            name = item.get("metric")
            if not isinstance(name, str) or unknown(name):
                raise RuleError("unknown objective metric", did_you_mean(str(name), known), name)
            out.append(item)
            continue
        text = str(item)
        sign = text[:1] in "+-"
        name = text[1:] if sign else text
        if unknown(name) or (not sign and name not in known):
            raise RuleError("unknown objective metric", did_you_mean(name, known), name)
        direction = "minimize" if text.startswith("-") else "maximize" if sign else known[name]
        out.append({"metric": name, "direction": direction})
    names = [o.get("metric") for o in out]
    if len(set(names)) != len(names):
        raise RuleError(f"objectives must be distinct, but got {names}")
    return out

"""The report's HTML tables: cell formatting, the trial, module, lever, cost and seed tables.

Every cell's text is escaped here; :mod:`autopeft.report.html` places the tables (and draws
the figures) in the page.
"""

from __future__ import annotations

from html import escape
from typing import Any

from autopeft.report import summaries, tables
from autopeft.report.tables import StudyData

COLORS = {
    "front": "#d62728",
    "knee": "#ffbf00",
    "COMPLETE": "#7f7f7f",
    "PRUNED": "#9ecae1",
    "FAILED": "#ff7f0e",
    "INFEASIBLE": "#9467bd",
    "RUNNING": "#2ca02c",
    "FAIL": "#ff7f0e",
}


def fmt(value: Any, metric: str | None = None) -> str:
    """A table cell text for a number (objective-aware) or anything else."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if metric == "trainable_params":
        return f"{value:,.0f}"
    if metric in ("accuracy", "f1", "mcc", "exact_match"):
        return f"{value:.4f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if metric in ("peak_memory", "predicted_memory", "wall_time"):
        return f"{value:,.1f}"
    return f"{value:.3g}"


def robustness_table(data: StudyData) -> str:
    """Re-evaluated front points as HTML."""
    rows = tables.reeval_rows(data)
    if not rows:
        return ""
    metric = rows[0]["metric"]
    headers = ["trial", f"{metric} mean", "std", "min", "max", "seeds", "failed seeds"]
    headers += [f"{metric} in search", _params_header(data), "configuration"]
    cells = [
        [_num(r["number"])]
        + [_num(r[k], metric) for k in ("mean", "std", "min", "max")]
        + [_num(r["seeds"]), _num(r["failed_seeds"]), _num(r["search"], metric)]
        + [_params(r), f'<span class="desc">{escape(r["description"])}</span>']
        for r in rows
    ]
    return _table(headers, cells)


def header(data: StudyData, metric: str) -> str:
    """A column header for an objective: the metric and its unit (``peak_memory [MiB]``)."""
    unit = tables.unit(data, metric).split(";")[0]  # the basis has its own column
    return f"{metric} [{unit}]" if unit else metric


def _params_header(data: StudyData) -> str:
    return header(data, "trainable_params").replace("trainable_params", "trainable params")


def _params(row: dict[str, Any]) -> str:
    """A parameter-count cell; a head-only candidate's shows its head, not 0."""
    if row.get("head_only") and row.get("head_params"):
        return "NUM:" + escape(f"head {row['head_params']:,}")
    return _num(row["trainable_params"])


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """An HTML table; cells are given as ready HTML (escape text before)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        cells = "".join(
            f'<td class="num">{c[4:]}</td>' if c.startswith("NUM:") else f"<td>{c}</td>"
            for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num(value: Any, metric: str | None = None) -> str:
    return "NUM:" + escape(fmt(value, metric))


def _status(status: str) -> str:
    color = COLORS.get(status, "#444")
    return f'<span class="status" style="background:{color}">{escape(status)}</span>'


def trials_table(data: StudyData, front_only: bool = False) -> str:
    """The trial table (or only the front's rows) as HTML."""
    rows = [r for r in tables.trial_rows(data) if r["front"] or not front_only]
    params = "trainable_params" not in data.metrics
    headers = ["trial", "status", *(header(data, m) for m in data.metrics)]
    headers += [_params_header(data)] * params
    headers += ["peak memory [MiB]", "memory is", "steps", "wall [s]", "configuration"]
    headers += [] if front_only else ["reason"]
    cells, classes = [], []
    for r in rows:
        status = r["status"] + (" (reused)" if r["reused"] else "")
        steps = f"{r['steps']}/{r['target_steps']}" if r["steps"] is not None else ""
        cells.append(
            [_num(r["number"]), _status(status)]
            + [
                _params(r) if m == "trainable_params" else _num(r["values"].get(m), m)
                for m in data.metrics
            ]
            + [_params(r)] * params
            + [_num(r["memory_mb"], "peak_memory"), escape(r["memory_kind"]), _num(steps)]
            + [_num(r["wall_time_s"], "wall_time")]
            + [f'<span class="desc">{escape(r["description"])}</span>']
            + ([] if front_only else [f'<span class="err">{escape(r["error"])}</span>'])
        )
        classes.append("front" if r["front"] else "")
    return _table(headers, cells, classes)


def modules_table(data: StudyData) -> str:
    """Per-module-type summary as HTML."""
    rows = summaries.module_summary(data)
    metric = data.task_metric()
    headers = ["module", "trials", "complete", "on front", f"best {metric}"]
    headers += ["trainable params (min-max)", "size/rank (min-max)", "mean layers"]
    cells = [
        [escape(r["module"]), _num(r["trials"]), _num(r["complete"]), _num(r["front"])]
        + [_num(r["best_metric"], metric)]
        + [_num(f"{fmt(r['params_min'])} - {fmt(r['params_max'])}" if r["trials"] else "")]
        + [_num(f"{fmt(r['size_min'])} - {fmt(r['size_max'])}" if r["trials"] else "")]
        + [_num(r["mean_layers"])]
        for r in rows
    ]
    return _table(headers, cells)


def cost_table(data: StudyData) -> str:
    """Search cost as HTML."""
    c = tables.search_cost(data)
    saved = 1 - c["steps_trained"] / c["steps_full_fidelity"] if c["steps_full_fidelity"] else 0
    rows = [
        ("GPU-hours", f"{c['gpu_hours']:.3f}"),
        ("CPU-hours", f"{c['cpu_hours']:.3f}"),
        ("trials", fmt(c["trials"])),
        ("trained (not reused)", fmt(c["trained"])),
        ("reused identical candidates", fmt(c["reused"])),
        *((f"trials {k}", fmt(v)) for k, v in c["by_status"].items()),
        ("steps trained", fmt(c["steps_trained"])),
        ("steps at full fidelity", fmt(c["steps_full_fidelity"])),
        ("saved by successive halving", f"{100 * saved:.1f}%"),
    ]
    return _table(["", ""], [[escape(k), "NUM:" + escape(v)] for k, v in rows])


def levers_table(data: StudyData) -> str:
    """Per searched memory lever and value: trials, front share, quality, memory, speed."""
    rows = summaries.lever_summary(data)
    metric = data.task_metric()
    headers = ["lever", "value", "trials", "complete (trained)", "on front", f"best {metric}"]
    headers += ["median peak MiB", "memory is", "median tokens/s", "median wall s"]
    cells = [
        [escape(r["lever"]), f"<code>{escape(r['value'])}</code>", _num(r["trials"])]
        + [_num(r["complete"]), _num(r["front"]), _num(r["best_metric"], metric)]
        + [_num(r["median_memory_mb"], "peak_memory"), escape(r["memory_kind"])]
        + [_num(r["median_tokens_per_s"]), _num(r["median_wall_time_s"], "wall_time")]
        for r in rows
    ]
    return _table(headers, cells)


def levers_section(data: StudyData) -> list[str]:
    """The memory-lever section of the page; nothing when the study searched no lever."""
    if not summaries.searched_levers(data):
        return []
    return [
        "<h2>Memory levers</h2>",
        '<div class="sub">Each searched lever by value (autopeft.core.levers): how its '
        "trials did. The medians are over completed trials; every point's hover and the "
        "configuration column show its own levers.</div>",
        levers_table(data),
    ]

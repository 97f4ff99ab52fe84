"""The HTML report: plotly figures built from :mod:`autopeft.report.tables`, one offline file.

plotly.js is embedded once (a ``<script>`` in the head); every figure is a
``<div class="autopeft-plot">`` drawn by ``Plotly.newPlot``. No network references: no CDN,
no external fonts or images. A small inline script records JavaScript errors in the
``data-js-errors`` attribute of ``<html>`` so a headless browser can check them.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import yaml
from plotly.offline import get_plotlyjs

from autopeft.report import tables
from autopeft.report.assets import CSS, ERRORS_JS
from autopeft.report.tables import StudyData, label

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
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


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


def _hover_text(row: dict[str, Any]) -> str:
    return escape(row["description"] or "head only").replace(" | ", "<br>")


def _axis(metric: str, direction: str, values: list[float]) -> dict[str, Any]:
    # Parameter counts span orders of magnitude: log scale unless a head-only point (0).
    axis: dict[str, Any] = {"title": {"text": label(metric, direction)}, "type": "linear"}
    if metric == "trainable_params" and values and min(values) > 0:
        lo, hi = min(values) / 1.5, max(values) * 1.5
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        vals = [m * 10**k for k in decades for m in (1, 2, 5) if lo <= m * 10**k <= hi]
        axis |= {"type": "log", "tickvals": vals, "ticktext": [_si(v) for v in vals]}
    return axis


def _si(value: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:g}{unit}"
    return f"{value:g}"


def _plottable(row: dict[str, Any], *metrics: str) -> bool:
    vals = [row["values"].get(m) for m in metrics]
    return all(v is not None and abs(v) != float("inf") for v in vals)


def pair_figure(data: StudyData, i: int, j: int) -> go.Figure:
    """Objective ``i`` vs ``j``: all evaluated trials, the study front, the pair's staircase."""
    mi, mj = data.metrics[i], data.metrics[j]
    rows = [r for r in tables.points(data) if _plottable(r, mi, mj)]
    groups = [  # name, which rows, colour, marker size, symbol
        ("pruned (last rung)", lambda r: r["status"] == "PRUNED", COLORS["PRUNED"], 7, "circle"),
        (
            "complete",
            lambda r: r["status"] == "COMPLETE" and not r["front"],
            COLORS["COMPLETE"],
            8,
            "circle",
        ),
        ("Pareto front", lambda r: r["front"], COLORS["front"], 11, "circle"),
        ("knee (balanced trade-off)", lambda r: r["knee"], COLORS["knee"], 18, "star"),
    ]
    fig = go.Figure()
    for name, keep, color, size, symbol in groups:
        sel = [r for r in rows if keep(r) and not r["reused"]]
        fig.add_trace(
            go.Scatter(
                x=[r["values"][mi] for r in sel],
                y=[r["values"][mj] for r in sel],
                mode="markers",
                name=name,
                marker={
                    "color": color,
                    "size": size,
                    "symbol": symbol,
                    "line": {"width": 1, "color": "#333"},
                },
                customdata=[[r["number"], r["status"], _hover_text(r)] for r in sel],
                hovertemplate=f"trial %{{customdata[0]}} (%{{customdata[1]}})<br>{mi}: %{{x}}"
                f"<br>{mj}: %{{y}}<br>%{{customdata[2]}}<extra></extra>",
            )
        )
    stairs = tables.pair_front(data, i, j)
    fig.add_trace(
        go.Scatter(
            x=[s["x"] for s in stairs],
            y=[s["y"] for s in stairs],
            mode="lines",
            name="2-D front of this pair",
            line={"color": COLORS["front"], "dash": "dot", "width": 1.5},
            line_shape="hv" if data.directions[i] == "minimize" else "vh",
            hoverinfo="skip",
        )
    )
    xs, ys = [r["values"][mi] for r in rows], [r["values"][mj] for r in rows]
    fig.update_layout(
        title={"text": f"{mj} vs {mi}"},
        xaxis=_axis(mi, data.directions[i], xs),
        yaxis=_axis(mj, data.directions[j], ys),
    )
    return _style(fig, 430)


def figure_3d(data: StudyData) -> go.Figure:
    """The three objectives in 3-D: evaluated trials, the front and its knee."""
    m = data.metrics
    rows = [r for r in tables.points(data) if _plottable(r, *m) and r["status"] == "COMPLETE"]
    fig = go.Figure()
    for name, sel, color, size in [
        ("complete", [r for r in rows if not r["front"] and not r["reused"]], "#9a9a9a", 4),
        ("Pareto front", [r for r in rows if r["front"]], COLORS["front"], 6),
        ("knee (balanced trade-off)", [r for r in rows if r["knee"]], COLORS["knee"], 10),
    ]:
        fig.add_trace(
            go.Scatter3d(
                x=[r["values"][m[0]] for r in sel],
                y=[r["values"][m[1]] for r in sel],
                z=[r["values"][m[2]] for r in sel],
                mode="markers",
                name=name,
                marker={"color": color, "size": size},
                customdata=[[r["number"], _hover_text(r)] for r in sel],
                hovertemplate="trial %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            )
        )
    axes = {
        f"{a}axis": _axis(m[k], data.directions[k], [r["values"][m[k]] for r in rows])
        | {"title": {"text": m[k]}}
        for k, a in enumerate("xyz")
    }
    fig.update_layout(
        title={"text": "All three objectives"},
        scene=axes | {"camera": {"eye": {"x": 1.9, "y": 1.7, "z": 1.0}}, "aspectmode": "cube"},
    )
    _style(fig, 430)
    fig.update_layout(margin={"l": 0, "r": 0, "t": 50, "b": 0}, legend={"y": 1.0, "x": 0.0})
    return fig


def hypervolume_figure(data: StudyData) -> go.Figure:
    """Hypervolume of the front after each trial; markers where a trial improved it."""
    rows = tables.hypervolume_rows(data)
    better = [r for r in rows if r["improved"]]
    fig = go.Figure(
        [
            go.Scatter(
                x=[r["number"] for r in rows],
                y=[r["hypervolume"] for r in rows],
                mode="lines",
                line_shape="hv",
                name="hypervolume",
                line={"color": "#1f77b4"},
            ),
            go.Scatter(
                x=[r["number"] for r in better],
                y=[r["hypervolume"] for r in better],
                mode="markers",
                name="improved by this trial",
                marker={"color": COLORS["front"], "size": 7},
            ),
        ]
    )
    ref = ", ".join(f"{m} {fmt(v, m)}" for m, v in zip(data.metrics, data.reference_point()))
    fig.update_layout(
        title={"text": "Hypervolume of the front over trials"},
        xaxis={"title": {"text": f"trial<br><sub>reference point: {escape(ref)}</sub>"}},
        yaxis={"title": {"text": "hypervolume"}, "exponentformat": "e"},
    )
    _style(fig, 380)
    fig.update_layout(margin={"b": 80}, legend={"y": -0.32})
    return fig


def status_figure(data: StudyData) -> go.Figure:
    """Trials by final status."""
    states = tables.search_cost(data)["by_status"]
    fig = go.Figure(
        go.Bar(
            x=list(states),
            y=list(states.values()),
            marker={"color": [COLORS.get(s, "#444") for s in states]},
            text=list(states.values()),
            textposition="auto",
        )
    )
    fig.update_layout(title={"text": "Trials by status"}, showlegend=False)
    return _style(fig, 380)


def placement_figure(data: StudyData) -> go.Figure:
    """Heatmap layer x module type over the front: how many configurations, mean size."""
    cells = tables.placement(data)
    mods = tables.module_types(data)
    grid = {(c["layer"], c["module"]): c for c in cells}
    layers = list(range(data.num_layers))
    z = [[grid[(ly, m)]["count"] for m in mods] for ly in layers]
    text = [[fmt(grid[(ly, m)]["mean_size"]) for m in mods] for ly in layers]
    trials = [[", ".join(map(str, grid[(ly, m)]["trials"])) for m in mods] for ly in layers]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=mods,
            y=[f"layer {ly}" for ly in layers],
            text=text,
            texttemplate="%{text}",
            customdata=trials,
            colorscale="Blues",
            zmin=0,
            zmax=max(1, len(data.front())),
            colorbar={"title": {"text": "front configs"}},
            hovertemplate="%{y}, %{x}<br>%{z} front configurations, mean size %{text}"
            "<br>trials: %{customdata}<extra></extra>",
        )
    )
    title = (
        f"Placement on the front ({len(data.front())} configurations; "
        "colour: how many place the module there, number: their mean size/rank)"
    )
    fig.update_layout(title={"text": title}, xaxis={"side": "top"})
    return _style(fig, max(320, 110 + 26 * data.num_layers))


def robustness_figure(data: StudyData) -> go.Figure:
    """Re-evaluated front points: mean ± std over training seeds vs the search-time value."""
    rows = tables.reeval_rows(data)
    metric = rows[0]["metric"] if rows else data.task_metric()
    xs = [r["trainable_params"] for r in rows]
    hover = [[r["number"], r["seeds"], escape(r["description"])] for r in rows]
    fig = go.Figure(
        [
            go.Scatter(
                x=xs,
                y=[r["mean"] for r in rows],
                error_y={"type": "data", "array": [r["std"] for r in rows], "visible": True},
                mode="markers",
                name="mean ± std over seeds",
                marker={"color": COLORS["front"], "size": 10},
                customdata=hover,
                hovertemplate=f"trial %{{customdata[0]}}: {metric} %{{y:.4f}} ± "
                "%{error_y.array:.4f} over %{customdata[1]} seeds<br>%{customdata[2]}"
                "<extra></extra>",
            ),
            go.Scatter(
                x=xs,
                y=[r["search"] for r in rows],
                mode="markers",
                name="value found in the search (one seed)",
                marker={"color": "#444", "size": 9, "symbol": "circle-open"},
                hoverinfo="skip",
            ),
        ]
    )
    fig.update_layout(
        title={"text": f"Seed-robust {metric} of the front points (autopeft reeval)"},
        xaxis=_axis("trainable_params", "minimize", xs),
        yaxis={"title": {"text": metric}},
    )
    return _style(fig, 400)


def robustness_table(data: StudyData) -> str:
    """Re-evaluated front points as HTML."""
    rows = tables.reeval_rows(data)
    if not rows:
        return ""
    metric = rows[0]["metric"]
    headers = ["trial", f"{metric} mean", "std", "min", "max", "seeds", "failed seeds"]
    headers += [f"{metric} in search", "params", "configuration"]
    cells = [
        [_num(r["number"])]
        + [_num(r[k], metric) for k in ("mean", "std", "min", "max")]
        + [_num(r["seeds"]), _num(r["failed_seeds"]), _num(r["search"], metric)]
        + [_num(r["trainable_params"]), f'<span class="desc">{escape(r["description"])}</span>']
        for r in rows
    ]
    return _table(headers, cells)


def _robustness_section(data: StudyData) -> list[str]:
    if not data.reeval:
        return [
            "<h2>Seed robustness</h2>",
            '<div class="sub">No re-evaluation yet: <code>autopeft reeval STUDY --top 5 '
            "--seeds 5</code> retrains the best front points with several seeds; the report "
            "then shows their mean and spread here.</div>",
        ]
    return [
        "<h2>Seed robustness</h2>",
        _plot(robustness_figure(data), "robustness"),
        robustness_table(data),
    ]


def _style(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.2},
        font={"family": "DejaVu Sans, Arial, sans-serif", "size": 12},
    )
    return fig


def _plot(fig: go.Figure, plot_id: str) -> str:
    body = fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"{plot_id}-graph", config=PLOT_CONFIG
    )
    return f'<div class="autopeft-plot" id="{plot_id}">{body}</div>'


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
    headers = ["trial", "status", *data.metrics] + ["params"] * params
    headers += ["memory MiB", "memory is", "steps", "wall s", "configuration"]
    headers += [] if front_only else ["reason"]
    cells, classes = [], []
    for r in rows:
        status = r["status"] + (" (reused)" if r["reused"] else "")
        steps = f"{r['steps']}/{r['target_steps']}" if r["steps"] is not None else ""
        cells.append(
            [_num(r["number"]), _status(status)]
            + [_num(r["values"].get(m), m) for m in data.metrics]
            + [_num(r["trainable_params"])] * params
            + [_num(r["memory_mb"], "peak_memory"), escape(r["memory_kind"]), _num(steps)]
            + [_num(r["wall_time_s"], "wall_time")]
            + [f'<span class="desc">{escape(r["description"])}</span>']
            + ([] if front_only else [f'<span class="err">{escape(r["error"])}</span>'])
        )
        classes.append("front" if r["front"] else "")
    return _table(headers, cells, classes)


def modules_table(data: StudyData) -> str:
    """Per-module-type summary as HTML."""
    rows = tables.module_summary(data)
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


def render(data: StudyData) -> str:
    """The whole report as one HTML string."""
    s = tables.summary(data)
    cfg = data.config
    task = (cfg.get("task") or {}).get("name", "")
    sampler = (cfg.get("sampler") or {}).get("name", "")
    sub = (
        f"model {cfg.get('model', '')} &middot; task {task} &middot; sampler {sampler} &middot; "
        f"{s['trials']} trials &middot; front of {s['front']} (knee: trial {s['knee']}) "
        "&middot; "
        f"hypervolume {fmt(s['hypervolume'])}"
    )
    sub = escape(sub).replace("&amp;middot;", "&middot;")
    fronts = [
        _plot(pair_figure(data, i, j), f"pareto-{i}-{j}") for i, j in tables.objective_pairs(data)
    ]
    if len(data.metrics) == 3:
        fronts.append(_plot(figure_3d(data), "pareto-3d"))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    config_text = escape(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=96))
    parts = [
        f"<h1>autopeft report: {escape(data.name)}</h1>",
        f'<div class="sub">{sub}</div>',
        f'<div class="sub">Objectives: {escape("; ".join(s["objectives"]))}. '
        f"Generated {when}.</div>",
        "<h2>Pareto fronts</h2>",
        f'<div class="grid">{"".join(fronts)}</div>',
        "<h3>Front configurations</h3>",
        f'<div class="scroll">{trials_table(data, front_only=True)}</div>',
        "<h2>Progress</h2>",
        '<div class="grid">'
        + _plot(hypervolume_figure(data), "hypervolume")
        + _plot(status_figure(data), "status")
        + "</div>",
        *_robustness_section(data),
        "<h2>Placement and module types</h2>",
        _plot(placement_figure(data), "placement"),
        modules_table(data),
        "<h2>Search cost</h2>",
        cost_table(data),
        "<h2>Trials</h2>",
        f'<div class="scroll">{trials_table(data)}</div>',
        "<h2>Study configuration</h2>",
        f"<pre>{config_text}</pre>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>autopeft report: {escape(data.name)}</title>\n"
        f"<style>{CSS}</style>\n<script>{ERRORS_JS}</script>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        "</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )


def write_report(study: Any, path: str | Path) -> Path:
    """Write the self-contained HTML report of a study (or a :class:`StudyData`) to ``path``.

    Args:
        study: a :class:`~autopeft.search.study.Study` or a ``StudyData`` snapshot.
        path: the ``.html`` file to write (parent folders are created).

    Returns:
        The path written.
    """
    data = study if isinstance(study, StudyData) else StudyData.from_study(study)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data), encoding="utf-8")
    return out

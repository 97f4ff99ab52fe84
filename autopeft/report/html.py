"""The HTML report: plotly figures built from :mod:`autopeft.report.tables`, one offline file.

The page's tables are :mod:`autopeft.report.html_tables`'; this module draws the figures
and lays out the page.

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

from autopeft.report import summaries, tables
from autopeft.report.assets import CSS, ERRORS_JS
from autopeft.report.html_tables import (
    COLORS,
    cost_table,
    fmt,
    levers_section,
    modules_table,
    robustness_table,
    trials_table,
)
from autopeft.report.tables import StudyData, label

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _hover_text(row: dict[str, Any]) -> str:
    return escape(row["description"] or "head only").replace(" | ", "<br>")


#: Hover formats of the objectives with a unit (plotly's d3 format, then the unit).
_HOVER_UNITS = {
    "peak_memory": (":,.1f", " MiB"),
    "predicted_memory": (":,.1f", " MiB (predicted)"),
    "trainable_params": (":,", " PEFT parameters"),
    "wall_time": (":,.1f", " s"),
}


def _hover_value(metric: str, ref: str, kind: str | None = None) -> str:
    """The hover line of an objective: ``peak_memory: 1,234.5 MiB (CPU estimate)``.

    ``ref`` is plotly's reference to the value (``x``); ``kind`` one to the point's memory
    kind (how its peak memory was obtained), shown beside a ``peak_memory`` value.
    """
    fmt_, unit = _HOVER_UNITS.get(metric, ("", ""))
    line = f"{metric}: %{{{ref}{fmt_}}}{unit}"
    if metric == "peak_memory" and kind:
        line += f" (%{{{kind}}})"
    return line


def _axis(
    metric: str, direction: str, values: list[float], title: str | None = None
) -> dict[str, Any]:
    # Parameter counts span orders of magnitude: log scale unless a head-only point (0).
    text = title or label(metric, direction)
    axis: dict[str, Any] = {"title": {"text": escape(text)}, "type": "linear"}
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
                customdata=[
                    [r["number"], r["status"], _hover_text(r), r["memory_kind"]] for r in sel
                ],
                hovertemplate=f"trial %{{customdata[0]}} (%{{customdata[1]}})<br>"
                f"{_hover_value(mi, 'x', 'customdata[3]')}<br>"
                f"{_hover_value(mj, 'y', 'customdata[3]')}<br>%{{customdata[2]}}<extra></extra>",
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
        xaxis=_axis(mi, data.directions[i], xs, tables.axis_label(data, mi)),
        yaxis=_axis(mj, data.directions[j], ys, tables.axis_label(data, mj)),
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
                customdata=[[r["number"], _hover_text(r), r["memory_kind"]] for r in sel],
                hovertemplate="trial %{customdata[0]}<br>"
                + "<br>".join(
                    _hover_value(metric, ref, "customdata[2]") for metric, ref in zip(m, "xyz")
                )
                + "<br>%{customdata[1]}<extra></extra>",
            )
        )

    def short(metric: str) -> str:  # the unit without the basis: the 3-D axes are short
        unit = tables.unit(data, metric).split(";")[0].split(",")[0]
        return escape(f"{metric} [{unit}]" if unit else metric)

    axes = {
        f"{a}axis": _axis(m[k], data.directions[k], [r["values"][m[k]] for r in rows])
        | {"title": {"text": short(m[k])}}
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
    cells = summaries.placement(data)
    mods = summaries.module_types(data)
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
    hover = [[r["number"], r["seeds"], _hover_text(r)] for r in rows]
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
        xaxis=_axis(
            "trainable_params", "minimize", xs, tables.axis_label(data, "trainable_params")
        ),
        yaxis={"title": {"text": escape(metric)}},
    )
    return _style(fig, 400)


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
        *levers_section(data),
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

"""The tables of bench/driver_cost.py: ms per trial by component, counts, probes, summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Exclusive time categories, in table order.
PARTS = tuple(
    "sampler storage_read storage_write define_by_run tell ledger runner driver_loop".split()
)
#: Per-trial counts and the single calls timed after the window, in table order.
COUNTS = ("asks", "storage_reads", "storage_writes", "rows_read", "deep_copied_reads")
PROBES = ("front_points", "hypervolume", "n_done", "results")


def cell(row: dict[str, Any], part: str) -> str:
    """A component's ms per trial, or why there is none."""
    if "ms" in row:
        return f"{row['ms'][part]:,.1f}"
    if part != "total":
        return "-"
    if "error" in row:
        return "error"
    return f"> {1000 * row['elapsed_s']:,.0f} ({row['trials']} in budget)"


def table(columns: list[str], rows: list[dict[str, Any]], cells: Callable) -> list[str]:
    """A Markdown table of one line per arm: its key, then ``cells(row)``."""
    head = ["storage", "N", "sampler", "code", *columns]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        key = [r["storage"], f"{r['n']:,}", r["sampler"], r["code"]]
        out.append("| " + " | ".join(key + list(cells(r))) + " |")
    return out


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per storage and sampler: this checkout's growth, the goal, the change from baseline."""
    out = []
    for storage, sampler in dict.fromkeys((r["storage"], r["sampler"]) for r in rows):
        ours = [r for r in rows if r["code"] == "this" and "ms" in r]
        ours = [r for r in ours if (r["storage"], r["sampler"]) == (storage, sampler)]
        if not ours:
            continue
        first, last = ours[0], ours[-1]
        excl, asks = last["ms"]["total"] - last["ms"]["sampler"], last["per_trial"]["asks"]
        text = (
            f"- {storage}, {sampler}: this checkout {excl:,.1f} ms per trial besides the "
            f"sampler at N={last['n']:,} ({excl / asks:,.1f} per sampler ask, {asks:.2f} asks "
            f"per trial; goal < 100 ms per trial: {'MET' if excl < 100 else 'NOT met'})"
        )
        if last is not first:
            growth = last["ms"]["total"] / first["ms"]["total"]
            text += f"; {growth:.2f}x its time per trial at N={first['n']:,}"
        key = (storage, sampler, last["n"], "baseline")
        for base in [r for r in rows if (r["storage"], r["sampler"], r["n"], r["code"]) == key]:
            if "ms" in base:  # the same measure as above: the time besides the sampler
                ratio = (base["ms"]["total"] - base["ms"]["sampler"]) / excl
                text += f"; the baseline takes {ratio:.2f}x that"
            elif "trials" in base:
                text += f"; the baseline finished {base['trials']} in {base['elapsed_s']} s"
            else:  # the arm failed: its reason, once, in the table's cells
                text += "; the baseline arm failed (its error is in the JSON)"
        out.append(text + ".")
    return out


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The per-component table, the summary, the counts and the probes."""

    def parts(r: dict[str, Any]) -> list[str]:
        excl = f"{r['ms']['total'] - r['ms']['sampler']:,.1f}" if "ms" in r else "-"
        return [cell(r, "total"), excl, *(cell(r, p) for p in PARTS)]

    def counts(r: dict[str, Any]) -> list[str]:
        c = r.get("per_trial", {})
        keys = (*COUNTS, "result_validations")
        return [f"{c[k]:,.2f}" if k in c else "-" for k in keys] + [str(r.get("first_trial_s"))]

    def probes(r: dict[str, Any]) -> list[str]:
        p = r.get("probes_ms", {})
        return ["-" if p.get(k) is None else f"{p[k]:,.1f}" for k in PROBES]

    lines = [
        "# The search driver's cost per trial as the study grows",
        "",
        f"`run_local` with the progress display on a study of N finished random trials "
        f"(overheads.py's mixed space, the synthetic runner: no training), {meta['window']} "
        f"trials more per arm, ms per trial from the end of the first (start-up apart); "
        f"baseline `{meta['baseline']}`, this checkout `{meta['this']}`. Storage under "
        f"`{meta['tmp']}`. Exclusive times: `sampler` includes its own storage reads; "
        f"`ledger` is results/front/hypervolume/n_done bookkeeping; `driver loop` is the "
        f"rest (proposer, display). An arm over {meta['budget_s']} s stops there.",
        "",
        *table(["total", "excl. sampler", *(p.replace("_", " ") for p in PARTS)], rows, parts),
        "",
        *summary(rows),
        "",
        f"A SQLite commit takes {meta['commit_ms']['tmp']} ms under `{meta['tmp']}` and "
        f"{meta['commit_ms']['disk']} ms on this machine's disk (`{meta['disk']}`; median of "
        f"40 one-row commits, at the end): each storage write is one commit, so on disk add "
        f"about (writes per trial below) x the difference.",
        "",
        "## Per trial: sampler asks, storage calls, rows read, deep copies, result parses",
        "",
        *table([*COUNTS, "TrialResult validations", "first trial (s)"], rows, counts),
        "",
        f"## One call after the window (ms; `-`: over {meta['probe_s']} s)",
        "",
        *table(list(PROBES), rows, probes),
    ]
    return "\n".join(lines) + "\n"

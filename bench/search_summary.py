"""The search benchmarks' summary: steps to a target front per group of runs, the table and
the halving verdict (shared by ``bench/search_cost.py`` and ``bench/search_gains.py``)."""

from __future__ import annotations

import statistics

from bench.surrogate import fit_summary

TARGET = 0.95
#: A looser target reported beside it (the best run can be a lucky outlier).
LOOSE_TARGET = 0.90
GOAL_RATIO = 3.0
RULE = (
    "autopeft's: MO-ASHA's selection by non-dominated rank and crowding, with ties in rung "
    "accuracy (and gaps up to min_delta) going the judged trial's way"
)


def seconds_per_step(records: list[dict]) -> float:
    """Wall seconds per training step of the real trials the surrogate was fitted to."""
    return sum(r["wall_time_s"] for r in records) / sum(r["steps"] for r in records)


def steps_to(run: dict, target: float) -> int | None:
    """Steps spent when the run's hypervolume first reaches ``target`` (None: never)."""
    return next((s for h, s in zip(run["hv"], run["steps"]) if h >= target - 1e-12), None)


def hv_at(run: dict, budget: int) -> float:
    """Hypervolume once at most ``budget`` steps are spent."""
    return max((h for h, s in zip(run["hv"], run["steps"]) if s <= budget), default=0.0)


def median_cost(costs: list[int | None]) -> float | None:
    """The median over seeds, a run that never reached the target counting as infinite."""
    ranked = sorted(float("inf") if c is None else c for c in costs)
    mid = statistics.median(ranked)
    return None if mid == float("inf") else mid


def summarise(runs: list[dict], sps: float, best: float | None = None) -> dict:
    """Target, per-group costs and the halving and protocol comparisons.

    ``best``: the best known hypervolume the target is a fraction of (default: the best any
    of ``runs`` reached).
    """
    best = max(r["hv"][-1] for r in runs) if best is None else best
    target = TARGET * best
    groups: dict[tuple[str, str, bool], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["part"], r["label"], r["halving"]), []).append(r)
    rows = []
    for (part, label, halving), rs in sorted(groups.items()):
        costs = [steps_to(r, target) for r in rs]
        med = median_cost(costs)
        loose = median_cost([steps_to(r, LOOSE_TARGET * best) for r in rs])
        budget = rs[0]["step_budget"]
        rows.append(
            {
                "part": part,
                "label": label,
                "halving": halving,
                "seeds": len(rs),
                "reached": sum(c is not None for c in costs),
                "steps_to_target": costs,
                "median_steps": med,
                "median_cpu_hours": None if med is None else med * sps / 3600,
                "median_steps_loose": loose,
                "hv_final": statistics.fmean(r["hv"][-1] for r in rs),
                "hv_final_std": statistics.stdev([r["hv"][-1] for r in rs]) if len(rs) > 1 else 0,
                "hv_at_budget": statistics.fmean(hv_at(r, budget) for r in rs),
                "trials": statistics.fmean(r["trials"] for r in rs),
                "steps": statistics.fmean(r["steps"][-1] for r in rs),
                "pruned": statistics.fmean(r["pruned"] for r in rs),
                "sampler_s": statistics.fmean(r["wall_s"] for r in rs),
            }
        )
    return {"best_hv": best, "target": target, "rows": rows}


def cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(summary: dict, meta: dict) -> str:
    """The tables and the verdicts."""
    rows = summary["rows"]
    lines = [
        "# Search cost on the minilm surrogate",
        "",
        f"Target: {TARGET:.0%} of the best hypervolume "
        f"{meta.get('best_from') or 'any run here reached'} ({summary['best_hv']:.4f}) = "
        f"{summary['target']:.4f} (fraction of the reference "
        f"box of bench.common.reference_point). Cost: training steps spent until a run's front "
        f"first reaches it (a pruned trial costs the steps it ran, a re-proposed known "
        f"candidate none); CPU-hours = steps x {meta['seconds_per_step']:.3f} s, the "
        f"measured seconds per step of the {meta['real_trials']} real trials behind "
        f"the surrogate (minilm on CPU, {meta['fidelity']} steps a full trial; "
        f"halving rungs at {meta['rung_steps']} ranking by {meta.get('rung_metric', 'accuracy')}, "
        f"eta {meta.get('eta', 3.0)}, min_delta {meta['min_delta']}; data "
        f"{meta['data']}; learner-curve features {'/'.join(meta.get('features', ['all']))}). "
        f"Rule: {meta['rule']}. "
        f"Median over {meta['seeds']} seeds, a run that never reached the "
        f"target counting as infinite (— = the median did not). Sampler s: wall time of the "
        f"whole run on the surrogate, i.e. the samplers' and the study's own cost.",
        "",
        "| part | sampler | halving | reached | median steps to target | median CPU-h "
        f"| steps to target per seed | median steps to {LOOSE_TARGET:.0%} | final HV "
        "| HV at the step budget | trials | steps | pruned | sampler s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_seed = ", ".join("—" if c is None else str(c) for c in r["steps_to_target"])
        lines.append(
            f"| {r['part']} | {r['label']} | {'on' if r['halving'] else 'off'} | "
            f"{r['reached']}/{r['seeds']} | {cell(r['median_steps'], ',.0f')} | "
            f"{cell(r['median_cpu_hours'], '.3f')} | {per_seed} | "
            f"{cell(r.get('median_steps_loose'), ',.0f')} | "
            f"{r['hv_final']:.4f} ± {r['hv_final_std']:.4f} | {r['hv_at_budget']:.4f} | "
            f"{r['trials']:.0f} | {r['steps']:,.0f} | {r['pruned']:.0f} | "
            f"{r['sampler_s']:.0f} |"
        )
    lines += ["", "## Verdicts", "", *meta["verdicts"], ""]
    if "surrogate" in meta:
        lines += [fit_summary(meta["surrogate"]), ""]
    lines.append(f"Runtime: {meta['runtime_min']:.1f} min.")
    if meta.get("parts"):
        lines.append(f"It merges: {'; '.join(meta['parts'])}.")
    return "\n".join(lines) + "\n"


def halving_verdict(name: str, off: dict, on: dict, goal: float = GOAL_RATIO) -> str:
    """Steps to the target with halving (``on``) against without (``off``), and the goal
    (``goal`` times fewer steps)."""
    loose = ""
    if on.get("median_steps_loose") and off.get("median_steps_loose"):
        loose = (
            f"; to {LOOSE_TARGET:.0%}: "
            f"{off['median_steps_loose'] / on['median_steps_loose']:.2f}x "
            f"({off['median_steps_loose']:,.0f} without, {on['median_steps_loose']:,.0f} with)"
        )
    if on["median_steps"] and off["median_steps"]:
        ratio = off["median_steps"] / on["median_steps"]
        return (
            f"- {name}: the default sampler reaches the target with {ratio:.2f}x fewer "
            f"training steps (median {off['median_steps']:,.0f} without, "
            f"{on['median_steps']:,.0f} with; {off['reached']}/{off['seeds']} and "
            f"{on['reached']}/{on['seeds']} runs reach it){loose} — goal of at least "
            f"{goal:g}x {'MET' if ratio >= goal else 'NOT met'}."
        )
    return (
        f"- {name}: {on['reached']}/{on['seeds']} runs with halving and "
        f"{off['reached']}/{off['seeds']} without reach the target within the same "
        f"step budget (median steps without: {cell(off['median_steps'], ',.0f')}, "
        f"with: {cell(on['median_steps'], ',.0f')}; — = the median run never did){loose} "
        f"— goal of at least {goal:g}x fewer steps with halving NOT met."
    )

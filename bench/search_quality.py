"""Search quality: hypervolume vs number of trials for each sampler, with and without halving.

The benchmark is the surrogate of ``bench/surrogate.py``: accuracy curves drawn from a model
fitted to real low-fidelity trials of ``search_spaces/bench.yaml`` on ``minilm`` /
``rotten_tomatoes`` (40 steps, evaluated at the halving rungs 14, 27, 40), exact trainable
parameters and predicted memory. For every sampler (random, TPE, NSGA-II, qNEHVI) x
halving (off, on) x seed, a study (SQLite in a temporary folder, run by
``autopeft.run_local`` with the surrogate as its runner) runs ``--trials`` trials. After each
trial the hypervolume of the front is computed with ONE reference point shared by all runs
(accuracy 0.5, 1.1 x the space's largest parameter count, 1.1 x the largest predicted memory)
and reported as a fraction of the box between the ideal corner (accuracy 1, 0 parameters,
0 MiB) and the reference point. The search cost is the training steps spent (halving stops
trials early; a repeated candidate is not retrained).

    OMP_NUM_THREADS=1 python -m bench.search_quality --jobs 2 [--variants]

``--variants`` adds TPE settings beside the default (see :data:`VARIANTS`).

Results: bench/results/search_quality.json, .md (table) and .html (plotly figure; written, not
committed: it embeds plotly.js).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import autopeft
from bench.common import RESULTS, bench_study, provenance, run_all, trained_curve, write_results
from bench.surrogate import DATA, Surrogate, fit_summary

SAMPLERS = ("random", "tpe", "nsga2", "qnehvi")
CHECKPOINTS = (10, 20, 40, 100)
#: Equal compute: the training steps of 40 full trials (40 steps each).
STEP_BUDGET = 1600
#: The default sampler (SamplerConfig's default) and the goal of the issue.
DEFAULT, GOAL_TRIALS = "tpe", 40
#: TPE settings tried beside the default (``--variants``): label -> (startup, TPE options).
#: Options not in the study file (multivariate, group) are set on the built sampler.
VARIANTS = {
    "tpe-startup10": (10, None),
    "tpe-startup20": (20, None),
    "tpe-independent": (5, {"multivariate": False}),
    "tpe-nogroup": (5, {"multivariate": True, "group": False}),
}


@dataclass(frozen=True)
class Spec:
    """One search run."""

    label: str  # the sampler, or a TPE variant's label
    sampler: str
    halving: bool
    seed: int
    trials: int
    startup: int | None = None
    options: tuple[tuple[str, bool], ...] = ()


def run_one(spec: Spec, surrogate: Surrogate, root: str) -> dict:
    """Run one study on the surrogate; hypervolume and training steps after each trial."""
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    name = f"{spec.label}-h{int(spec.halving)}-s{spec.seed}"
    config = bench_study(
        name,
        sampler={"name": spec.sampler, "n_startup_trials": spec.startup, "seed": spec.seed},
        halving={"enabled": spec.halving},
    )
    study = autopeft.Study(config, root=root)
    if spec.options:
        import optuna

        options: dict[str, Any] = {"n_startup_trials": spec.startup, **dict(spec.options)}
        study.optuna.sampler = optuna.samplers.TPESampler(
            seed=spec.seed, constant_liar=True, **options
        )
    runner = surrogate.runner(study, seed=spec.seed)
    started = time.perf_counter()
    autopeft.run_local(study, spec.trials, runner=runner, progress=False)
    wall = time.perf_counter() - started
    curve = trained_curve(study)
    hv, cum, statuses = curve["hv"], curve["steps"], curve["statuses"]
    return {
        **asdict(spec),
        "hv": hv,
        "steps": cum,
        "pruned": statuses.count("PRUNED"),
        "complete": statuses.count("COMPLETE"),
        "reused": curve["reused"],
        "front": len(study.front_points()),
        "wall_s": wall,
        "reference": curve["reference"],
    }


def first_reaching(curve: list[float], target: float) -> int | None:
    """The first trial count (1-based) at which ``curve`` reaches ``target``."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def hv_at_steps(run: dict, budget: int) -> float | None:
    """HV once ``budget`` training steps are spent (None: the run spent fewer)."""
    if run["steps"][-1] < budget:
        return None
    return max((h for h, s in zip(run["hv"], run["steps"]) if s <= budget), default=0.0)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> list[dict]:
    """Per (label, halving): HV at the checkpoints, trials to random's HV@100, cost."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["label"], r["halving"]), []).append(r)

    def mean_curve(rs: list[dict]) -> list[float]:
        n = min(len(r["hv"]) for r in rs)
        return [statistics.fmean(r["hv"][i] for r in rs) for i in range(n)]

    targets = {
        h: mean_curve(groups[("random", h)])[-1] for h in (False, True) if ("random", h) in groups
    }
    rows = []
    for (label, halving), rs in groups.items():
        curve = mean_curve(rs)
        row = {"label": label, "halving": halving, "seeds": len(rs), "trials": len(curve)}
        for c in CHECKPOINTS:
            if c <= len(curve):
                row[f"hv@{c}"] = mean_std([r["hv"][c - 1] for r in rs])
        for key, h in (("to_random", halving), ("to_random_plain", False)):
            if h in targets:
                row[key] = first_reaching(curve, targets[h])
                row[f"{key}_per_seed"] = [first_reaching(r["hv"], targets[h]) for r in rs]
        at_budget = [hv_at_steps(r, STEP_BUDGET) for r in rs]
        if None not in at_budget:
            row["hv@steps"] = mean_std([v for v in at_budget if v is not None])
        row["steps"] = mean_std([r["steps"][-1] for r in rs])
        row["pruned"] = statistics.fmean(r["pruned"] for r in rs)
        row["complete"] = statistics.fmean(r["complete"] for r in rs)
        row["reused"] = statistics.fmean(r["reused"] for r in rs)
        row["wall_s"] = statistics.fmean(r["wall_s"] for r in rs)
        rows.append(row)
    order = {s: i for i, s in enumerate([*SAMPLERS, *VARIANTS])}
    rows.sort(key=lambda r: (order.get(str(r["label"]), 99), bool(r["halving"])))
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    """The results table and the verdict on the goal."""
    lines = [
        "# Search quality on the minilm surrogate",
        "",
        fit_summary(meta["surrogate"]),
        "",
        f"Hypervolume: fraction of the box between (accuracy 1, 0 params, 0 MiB) and the "
        f"reference point (accuracy {meta['reference'][0]}, {meta['reference'][1]:,.0f} "
        f"params, {meta['reference'][2]:,.1f} MiB), one reference for every run; mean ± std "
        f"over {meta['seeds']} seeds. Halving: eta 3, min_peers 3, rungs at steps 14 and 27 "
        f'of 40. "Trials to random": the first trial count at which the mean curve reaches '
        f"random search's mean final hypervolume with the same halving setting (in "
        f"brackets: per seed; — = not within the run). HV@{STEP_BUDGET:,} steps: the "
        f"hypervolume once {STEP_BUDGET:,} training steps (40 full trials) are spent — equal "
        f"compute (— = the run spent fewer). Steps: training steps spent in the whole run. "
        f"Pruned: trials stopped by halving; reused: re-proposals of an already trained "
        f"(or pruned) candidate — told the earlier result, not trained and not counted as "
        f"trials (the x-axis counts trained trials only).",
        "",
        "| sampler | halving | "
        + " | ".join(f"HV@{c}" for c in CHECKPOINTS)
        + f" | HV@{STEP_BUDGET:,} steps | trials to random's HV@{meta['trials']} | steps "
        "| pruned | reused | wall s |",
        "|---|---|" + "---|" * (len(CHECKPOINTS) + 6),
    ]
    for r in rows:
        hv = [
            f"{r[f'hv@{c}'][0]:.4f} ± {r[f'hv@{c}'][1]:.4f}" if f"hv@{c}" in r else "—"
            for c in CHECKPOINTS
        ]
        hv.append(f"{r['hv@steps'][0]:.4f} ± {r['hv@steps'][1]:.4f}" if "hv@steps" in r else "—")
        reach = f"{r.get('to_random') or '—'} [{per_seed(r.get('to_random_per_seed', []))}]"
        lines.append(
            f"| {r['label']} | {'on' if r['halving'] else 'off'} | {' | '.join(hv)} | {reach} | "
            f"{r['steps'][0]:,.0f} | {r['pruned']:.1f} | {r['reused']:.1f} | {r['wall_s']:.0f} |"
        )
    lines += ["", "## Goal", "", *meta["verdict"], ""]
    notes = meta.get("notes")
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    lines.append(f"Runtime: {meta['runtime_min']:.1f} min.")
    return "\n".join(lines) + "\n"


def per_seed(values: list[int | None]) -> str:
    return ", ".join(str(v) if v else "—" for v in values)


def verdict(rows: list[dict]) -> list[str]:
    """Whether the default sampler reaches random's 100-trial HV within the goal's trials."""
    out = []
    for r in rows:
        if r["label"] != DEFAULT:
            continue
        reached = r.get("to_random")
        ok = reached is not None and reached <= GOAL_TRIALS
        mode = "with halving" if r["halving"] else "without halving"
        out.append(
            f"- Default sampler (TPE, n_startup_trials 5) {mode}: reaches random search's mean "
            f"final hypervolume (same halving setting) after "
            f"{reached if reached else 'more than ' + str(r['trials'])} trials (mean curve; "
            f"per seed {per_seed(r.get('to_random_per_seed', []))}) — goal of at most "
            f"{GOAL_TRIALS} {'MET' if ok else 'NOT met'}."
        )
    meeting = [
        f"{r['label']} ({'with' if r['halving'] else 'without'} halving: {r['to_random']})"
        for r in rows
        if r["label"] != "random" and r.get("to_random") and r["to_random"] <= GOAL_TRIALS
    ]
    out.append(f"- Settings that meet the goal on the mean curve: {', '.join(meeting) or 'none'}.")
    return out


def observations(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Notes the numbers call for (qNEHVI's length, NSGA-II's generations, duplicates)."""
    out = []
    if args.qnehvi_trials < args.trials:
        out.append(
            f"qNEHVI ran {args.qnehvi_trials} trials per run, not {args.trials}: one BoTorch "
            f"proposal takes ~10-20 s on this CPU."
        )
    for r in rows:
        where = f"{r['label']} {'with' if r['halving'] else 'without'} halving"
        if r["label"] == "nsga2" and r["halving"] and r["complete"] < 40:
            out.append(
                f"{where}: only {r['complete']:.0f} trials complete on average (the rest are "
                f"pruned): about {r['complete'] / 20:.1f} generations of NSGA-II's population "
                f"of 20."
            )
        if r["label"] == "qnehvi" and r["halving"]:
            out.append(
                f"{where}: {r['complete']:.1f} of {r['trials']} trials complete on average; "
                f"the BO counts pruned trials towards its 10 start-up trials and fits them at "
                f"their last rung, with the fraction of training they ran as a GP input."
            )
        if r["reused"] >= 0.2 * r["trials"]:
            out.append(
                f"{where}: {r['reused']:.1f} re-proposals of known candidates per run on "
                f"average besides the {r['trials']} trained trials (sampler calls only)."
            )
    return out


def figure(runs: list[dict], path: Path) -> None:
    """HV vs trials and HV vs training steps: mean line with a ±std band per sampler/halving."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colors = {
        "random": "#7f7f7f",
        "tpe": "#1f77b4",
        "nsga2": "#2ca02c",
        "qnehvi": "#d62728",
        "tpe-startup10": "#9467bd",
        "tpe-startup20": "#8c564b",
        "tpe-independent": "#e377c2",
        "tpe-nogroup": "#17becf",
    }
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("hypervolume vs trials", "hypervolume vs training steps spent"),
        horizontal_spacing=0.08,
    )
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["label"], r["halving"]), []).append(r)
    for (label, halving), rs in groups.items():
        n = min(len(r["hv"]) for r in rs)
        mean = [statistics.fmean(r["hv"][i] for r in rs) for i in range(n)]
        std = [statistics.pstdev([r["hv"][i] for r in rs]) for i in range(n)]
        steps = [statistics.fmean(r["steps"][i] for r in rs) for i in range(n)]
        name = f"{label} {'+ halving' if halving else ''}".strip()
        color = colors.get(label, "#000000")
        dash = "dash" if halving else "solid"
        for col, xs in ((1, list(range(1, n + 1))), (2, steps)):
            band_x = xs + xs[::-1]
            band_y = [m + s for m, s in zip(mean, std)] + [m - s for m, s in zip(mean, std)][::-1]
            fig.add_trace(
                go.Scatter(
                    x=band_x,
                    y=[round(v, 5) for v in band_y],
                    fill="toself",
                    fillcolor=color,
                    opacity=0.12,
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=name,
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[round(v, 5) for v in mean],
                    mode="lines",
                    name=name,
                    line={"color": color, "dash": dash},
                    legendgroup=name,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="trials", row=1, col=1)
    fig.update_xaxes(title_text="training steps (mean over seeds)", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume (fraction of the reference box)", row=1, col=1)
    fig.update_layout(
        title="Search quality on the minilm surrogate (mean ± std over seeds)",
        template="plotly_white",
        height=520,
        width=1200,
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_quality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--qnehvi-trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--variants", action="store_true", help="also run the TPE variants")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="search_quality", help="result files' name")
    parser.add_argument(
        "--halving", choices=("both", "on", "off"), default="both", help="which settings to run"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    surrogate = Surrogate.from_jsonl(DATA)
    fit = surrogate.report()
    print(fit_summary(fit))
    specs = []
    for seed in range(args.seeds):
        for halving in {"both": (False, True), "on": (True,), "off": (False,)}[args.halving]:
            for sampler in args.samplers.split(","):
                n = args.qnehvi_trials if sampler == "qnehvi" else args.trials
                specs.append(Spec(sampler, sampler, halving, seed, n))
            if args.variants:
                for label, (startup, options) in VARIANTS.items():
                    opts = tuple(sorted((options or {}).items()))
                    specs.append(Spec(label, "tpe", halving, seed, args.trials, startup, opts))
    # The slow BO runs first, so they overlap with the fast ones.
    specs.sort(key=lambda s: s.sampler != "qnehvi")
    runs = run_all(
        specs,
        run_one,
        args.jobs,
        lambda spec, run: (
            f"{spec.label:16s} halving {spec.halving!s:5s} seed {spec.seed}: "
            f"HV@{len(run['hv'])} {run['hv'][-1]:.4f}  steps {run['steps'][-1]:5d}  "
            f"pruned {run['pruned']:3d}  {run['wall_s']:6.1f} s"
        ),
        surrogate,
    )
    rows = summarise(runs)
    meta: dict[str, Any] = {
        **provenance(),
        "surrogate": fit,
        "reference": runs[0]["reference"],
        "seeds": args.seeds,
        "trials": args.trials,
        "qnehvi_trials": args.qnehvi_trials,
        "runtime_min": (time.perf_counter() - started) / 60,
    }
    meta["verdict"] = verdict(rows)
    meta["notes"] = observations(rows, args)
    text = markdown(rows, meta)
    write_results(args.out / args.name, {"meta": meta, "summary": rows, "runs": runs}, text)
    figure(runs, args.out / f"{args.name}.html")
    print(text)


if __name__ == "__main__":
    main()

"""Search cost: compute to reach a target front, with and without successive halving, and
the AutoPEFT paper's protocol against autopeft's default, side by side in one run.

The benchmark is the surrogate of ``bench/surrogate.py`` (fitted to 80 real 40-step trials of
``search_spaces/bench.yaml`` on ``minilm`` / ``rotten_tomatoes``), run through ``run_local``
exactly as ``autopeft run`` does. Compute is counted in training steps (a pruned trial costs
the steps it ran; a re-proposed known candidate costs none) and converted to CPU-hours with
the seconds per step measured in the real trials; the samplers' own time is measured and
reported beside it.

1. **Cost to a target front** (``--part cost``): the default sampler (TPE) with halving on and
   off, each run until ``--budget-trials`` x 40 steps are spent (with halving that is many
   more, cheaper trials). The target is 95% of the best hypervolume any run of this
   benchmark reached; the cost of a run is the steps spent when its front first reaches it.
2. **AutoPEFT's protocol** (``--part protocol``): the ``autopeft`` preset (SAAS fully
   Bayesian GP + qNEHVI, 100 random initial trials, 200 trials, every trial at full fidelity
   as in the paper) against the default sampler with halving given the same step budget.

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_cost.py --jobs 2 [--part cost|protocol|all]

Hypervolume is the fraction of the box between the ideal corner and the reference point of
``bench/search_quality.py`` (shared by every run). Results: bench/results/search_cost.json
and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from collect_real_trials import RUNGS, STEPS, bench_space, bench_study  # noqa: E402
from fed_tpe import feed  # noqa: E402
from ladders import Ladder, parse_ladders  # noqa: E402
from search_quality import run_all, save_json, surrogate_summary, trained_curve  # noqa: E402
from surrogate import DATA, Surrogate, for_study  # noqa: E402

from autopeft.core import halving as halving_rule  # noqa: E402
from autopeft.core.halving import TIE_BREAK, rung_steps  # noqa: E402
from autopeft.search.study import model_profile  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGET = 0.95
#: A looser target reported beside it (the best run can be a lucky outlier).
LOOSE_TARGET = 0.90
GOAL_RATIO = 3.0
RULE = (
    "autopeft's (autopeft.core.halving): MO-ASHA's selection by non-dominated rank and "
    "crowding, with ties in rung accuracy (and gaps up to min_delta) going the judged "
    "trial's way; rows `tpe-mo-asha`: plain MO-ASHA, the baseline"
)


@dataclass(frozen=True)
class Spec:
    """One search run: until ``max_trials`` trained trials or ``step_budget`` steps."""

    part: str
    label: str
    sampler: str
    halving: bool
    seed: int
    step_budget: int
    max_trials: int
    #: The full fidelity in steps and the halving rungs (fractions of it).
    fidelity: int = STEPS
    rungs: tuple[float, ...] = tuple(RUNGS)
    min_delta: float = 0.0
    eta: float = 3.0
    #: halving.stop_hopeless: also stop trials the finished ones show cannot reach the front.
    stop_hopeless: bool = False
    #: The surrogate reports the final accuracy at every rung (a ceiling, not a method).
    oracle: bool = False
    #: The TPE is told pruned trials' rung points (bench/fed_tpe.py; an experiment).
    fed: bool = False
    #: ``ties-to-trial``: autopeft's rule; ``mo-asha``: the same without giving ties in rung
    #: accuracy to the judged trial (plain MO-ASHA), the baseline.
    rule: str = "ties-to-trial"


def real_trials(data: Path) -> list[dict]:
    """The real trials the surrogate is fitted to."""
    return [json.loads(line) for line in data.read_text().splitlines() if line.strip()]


def seconds_per_step(records: list[dict]) -> float:
    """Wall seconds per training step of the real trials the surrogate was fitted to."""
    return sum(r["wall_time_s"] for r in records) / sum(r["steps"] for r in records)


def data_fidelity(records: list[dict]) -> tuple[int, tuple[float, ...]]:
    """The real trials' full fidelity in steps and their evaluation steps as fractions."""
    total = max(r["target_steps"] for r in records)
    evals = sorted({int(h["step"]) for r in records for h in r["history"]})
    return total, tuple(round(e / total, 4) for e in evals)


def run_one(spec: Spec, surrogate: Surrogate, root: str) -> dict:
    """Run one study on the surrogate in chunks until its budget is spent."""
    return run_study(spec, surrogate, root)[1]


def run_study(spec: Spec, surrogate: Surrogate, root: str) -> tuple[dict, dict]:
    """:func:`run_one`, also returning the study's whole :func:`trained_curve` (uncut)."""
    import torch

    from autopeft.search.local import run_local
    from autopeft.search.study import Study

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    # Worker processes run one spec after another: set the rule every time.
    halving_rule.TIE_BREAK = 0.0 if spec.rule == "mo-asha" else TIE_BREAK
    name = f"{spec.part}-{spec.label}-h{int(spec.halving)}-s{spec.seed}"
    config = bench_study(
        name,
        steps=spec.fidelity,
        rungs=list(spec.rungs),
        space=bench_space(surrogate.with_lr),
        sampler={"name": spec.sampler, "seed": spec.seed},
        halving={
            "enabled": spec.halving,
            "min_delta": spec.min_delta,
            "eta": spec.eta,
            "stop_hopeless": spec.stop_hopeless,
        },
    )
    study = Study(config, root=root)
    if spec.fed:
        feed(study)
    runner = for_study(study, surrogate, seed=spec.seed, oracle=spec.oracle)
    started, n = time.perf_counter(), 0

    def spent() -> int:
        reused = {t.number for t in study.optuna.trials if t.user_attrs.get("reused")}
        return sum(r.steps for k, r in study.results() if k not in reused)

    while spent() < spec.step_budget and n < spec.max_trials:
        before = study.n_done()
        n = min(spec.max_trials, before + 5)
        run_local(study, n, runner=runner, progress=False)
        if study.n_done() == before:  # the space is exhausted
            break
    wall = time.perf_counter() - started
    curve = trained_curve(study)
    # Runs go in chunks of 5 trials: cut at the trial that spends the budget.
    steps = curve["steps"]
    cut = next((i + 1 for i, s in enumerate(steps) if s >= spec.step_budget), len(steps))
    return curve, {
        **asdict(spec),
        "hv": curve["hv"][:cut],
        "steps": steps[:cut],
        "trials": cut,
        "pruned": curve["statuses"][:cut].count("PRUNED"),
        "reused": curve["reused"],
        "wall_s": wall,
    }


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


def _cell(value: float | None, fmt: str) -> str:
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
        f"box of bench/search_quality.py). Cost: training steps spent until a run's front "
        f"first reaches it (a pruned trial costs the steps it ran, a re-proposed known "
        f"candidate none); CPU-hours = steps x {meta['seconds_per_step']:.3f} s, the "
        f"measured seconds per step of the {meta['real_trials']} real trials behind "
        f"the surrogate (minilm on CPU, {meta['fidelity']} steps a full trial; "
        f"halving rungs at {meta['rung_steps']}, eta {meta.get('eta', 3.0)}, min_delta "
        f"{meta['min_delta']}; data "
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
            f"{r['reached']}/{r['seeds']} | {_cell(r['median_steps'], ',.0f')} | "
            f"{_cell(r['median_cpu_hours'], '.3f')} | {per_seed} | "
            f"{_cell(r.get('median_steps_loose'), ',.0f')} | "
            f"{r['hv_final']:.4f} ± {r['hv_final_std']:.4f} | {r['hv_at_budget']:.4f} | "
            f"{r['trials']:.0f} | {r['steps']:,.0f} | {r['pruned']:.0f} | "
            f"{r['sampler_s']:.0f} |"
        )
    lines += ["", "## Verdicts", "", *meta["verdicts"], ""]
    if "surrogate" in meta:
        lines += [surrogate_summary(meta["surrogate"]), ""]
    lines.append(f"Run: `{meta['command']}` ({meta['runtime_min']:.1f} min, {meta['machine']}).")
    if meta.get("parts"):
        lines.append(f"It merges: {'; '.join(meta['parts'])}.")
    return "\n".join(lines) + "\n"


def halving_verdict(name: str, off: dict, on: dict) -> str:
    """Steps to the target with halving (``on``) against without (``off``), and the goal."""
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
            f"{GOAL_RATIO:g}x {'MET' if ratio >= GOAL_RATIO else 'NOT met'}."
        )
    return (
        f"- {name}: {on['reached']}/{on['seeds']} runs with halving and "
        f"{off['reached']}/{off['seeds']} without reach the target within the same "
        f"step budget (median steps without: {_cell(off['median_steps'], ',.0f')}, "
        f"with: {_cell(on['median_steps'], ',.0f')}; — = the median run never did){loose} "
        f"— goal of at least {GOAL_RATIO:g}x fewer steps with halving NOT met."
    )


def verdicts(summary: dict) -> list[str]:
    """Halving's saving against the goal; the protocol comparison."""
    by = {(r["part"], r["label"], r["halving"]): r for r in summary["rows"]}
    out = []
    off = by.get(("cost", "tpe", False))
    names = {"tpe": "Halving", "tpe-mo-asha": "Halving by plain MO-ASHA"}
    ladders = sorted(
        label for part, label, on in by if part == "cost" and label.startswith("tpe-r")
    )
    for label in ladders:
        names[label] = Ladder.title(label)
    # bench/promotion.py's rows, when merged in.
    for label in sorted(label for part, label, _ in by if label.startswith("promote-")):
        names[label] = f"Deferred promotion `{label}` (bench/promotion.py)"
    for label, name in names.items():
        on = by.get(("cost", label, True))
        if off and on:
            out.append(halving_verdict(name, off, on))
    paper, ours = by.get(("protocol", "autopeft", False)), by.get(("protocol", "tpe", True))
    if paper and ours:
        out.append(
            f"- AutoPEFT protocol (SAAS+qNEHVI, 200 full-fidelity trials): final HV "
            f"{paper['hv_final']:.4f} after {paper['steps']:,.0f} steps and "
            f"{paper['sampler_s']:.0f} s of sampler time; default TPE + halving on the same "
            f"step budget: {ours['hv_final']:.4f} after {ours['steps']:,.0f} steps "
            f"({ours['trials']:.0f} trials) and {ours['sampler_s']:.0f} s of sampler time."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["cost", "protocol", "all"], default="all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--protocol-seeds", type=int, default=1)
    parser.add_argument("--budget-trials", type=int, default=150, help="full trials of steps")
    parser.add_argument("--protocol-trials", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="search_cost", help="results file stem")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="real trials the surrogate is fitted to"
    )
    parser.add_argument(
        "--rungs",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="halving rungs as fractions (default: the real trials' evaluation steps)",
    )
    parser.add_argument(
        "--features",
        type=lambda text: tuple(text.split(",")),
        default=("all",),
        help="the surrogate's learner-curve feature sets, chosen per step by leave-one-out: "
        "'all' (default) or 'all,log_params'",
    )
    parser.add_argument("--min-delta", type=float, default=0.0, help="halving.min_delta")
    parser.add_argument("--eta", type=float, default=3.0, help="halving.eta")
    parser.add_argument(
        "--mo-asha", action="store_true", help="also run halving with plain MO-ASHA (baseline)"
    )
    parser.add_argument(
        "--ladders",
        type=parse_ladders,
        default=(),
        help="more halving ladders run beside --rungs/--eta on the same seeds and target, "
        "e.g. '0.125,0.25,0.5,1.0@3;0.25,0.5,1.0@3+hopeless' (rungs@eta, '+hopeless' for "
        "halving.stop_hopeless, '+oracle' for rungs that see the final accuracy: the ceiling "
        "of better rung accuracy, '+fed' for a TPE told pruned trials' rung points "
        "(bench/fed_tpe.py), '+plain' for plain MO-ASHA's rule; separated by ';')",
    )
    parser.add_argument(
        "--halving",
        choices=["both", "on"],
        default="both",
        help="cost part: run with and without halving, or only with (e.g. to merge runs)",
    )
    parser.add_argument(
        "--resummarise", type=Path, default=None, help="rewrite the tables from a results JSON"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="summarise the runs of these results JSONs (same data and fidelity) together "
        "under --name, one target over all; nothing is run",
    )
    parser.add_argument(
        "--merge-seeds",
        type=int,
        default=None,
        help="--merge only seeds 0..N-1 (files with more seeds compare on the same ones)",
    )
    parser.add_argument(
        "--merge-best-from",
        type=Path,
        default=None,
        help="--merge with the target taken from this results file's best hypervolume "
        "(e.g. one without oracle rows) instead of the best of the merged runs",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the studies in this folder; the same command again resumes them",
    )
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out / args.name, args.merge_seeds, args.merge_best_from)
        return
    if args.resummarise:
        resummarise(args.resummarise)
        return

    started = time.perf_counter()
    records = real_trials(args.data)
    surrogate = Surrogate(records, model_profile("minilm"), args.features)
    fidelity, evals = data_fidelity(records)
    shape = {
        "fidelity": fidelity,
        "rungs": args.rungs or evals,
        "min_delta": args.min_delta,
        "eta": args.eta,
    }
    specs = []
    if args.part in ("cost", "all"):
        budget = args.budget_trials * fidelity
        for seed in range(args.seeds):
            for on in (False, True) if args.halving == "both" else (True,):
                specs.append(Spec("cost", "tpe", "tpe", on, seed, budget, 10 * budget, **shape))
            for ladder in args.ladders:
                settings = shape | {
                    "rungs": ladder.rungs,
                    "eta": ladder.eta,
                    "stop_hopeless": ladder.hopeless,
                    "oracle": ladder.oracle,
                    "fed": ladder.fed,
                    "rule": "mo-asha" if ladder.plain else "ties-to-trial",
                }
                label = ladder.label(fidelity)
                specs.append(
                    Spec("cost", label, "tpe", True, seed, budget, 10 * budget, **settings)
                )
            if args.mo_asha:
                specs.append(
                    Spec(
                        "cost",
                        "tpe-mo-asha",
                        "tpe",
                        True,
                        seed,
                        budget,
                        10 * budget,
                        **shape,
                        rule="mo-asha",
                    )
                )
    if args.part in ("protocol", "all"):
        budget = args.protocol_trials * fidelity
        for seed in range(args.protocol_seeds):
            specs.append(
                Spec(
                    "protocol",
                    "autopeft",
                    "autopeft",
                    False,
                    seed,
                    budget,
                    args.protocol_trials,
                    **shape,
                )
            )
            specs.append(Spec("protocol", "tpe", "tpe", True, seed, budget, 10 * budget, **shape))
    specs.sort(key=lambda s: s.sampler != "autopeft")  # the slow BO first, overlapping the rest
    runs = run_all(
        specs,
        run_one,
        args.jobs,
        lambda spec, run: (
            f"{spec.part:8s} {spec.label:8s} halving {spec.halving!s:5s} "
            f"seed {spec.seed}: HV {run['hv'][-1]:.4f}  trials {run['trials']:4d}  steps "
            f"{run['steps'][-1]:6d}  {run['wall_s']:7.1f} s"
        ),
        surrogate,
        keep=args.keep,
    )
    meta = {
        "rung_steps": rung_steps(fidelity, list(shape["rungs"])),
        "min_delta": args.min_delta,
        "eta": args.eta,
        "rule": RULE,
    }
    write_runs(args, records, surrogate, runs, meta, started)


def write_runs(
    args: argparse.Namespace,
    records: list[dict],
    surrogate: Surrogate,
    runs: list[dict],
    meta: dict,
    started: float,
) -> None:
    """Summarise ``runs`` and write them with the run's meta (``meta`` adds to it).

    ``args`` carries ``seeds``, ``data``, ``features``, ``out`` and ``name``; the command
    recorded is this process's own.
    """
    sps = seconds_per_step(records)
    summary = summarise(runs, sps)
    meta = {
        "seeds": args.seeds,
        "seconds_per_step": sps,
        "real_trials": len(records),
        "data": args.data.name,
        "features": list(args.features),
        "fidelity": data_fidelity(records)[0],
        **meta,
        "command": f"OMP_NUM_THREADS=1 .venv/bin/python bench/{Path(sys.argv[0]).name} "
        + " ".join(sys.argv[1:]),
        "runtime_min": (time.perf_counter() - started) / 60,
        "machine": f"{platform.machine()} CPU",
        "verdicts": verdicts(summary),
        "surrogate": surrogate.report(),
    }
    write(args.out / args.name, meta, summary, runs)


def write(stem: Path, meta: dict, summary: dict, runs: list[dict] | None) -> None:
    """``stem``.json (everything) and ``stem``.md (the tables and verdicts).

    The JSON is compact (:func:`search_quality.save_json`). ``runs=None`` (a merge) keeps no
    runs: they are in the files ``meta.merged_from`` names, and ``meta.command`` merges them
    again.
    """
    stem.parent.mkdir(parents=True, exist_ok=True)
    saved = {"meta": meta, "summary": summary} | ({} if runs is None else {"runs": runs})
    save_json(stem.with_suffix(".json"), saved)
    stem.with_suffix(".md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))


def leaves(paths: list[Path]) -> tuple[list[Path], list[dict]]:
    """The results files behind ``paths`` and their contents, merges expanded into their parts.

    A merge keeps no runs (:func:`write`) but names its parts in ``meta.merged_from``, files
    beside it; a file reached twice is read once.
    """
    found: dict[Path, dict] = {}

    def visit(path: Path) -> None:
        if path.resolve() in found:
            return
        saved = json.loads(path.read_text())
        if "runs" in saved:
            found[path.resolve()] = saved
            return
        for name in saved["meta"]["merged_from"]:
            visit(path.parent / name)

    for path in paths:
        visit(path)
    return list(found), list(found.values())


def resummarise(path: Path) -> None:
    """Rewrite the tables and verdicts of a results file from its runs."""
    saved = json.loads(path.read_text())
    if "runs" not in saved:
        sys.exit(
            f"--resummarise: {path.name} is a merge and keeps no runs (they are in "
            f"{', '.join(saved['meta'].get('merged_from', ['its parts']))}); merge them "
            f"again: {saved['meta']['command']}"
        )
    meta, runs = saved["meta"], saved["runs"]
    summary = summarise(runs, meta["seconds_per_step"])
    meta["verdicts"] = verdicts(summary)
    write(path.with_suffix(""), meta, summary, runs)


def merge(
    paths: list[Path], stem: Path, seeds: int | None = None, best_from: Path | None = None
) -> None:
    """Summarise the runs of several results files together (one target over all of them).

    The files must come from the same real trials and fidelity; a run found in several
    (the same part, label, halving and seed: deterministic, so identical) counts once.
    ``seeds``: keep only seeds below it, so rows of files with more seeds compare on the same.
    ``best_from``: a results file whose best hypervolume sets the target (e.g. one without
    oracle rows, whose fronts no real rule reaches).
    """
    paths, saved = leaves(paths)
    first = saved[0]["meta"]
    for path, other in zip(paths, saved):
        for key in ("data", "fidelity", "seconds_per_step", "features", "min_delta"):
            if other["meta"].get(key) != first.get(key):
                sys.exit(
                    f"--merge: every file must share meta.{key}, but {paths[0].name} has "
                    f"{first.get(key)!r} and {path.name} {other['meta'].get(key)!r}; "
                    "merge only runs of the same benchmark"
                )
    unique = {
        (r["part"], r["label"], r["halving"], r["seed"]): r
        for s in saved
        for r in s["runs"]
        if seeds is None or r["seed"] < seeds
    }
    runs = list(unique.values())
    best = None
    if best_from is not None:
        source = json.loads(best_from.read_text())
        if (source["meta"]["data"], source["meta"]["fidelity"]) != (
            first["data"],
            first["fidelity"],
        ):
            sys.exit(
                f"--merge-best-from: {best_from.name} is of {source['meta']['data']!r}, not "
                f"{first['data']!r}; take the target from a results file of the same benchmark"
            )
        best = source["summary"]["best_hv"]
    summary = summarise(runs, first["seconds_per_step"], best)
    meta = first | {
        "best_from": None if best_from is None else f"of `{best_from.name}`",
        "seeds": max(r["seed"] for r in runs) + 1,
        "verdicts": verdicts(summary),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/search_cost.py "
        + " ".join(sys.argv[1:]),
        "runtime_min": sum(s["meta"]["runtime_min"] for s in saved),
        "parts": [f"`{s['meta']['command']}` ({s['meta']['runtime_min']:.1f} min)" for s in saved],
        "merged_from": [os.path.relpath(p, stem.parent.resolve()) for p in paths],
    }
    write(stem, meta, summary, None)


if __name__ == "__main__":
    main()

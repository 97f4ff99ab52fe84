"""Search gains on one task, side by side in one run: random search, the default sampler, the
default with successive halving (autopeft's default configuration) and the AutoPEFT paper's
preset, with the oracle ceiling of stop rules beside them.

The benchmark is the surrogate of ``bench/surrogate.py`` fitted to real trials of one task
(``--data``, a file of ``python -m bench.collect_real_trials``), run through
``autopeft.run_local`` exactly as ``bench/search_cost.py`` runs it; compute is training steps
(a pruned trial costs the steps it ran). Arms, each on ``--seeds`` seeds (the preset on
``--protocol-seeds``, it is slow on CPU):

- ``random`` without halving, ``--budget-trials`` full trials (the preset's 200 by default:
  every arm gets the same steps; random's hypervolume after ``--random-trials`` is the
  level the default sampler must reach within 40 trials);
- ``tpe`` (the default sampler) without halving, the same step budget;
- ``tpe`` with halving (the default configuration: eta 3, rungs at 1/4, 1/2 and 1 of the
  full fidelity unless ``--rungs``), the same step budget;
- ``tpe-oracle``: the same halving, its rungs seeing each trial's final accuracy, so the
  rule ranks perfectly: the ceiling of what any rung-based stop rule saves with this ladder;
- ``autopeft``: the paper's protocol (SAAS GP + qNEHVI, 100 random start-up trials),
  ``--protocol-trials`` full-fidelity trials.

The target is 95% of the best hypervolume a non-oracle run reached. Goals (issue 35, part 4):
halving reaches the target with at least 2.5x fewer steps than full fidelity and with at least
90% of the oracle's saving; the default sampler reaches random's 100-trial hypervolume (its
median over seeds) within 40 trials.

    OMP_NUM_THREADS=1 python -m bench.search_gains \\
        --data bench/results/real_trials_rt_order_160.jsonl --seeds 10 --protocol-seeds 2 \\
        --jobs 2 --name search_gains_rt_order_160

Results: bench/results/``--name``.json and .md; ``python -m bench.halving_ceiling
--target-from`` the JSON adds the clairvoyant ceiling on the same target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import autopeft
from bench import search_summary
from bench.common import (
    RESULTS,
    Spec,
    data_fidelity,
    provenance,
    real_trials,
    run_all,
    run_one,
    rung_steps,
    write_results,
)
from bench.search_summary import cell
from bench.surrogate import Surrogate, feature_sets

#: autopeft's default ``training.rungs`` (``tests/test_search_gains.py`` holds them equal).
DEFAULT_RUNGS = (0.25, 0.5, 1.0)
#: Halving's saving to the target, as a multiple of full fidelity's steps (issue 35).
HALVING_GOAL = 2.5
#: Halving's saving as a fraction of the oracle rule's saving.
ORACLE_GOAL = 0.9
#: The default sampler reaches random's hypervolume after RANDOM_TRIALS within this many.
DEFAULT_GOAL_TRIALS = 40


def task_of(data: Path) -> str:
    """The task a real-trials file was collected on (its meta's ``task``, else the default)."""
    first = data.read_text().split("\n", 1)[0]
    meta = json.loads(first).get("meta", {}) if first.strip() else {}
    task = meta.get("task") or {}
    return Path(task["path"]).stem if task.get("path") else task.get("name", "rotten_tomatoes")


def specs_for(args: argparse.Namespace, fidelity: int, rungs: tuple[float, ...]) -> list[Spec]:
    """Every run of the comparison (the slow preset first, so the rest overlaps it)."""
    shape: dict[str, Any] = {
        "fidelity": fidelity,
        "rungs": rungs,
        "eta": args.eta,
        "min_delta": args.min_delta,
        "rung_metric": args.rung_metric,
    }
    budget = args.budget_trials * fidelity
    main = args.sampler
    specs = [
        Spec("gains", "autopeft", "autopeft", False, seed, args.protocol_trials * fidelity,
             args.protocol_trials, **shape)
        for seed in range(args.protocol_seeds)
    ]  # fmt: skip
    for seed in range(args.seeds):
        specs += [
            Spec("gains", "random", "random", False, seed, budget, args.budget_trials, **shape),
            Spec("gains", main, main, False, seed, budget, args.budget_trials, **shape),
            Spec("gains", main, main, True, seed, budget, 10 * args.budget_trials, **shape),
            Spec("gains", f"{main}-oracle", main, True, seed, budget, 10 * args.budget_trials,
                 **shape, oracle=True),
        ]  # fmt: skip
    return specs


def trials_to(hv: list[float], level: float) -> int | None:
    """Trained trials until the curve ``hv`` first reaches ``level`` (None: never)."""
    return next((i + 1 for i, h in enumerate(hv) if h >= level - 1e-12), None)


def random_level(runs: list[dict], trials: int, sampler: str = "tpe") -> dict:
    """Random search's hypervolume after ``trials`` trials (median over seeds), and the trials
    (and, with halving, full-trial equivalents of steps) the default sampler needs to reach it."""
    by_arm: dict[tuple[str, bool], list[dict]] = {}
    for r in runs:
        by_arm.setdefault((r["label"], r["halving"]), []).append(r)
    randoms = sorted(by_arm.get(("random", False), []), key=lambda r: r["seed"])
    level = statistics.median(r["hv"][min(trials, len(r["hv"])) - 1] for r in randoms)
    out: dict[str, Any] = {"level": level, "random_trials": trials, "per_seed": {}}
    for halving, key in ((False, "default"), (True, "default_halving")):
        label = sampler
        arm = sorted(by_arm.get((label, halving), []), key=lambda r: r["seed"])
        counts: list[float | None] = []
        for r in arm:
            n = trials_to(r["hv"], level)
            # With halving a trial is not a full trial: count the steps in full trials.
            counts.append(
                None if n is None else (n if not halving else r["steps"][n - 1] / r["fidelity"])
            )
        out["per_seed"][key] = counts
        out[key] = search_summary.median_cost(counts) if counts else None  # type: ignore[arg-type]
    return out


def verdicts(
    summary: dict, level: dict, sampler: str = "tpe", rung_metric: str = "accuracy"
) -> list[str]:
    """The three goals and the preset, one line each (``rung_metric``: what rungs rank by)."""
    by = {(r["label"], r["halving"]): r for r in summary["rows"]}
    off, on = by.get((sampler, False)), by.get((sampler, True))
    oracle = by.get((f"{sampler}-oracle", True))
    out = []
    if off and on:
        out.append(search_summary.halving_verdict("Halving", off, on, HALVING_GOAL))
    if off and on and oracle:
        medians = off["median_steps"], on["median_steps"], oracle["median_steps"]
        if all(medians):
            ceiling = medians[0] / medians[2]
            got = medians[0] / medians[1]
            share = got / ceiling
            out.append(
                f"- Oracle ceiling: the same ladder with rungs that see the final {rung_metric} "
                f"reaches the target in {medians[2]:,.0f} steps ({ceiling:.2f}x "
                f"fewer than full fidelity); halving's {got:.2f}x is {share:.0%} of it — goal "
                f"of at least {ORACLE_GOAL:.0%} {'MET' if share >= ORACLE_GOAL else 'NOT met'}."
            )
        else:  # a median run never reached the target: no ratio, so the reach and final HV
            out.append(
                f"- Oracle ceiling: with rungs that see the final {rung_metric} "
                f"{oracle['reached']}/{oracle['seeds']} runs reach the target (median steps "
                f"{cell(medians[2], ',.0f')}) and end at HV {oracle['hv_final']:.4f}; with the "
                f"real rungs {on['reached']}/{on['seeds']} (HV {on['hv_final']:.4f}), without "
                f"halving {off['reached']}/{off['seeds']} (HV {off['hv_final']:.4f}) — no "
                f"ratio to the ceiling (a median run never reached the target); goal of at "
                f"least {ORACLE_GOAL:.0%} of it NOT met."
            )
    default = level.get("default")
    out.append(
        f"- {'Default sampler' if sampler == 'tpe' else f'`{sampler}` as the default'} "
        f"against random: random search's median hypervolume after "
        f"{level['random_trials']} trials is {level['level']:.4f}; `{sampler}` "
        f"reaches it in a median of {cell(default, '.0f')} trials without "
        f"halving (per seed: {_seeds(level['per_seed']['default'])}) and "
        f"{cell(level.get('default_halving'), '.1f')} full trials' steps with "
        f"it — goal of at most {DEFAULT_GOAL_TRIALS} trials "
        f"{'MET' if default is not None and default <= DEFAULT_GOAL_TRIALS else 'NOT met'}."
    )
    paper = by.get(("autopeft", False))
    if paper and on:
        out.append(
            f"- AutoPEFT preset (SAAS+qNEHVI, {paper['trials']:.0f} full-fidelity trials, "
            f"{paper['seeds']} seed(s)): median steps to the target "
            f"{cell(paper['median_steps'], ',.0f')} ({paper['reached']}/"
            f"{paper['seeds']} reach it), final HV {paper['hv_final']:.4f}, "
            f"{paper['sampler_s']:.0f} s a run on the surrogate; the default with halving: "
            f"{cell(on['median_steps'], ',.0f')} steps, final HV "
            f"{on['hv_final']:.4f}, {on['sampler_s']:.0f} s."
        )
    return out


def _seeds(values: list[float | None]) -> str:
    return ", ".join("—" if v is None else f"{v:g}" for v in values)


def markdown(summary: dict, meta: dict) -> str:
    """The search summary's table and verdicts under this benchmark's title."""
    body = search_summary.markdown(summary, meta).split("\n", 1)[1]
    main = meta["sampler"]
    role = "the default sampler" if main == "tpe" else "in the place of the default, tpe"
    metric = meta.get("rung_metric", "accuracy")
    ranked = "" if metric == "accuracy" else f", its rungs ranking trials by {metric}"
    arms = (
        f"Arms: `random` and `{main}` ({role}) "
        f"at full fidelity, `{main}` with halving "
        f"(autopeft's default halving{ranked}) and `{main}-oracle` (the same halving, its "
        f"rungs seeing the final {metric}: the ceiling of stop rules on this ladder), each on the "
        f"step budget of {meta['budget_trials']} full trials and "
        f"{meta['seeds']} seeds; `autopeft` (the paper's preset, every trial at full "
        f"fidelity) on {meta['protocol_seeds']} seed(s)."
    )
    total = meta["runs_wall_min"]
    tail = (
        f"The runs' own wall time sums to {total:.1f} min (a run resumed from `--keep` keeps "
        "the time its first run took).\n"
    )
    return f"# Search gains on `{meta['task']}` (the minilm surrogate)\n\n{arms}\n{body}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_gains", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="real trials (jsonl)")
    parser.add_argument("--features", type=feature_sets, default=("all",))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--protocol-seeds", type=int, default=2)
    parser.add_argument("--random-trials", type=int, default=100)
    parser.add_argument("--protocol-trials", type=int, default=200)
    parser.add_argument(
        "--budget-trials",
        type=int,
        default=200,
        help="the other arms' step budget in full trials (default: the preset's 200)",
    )
    parser.add_argument(
        "--rungs",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=None,
        help="halving rungs as fractions (default: autopeft's, 0.25,0.5,1.0; each must be "
        "an evaluation step of the real trials)",
    )
    parser.add_argument("--eta", type=float, default=3.0)
    parser.add_argument(
        "--min-delta",
        type=float,
        default=0.0,
        help="halving's min_delta: rung accuracy gaps up to it go the judged trial's way",
    )
    parser.add_argument(
        "--rung-metric",
        default=None,
        help="halving.metric: what a rung ranks trials by (default: the task metric, accuracy; "
        "'loss' for the evaluation loss)",
    )
    parser.add_argument(
        "--sampler",
        default="tpe",
        help="the sampler in the place of the default (tpe): what if another were the default",
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="search_gains")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and resume) the studies")
    args = parser.parse_args()
    if args.budget_trials < args.random_trials:
        parser.error(
            f"--budget-trials must be at least --random-trials (random search's level is its "
            f"hypervolume after {args.random_trials} trials), but got {args.budget_trials}"
        )

    started = time.perf_counter()
    records = real_trials(args.data)
    fidelity, evals = data_fidelity(records)
    rungs = args.rungs or DEFAULT_RUNGS
    if not set(rungs) <= set(evals) | {1.0}:
        parser.error(
            f"--rungs must be evaluation steps of the real trials ({', '.join(map(str, evals))} "
            f"of {fidelity} steps), but got {', '.join(map(str, rungs))}"
        )
    surrogate = Surrogate(records, autopeft.load_profile("minilm"), args.features)
    runs = run_all(
        specs_for(args, fidelity, rungs),
        run_one,
        args.jobs,
        lambda spec, run: (
            f"{spec.label:10s} halving {spec.halving!s:5s} seed {spec.seed}: HV "
            f"{run['hv'][-1]:.4f}  trials {run['trials']:4d}  steps {run['steps'][-1]:6d}  "
            f"{run['wall_s']:7.1f} s"
        ),
        surrogate,
        keep=args.keep,
    )
    sps = search_summary.seconds_per_step(records)
    best = max(r["hv"][-1] for r in runs if not r["oracle"])
    summary = search_summary.summarise(runs, sps, best)
    level = random_level(runs, args.random_trials, args.sampler)
    task = task_of(args.data)
    report = surrogate.report() | {"source": f"minilm, {task}"}
    meta = {
        **provenance(),
        "task": task,
        "seeds": args.seeds,
        "protocol_seeds": args.protocol_seeds,
        "budget_trials": args.budget_trials,
        "best_from": "of the non-oracle runs",
        "seconds_per_step": sps,
        "real_trials": len(records),
        "data": args.data.name,
        "features": list(args.features),
        "fidelity": fidelity,
        "rung_steps": rung_steps(fidelity, rungs),
        "eta": args.eta,
        "min_delta": args.min_delta,
        "rung_metric": args.rung_metric or "accuracy",
        "rule": search_summary.RULE,
        "random_level": level,
        "sampler": args.sampler,
        "verdicts": verdicts(summary, level, args.sampler, args.rung_metric or "accuracy"),
        "surrogate": report,
        "runtime_min": (time.perf_counter() - started) / 60,
        "runs_wall_min": sum(r["wall_s"] for r in runs) / 60,
    }
    text = markdown(summary, meta)
    write_results(args.out / args.name, {"meta": meta, "summary": summary, "runs": runs}, text)
    print(text)


if __name__ == "__main__":
    main()

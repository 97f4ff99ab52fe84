"""The ceiling on halving's saving: what stopping trials early could save on a search's trials.

``bench/search_cost.py`` measures halving's saving to a target front; this asks how large the
saving could be at best, whatever the rule. For each seed the default sampler runs *without*
halving on the surrogate (exactly as in ``search_cost.py``) until its front reaches the
target, after T trained trials. Two sets of those T trials are counted:

- **needed**: a smallest set of them whose front alone reaches the target, chosen greedily
  (each time the trial that adds the most hypervolume). A clairvoyant rule that lets exactly
  these finish and stops every other trial at the first rung r (a fraction of the full
  fidelity) spends ``needed + (T - needed) * r`` full trials instead of T. Its saving,
  ``T / (needed + (T - needed) * r)``, is the ceiling of any rule with that first rung on
  this sequence of trials. Greedy set cover may pick more trials than the true minimum, so
  the true ceiling can be a little higher.
- **improving**: the trials that raised the front's hypervolume when they finished. A rule
  that stops only trials dominated by the finished ones, even knowing every final accuracy
  (``python -m bench.search_cost --ladders '...@1.0001+hopeless+oracle'``), still lets all of these
  finish; ``T / (improving + (T - improving) * r)`` is its ceiling on this sequence.

The sequence is the no-halving run's. A run with halving proposes different trials (the
sampler sees more, cheaper ones for the same steps), so its measured saving can exceed these
figures; they bound what stopping alone buys, not what the sampler does with the rest.

    OMP_NUM_THREADS=1 python -m bench.halving_ceiling \\
        --data bench/results/real_trials_minilm_640.jsonl --features all,log_params \\
        --target-from bench/results/search_cost_640_56_r80_40.json --seeds 40 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import autopeft
from bench.common import (
    DIRECTIONS,
    RESULTS,
    Spec,
    data_fidelity,
    hv_gain,
    provenance,
    real_trials,
    run_all,
    run_study,
    write_results,
)
from bench.surrogate import Surrogate, feature_sets

#: First rungs (fractions of the full fidelity) the ceiling is given for.
FIRST_RUNGS = (0.25, 0.125, 0.0625)


def greedy_needed(
    points: Sequence[Sequence[float]], reference: Sequence[float], target: float
) -> list[int]:
    """Indices of a small set of ``points`` whose hypervolume reaches ``target`` (greedy).

    Each step adds the point that raises the hypervolume most (ties: the earlier point);
    ``target`` is in the hypervolume's own units. Raises ValueError if all points together
    fall short.
    """
    chosen: list[int] = []
    current = 0.0
    while current < target - 1e-12 * max(1.0, abs(target)):
        rest = [i for i in range(len(points)) if i not in chosen]
        if not rest:
            raise ValueError(f"the points reach hypervolume {current}, short of {target}")
        front = [points[j] for j in chosen]
        gains = {i: hv_gain(points[i], front, reference, current) for i in rest}
        best = max(rest, key=lambda i: (gains[i], -i))
        chosen.append(best)
        current = autopeft.hypervolume([*front, points[best]], reference, DIRECTIONS)
    return chosen


def ceiling(trials: int, finishing: int, first_rung: float) -> float:
    """Saving of a rule that lets ``finishing`` of ``trials`` finish, stopping the rest at
    ``first_rung`` (a fraction of a full trial)."""
    return trials / (finishing + (trials - finishing) * first_rung)


def improving_count(hv: Sequence[float]) -> int:
    """How many trials raised the hypervolume curve ``hv`` (one value after each trial)."""
    return sum(1 for i, h in enumerate(hv) if h > (hv[i - 1] if i else 0.0) + 1e-12)


def analyse(spec: Spec, surrogate: Surrogate, root: str, target: float) -> dict:
    """One seed: the no-halving run until its front reaches ``target`` (a fraction of the
    reference box), and the needed and improving trials before that."""
    curve, run = run_study(spec, surrogate, root)
    hv = run["hv"]
    reached = next((i + 1 for i, h in enumerate(hv) if h >= target - 1e-12), None)
    out = {"seed": spec.seed, "trials_to_target": reached, "trials": len(hv)}
    if reached is None:
        return out
    points = curve["points"][:reached]
    done = [i for i, p in enumerate(points) if p is not None]
    needed = greedy_needed([points[i] for i in done], curve["reference"], target * curve["box"])
    return out | {
        "needed": sorted(done[i] for i in needed),
        "improving": improving_count(hv[:reached]),
    }


def _analyse(job: tuple[Spec, float], surrogate: Surrogate, root: str) -> dict:
    spec, target = job
    return analyse(spec, surrogate, root, target)


def summarise(rows: list[dict]) -> dict:
    """Medians over the seeds that reached the target, per first rung (None: no seed did)."""
    done = [r for r in rows if r["trials_to_target"] is not None]
    if not done:
        return {"reached": 0, "seeds": len(rows), "median_trials": None, "ceilings": {}} | {
            "median_needed": None,
            "median_improving": None,
        }
    out = {
        "reached": len(done),
        "seeds": len(rows),
        "median_trials": statistics.median(r["trials_to_target"] for r in done),
        "median_needed": statistics.median(len(r["needed"]) for r in done),
        "median_improving": statistics.median(r["improving"] for r in done),
        "ceilings": {},
    }
    for rung in FIRST_RUNGS:
        out["ceilings"][str(rung)] = {
            kind: statistics.median(ceiling(r["trials_to_target"], n(r), rung) for r in done)
            for kind, n in (
                ("needed", lambda r: len(r["needed"])),
                ("improving", lambda r: r["improving"]),
            )
        }
    return out


def markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    """The per-seed table and the medians."""
    fid = meta["fidelity"]
    rungs = [f"{round(r * fid)} steps" for r in FIRST_RUNGS]
    lines = [
        "# The ceiling on halving's saving",
        "",
        f"Data `{meta['data']}` (full trial {fid} steps), target {meta['target']:.4f} (95% of "
        f"the best HV in `{meta['target_from']}`), {summary['seeds']} seeds of the default "
        f"sampler without halving; {summary['reached']} reach the target. Per seed: T trained "
        "trials until the front first reaches it; *needed*: a greedy smallest set of those "
        "that reaches it alone; *improving*: those that raised the HV when they finished. "
        "Ceiling = T / (n + (T - n) r) for n finishing and the rest stopped at first rung r, "
        "per seed; the table gives its median over the seeds that reach the target (see the "
        "module doc of `bench/halving_ceiling.py`).",
        "",
        "| first rung | ceiling (clairvoyant: only the needed finish) | ceiling (stop only "
        "the dominated, exact accuracy: the improving finish) |",
        "|---|---|---|",
    ]
    for rung, label in zip(FIRST_RUNGS, rungs):
        c = summary["ceilings"].get(str(rung))
        cells = f"{c['needed']:.2f}x | {c['improving']:.2f}x" if c else "— | —"
        lines.append(f"| {label} (1/{round(1 / rung)}) | {cells} |")
    lines += [
        "",
        f"Medians: T {summary['median_trials']}, needed {summary['median_needed']}, improving "
        f"{summary['median_improving']}.",
        "",
        "| seed | T | needed | improving | needed trials (0-based) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["trials_to_target"] is None:
            lines.append(f"| {r['seed']} | — (not in {r['trials']}) | | | |")
        else:
            lines.append(
                f"| {r['seed']} | {r['trials_to_target']} | {len(r['needed'])} | "
                f"{r['improving']} | {', '.join(map(str, r['needed']))} |"
            )
    lines += ["", f"Runtime: {meta['runtime_min']:.1f} min."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.halving_ceiling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="real trials (jsonl)")
    parser.add_argument("--features", type=feature_sets, default=("all",))
    parser.add_argument(
        "--target-from",
        type=Path,
        required=True,
        help="a search_cost.py results file of the same data: its target is used",
    )
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument(
        "--budget-trials",
        type=int,
        default=150,
        help="full trials of steps a run may take to reach the target",
    )
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file stem")
    args = parser.parse_args()
    saved = json.loads(args.target_from.read_text())
    if saved["meta"]["data"] != args.data.name:
        sys.exit(
            f"--target-from: {args.target_from.name} is of {saved['meta']['data']!r}, not "
            f"{args.data.name!r}; take the target from a results file of the same data"
        )
    started = time.perf_counter()
    records = real_trials(args.data)
    surrogate = Surrogate(records, autopeft.load_profile("minilm"), args.features)
    fidelity, _ = data_fidelity(records)
    target = saved["summary"]["target"]
    budget = args.budget_trials * fidelity
    jobs = [
        (Spec("cost", "tpe", "tpe", False, seed, budget, 10 * budget, fidelity=fidelity), target)
        for seed in range(args.seeds)
    ]
    rows = run_all(
        jobs,
        _analyse,
        args.jobs,
        lambda job, row: (
            f"seed {job[0].seed}: T {row['trials_to_target']} "
            f"needed {len(row.get('needed', []))} improving {row.get('improving')}"
        ),
        surrogate,
    )
    summary = summarise(rows)
    meta = {
        **provenance(),
        "data": args.data.name,
        "fidelity": fidelity,
        "target": target,
        "target_from": args.target_from.name,
        "runtime_min": (time.perf_counter() - started) / 60,
    }
    stem = args.out / (args.name or f"halving_ceiling_{fidelity}")
    text = markdown(rows, summary, meta)
    write_results(stem, {"meta": meta, "summary": summary, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()

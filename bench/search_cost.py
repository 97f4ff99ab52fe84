"""Search cost: compute to reach a target front, with and without successive halving, and
the AutoPEFT paper's protocol against autopeft's default, side by side in one run.

The benchmark is the surrogate of ``bench/surrogate.py`` (fitted to real trials of
``search_spaces/bench.yaml`` on ``minilm`` / ``rotten_tomatoes``; ``--data`` picks the file and
so the fidelity), run through ``autopeft.run_local`` as ``autopeft run`` runs a study.
Compute is counted in training steps (a pruned trial costs the steps it ran; a re-proposed
known candidate costs none) and converted to CPU-hours with the seconds per step measured in
the real trials; the samplers' own time is measured and reported beside it.

1. **Cost to a target front** (``--part cost``): the default sampler (TPE) with halving on and
   off, each run until ``--budget-trials`` x 40 steps are spent (with halving that is many
   more, cheaper trials). The target is 95% of the best hypervolume any run of this
   benchmark reached; the cost of a run is the steps spent when its front first reaches it.
   ``--ladders`` runs more halving ladders on the same seeds and target (:class:`Ladder`).
2. **AutoPEFT's protocol** (``--part protocol``): the ``autopeft`` preset (SAAS fully
   Bayesian GP + qNEHVI, 100 random initial trials, 200 trials, every trial at full fidelity
   as in the paper) against the default sampler with halving given the same step budget.

    OMP_NUM_THREADS=1 python -m bench.search_cost --jobs 2 [--part cost|protocol|all]
    OMP_NUM_THREADS=1 python -m bench.search_cost --part cost \\
        --data bench/results/real_trials_minilm_640.jsonl --features all,log_params \\
        --seeds 20 --budget-trials 60 --name search_cost_640_56

``--merge`` summarises the runs of several results files under one target (nothing is run);
a merged file keeps only its summary and names its parts in ``meta.merged_from``.
Hypervolume is the fraction of the box between the ideal corner and the reference point of
:func:`bench.common.reference_point` (shared by every run). Results:
bench/results/``--name``.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import autopeft
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
from bench.search_summary import (
    RULE,
    halving_verdict,
    markdown,
    seconds_per_step,
    summarise,
)
from bench.surrogate import DATA, Surrogate, feature_sets

#: Ladder flags: ``+hopeless`` sets halving.stop_hopeless; ``+oracle`` makes the surrogate
#: report a trial's final accuracy at every rung, so the rule ranks perfectly: the ceiling of
#: what better rung accuracy (more validation examples, later rungs) could save.
LADDER_FLAGS = {
    "hopeless": "hopeless trials stopped too",
    "oracle": "the rungs seeing the final accuracy (oracle)",
}


@dataclass(frozen=True)
class Ladder:
    """A halving ladder run beside the default (``rungs@eta[+flag...]``): rungs as fractions
    of the full fidelity, eta and flags (:data:`LADDER_FLAGS`). Its label names the rows and
    studies of a run, and the verdicts read the ladder back from it."""

    rungs: tuple[float, ...]
    eta: float = 3.0
    hopeless: bool = False
    oracle: bool = False

    @classmethod
    def parse(cls, text: str) -> Ladder:
        """``'0.125,0.5,1.0@4+hopeless'`` -> a ladder."""
        shape, *flags = text.strip().split("+")
        rungs, _, eta = shape.partition("@")
        try:
            if set(flags) - set(LADDER_FLAGS):
                raise ValueError
            values = tuple(float(v) for v in rungs.split(","))
            return cls(values, float(eta or 3.0), **{f: f in flags for f in LADDER_FLAGS})
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected rungs@eta[+{'|+'.join(LADDER_FLAGS)}] such as 0.125,0.5,1.0@4, "
                f"but got {text.strip()!r}"
            ) from None

    def label(self, fidelity: int) -> str:
        """The row label (and study-name part): ``tpe-r80-160-320-e3[-hopeless][-oracle]``."""
        steps = "-".join(str(s) for s in rung_steps(fidelity, self.rungs))
        flags = "".join(f"-{f}" for f in LADDER_FLAGS if getattr(self, f))
        return f"tpe-r{steps}-e{self.eta:g}{flags}"

    @staticmethod
    def title(label: str) -> str:
        """The verdict's name of the ladder behind ``label`` (what :meth:`label` wrote)."""
        steps, _, rest = label.removeprefix("tpe-r").partition("-e")
        eta, *flags = rest.split("-")
        also = "".join(f", {LADDER_FLAGS.get(f, f)}" for f in flags)
        return f"Halving at rungs {steps.replace('-', '/')} with eta {eta}{also}"


def parse_ladders(text: str) -> tuple[Ladder, ...]:
    """``'0.125,0.5,1.0@4;0.25,0.5,1.0@3+hopeless'`` -> ladders (separated by ``;``)."""
    return tuple(Ladder.parse(part) for part in text.split(";") if part.strip())


def verdicts(summary: dict) -> list[str]:
    """Halving's saving against the goal; the protocol comparison."""
    by = {(r["part"], r["label"], r["halving"]): r for r in summary["rows"]}
    out = []
    off = by.get(("cost", "tpe", False))
    names = {"tpe": "Halving"}
    ladders = sorted(
        label for part, label, on in by if part == "cost" and label.startswith("tpe-r")
    )
    for label in ladders:
        names[label] = Ladder.title(label)
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
    parser = argparse.ArgumentParser(
        prog="python -m bench.search_cost", description=__doc__.split("\n")[0]
    )
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
        type=feature_sets,
        default=("all",),
        help="the surrogate's learner-curve feature sets, chosen per step by leave-one-out: "
        "'all' (default) or 'all,log_params'",
    )
    parser.add_argument("--min-delta", type=float, default=0.0, help="halving.min_delta")
    parser.add_argument("--eta", type=float, default=3.0, help="halving.eta")
    parser.add_argument(
        "--ladders",
        type=parse_ladders,
        default=(),
        help="more halving ladders run beside --rungs/--eta on the same seeds and target, "
        "e.g. '0.125,0.25,0.5,1.0@3;0.25,0.5,1.0@3+hopeless' (rungs@eta, '+hopeless' for "
        "halving.stop_hopeless, '+oracle' for rungs that see the final accuracy: the ceiling "
        "of better rung accuracy; separated by ';')",
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
    surrogate = Surrogate(records, autopeft.load_profile("minilm"), args.features)
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
                }
                label = ladder.label(fidelity)
                specs.append(
                    Spec("cost", label, "tpe", True, seed, budget, 10 * budget, **settings)
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
        "rung_steps": rung_steps(fidelity, shape["rungs"]),
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

    ``args`` carries ``seeds``, ``data``, ``features``, ``out`` and ``name``.
    """
    sps = seconds_per_step(records)
    summary = summarise(runs, sps)
    meta = {
        **provenance(),
        "seeds": args.seeds,
        "seconds_per_step": sps,
        "real_trials": len(records),
        "data": args.data.name,
        "features": list(args.features),
        "fidelity": data_fidelity(records)[0],
        **meta,
        "runtime_min": (time.perf_counter() - started) / 60,
        "verdicts": verdicts(summary),
        "surrogate": surrogate.report(),
    }
    write(args.out / args.name, meta, summary, runs)


def write(stem: Path, meta: dict, summary: dict, runs: list[dict] | None) -> None:
    """``stem``.json (everything) and ``stem``.md (the tables and verdicts).

    ``runs=None`` (a merge) keeps no runs: they are in the files ``meta.merged_from`` names,
    and ``meta.command`` merges them again.
    """
    saved = {"meta": meta, "summary": summary} | ({} if runs is None else {"runs": runs})
    text = markdown(summary, meta)
    write_results(stem, saved, text)
    print(text)


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
        **provenance(),
        "best_from": None if best_from is None else f"of `{best_from.name}`",
        "seeds": max(r["seed"] for r in runs) + 1,
        "verdicts": verdicts(summary),
        "runtime_min": sum(s["meta"]["runtime_min"] for s in saved),
        "parts": [f"`{s['meta']['command']}` ({s['meta']['runtime_min']:.1f} min)" for s in saved],
        "merged_from": [os.path.relpath(p, stem.parent.resolve()) for p in paths],
    }
    write(stem, meta, summary, None)


if __name__ == "__main__":
    main()

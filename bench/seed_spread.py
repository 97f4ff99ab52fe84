"""Final hypervolume over many seeds, this checkout against a baseline checkout, side by side.

A change to sampling (what a trial suggests, in which order) changes every seed's draws, so a
few seeds cannot tell a better sampler from a luckier one. This runs the same search-cost run
(``search_cost.run_one``: TPE on the 160-step surrogate, one step budget) for seeds
``0..N-1`` in two checkouts and reports mean, standard deviation and the standard error of
the difference. Make the baseline with ``git worktree add /tmp/base <commit>``; each checkout's
code runs in a child process started in that checkout (its own ``bench`` and ``autopeft``
come first on the path there).

    OMP_NUM_THREADS=1 python -m bench.seed_spread --baseline /tmp/base --seeds 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import (
    RESULTS,
    ROOT,
    git_commit,
    provenance,
    real_trials,
    run_in_checkout,
    write_results,
)

DATA = RESULTS / "real_trials_minilm_160.jsonl"


def run_seeds(checkout: Path, data: Path, seeds: int, halving: bool, budget: int) -> list[float]:
    """Final HV per seed, computed by ``checkout``'s own code (a child process) on ``data``."""
    code = f"""
import json, tempfile
from bench.search_cost import Spec, run_one
from bench.surrogate import Surrogate
surrogate = Surrogate.from_jsonl({str(data)!r})
out = []
for seed in range({seeds}):
    with tempfile.TemporaryDirectory() as root:
        spec = Spec("cost", "tpe", "tpe", {halving}, seed, {budget}, 10 * {budget},
                    fidelity=160, rungs=(0.25, 0.5, 1.0))
        out.append(run_one(spec, surrogate, root)["hv"][-1])
print(json.dumps(out))
"""
    done = run_in_checkout(checkout, code)
    assert not isinstance(done, str)  # no time limit
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: the run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(base: list[float], ours: list[float], meta: dict) -> str:
    """Per-seed table and the summary line."""
    se = (statistics.variance(base) / len(base) + statistics.variance(ours) / len(ours)) ** 0.5
    diff = statistics.fmean(ours) - statistics.fmean(base)
    lines = [
        "# Final hypervolume over seeds: this checkout vs a baseline",
        "",
        f"TPE, halving {'on' if meta['halving'] else 'off'}, {meta['budget']:,} training steps "
        f"on the 160-step surrogate ({DATA.name}); baseline `{meta['baseline']}`, this "
        f"checkout `{meta['ours']}`.",
        "",
        "| seed | baseline | this checkout |",
        "|---|---|---|",
    ]
    lines += [f"| {i} | {b:.4f} | {o:.4f} |" for i, (b, o) in enumerate(zip(base, ours))]
    lines += [
        "",
        f"- mean ± std: baseline {statistics.fmean(base):.4f} ± {statistics.stdev(base):.4f}, "
        f"this checkout {statistics.fmean(ours):.4f} ± {statistics.stdev(ours):.4f}; "
        f"difference {diff:+.4f} (standard error {se:.4f}, {abs(diff) / se:.1f} of them).",
        "",
        f"Runtime: {meta['minutes']:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.seed_spread", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare to")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--halving", choices=["off", "on"], default="off")
    parser.add_argument("--budget-trials", type=int, default=100, help="full trials of steps")
    parser.add_argument("--name", default="seed_spread_160")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error(f"--seeds >= 2 must hold (a spread needs two seeds), but got {args.seeds}")
    started, halving, budget = time.perf_counter(), args.halving == "on", args.budget_trials * 160
    with tempfile.TemporaryDirectory() as tmp:
        # The trials alone, one per line (no provenance line): what every checkout reads.
        data = Path(tmp) / DATA.name
        data.write_text("".join(json.dumps(r) + "\n" for r in real_trials(DATA)))
        base = run_seeds(args.baseline.resolve(), data, args.seeds, halving, budget)
        ours = run_seeds(ROOT, data, args.seeds, halving, budget)
    meta = {
        **provenance(),
        "halving": halving,
        "budget": budget,
        "baseline": git_commit(args.baseline.resolve()),
        "ours": git_commit(ROOT),
        "minutes": (time.perf_counter() - started) / 60,
    }
    text = markdown(base, ours, meta)
    write_results(args.out / args.name, {"meta": meta, "baseline": base, "ours": ours}, text)
    print(text)


if __name__ == "__main__":
    main()

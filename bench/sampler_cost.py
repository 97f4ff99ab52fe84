"""Every sampler's cost per suggestion in a large study, and what the cheaper BO gives up.

A study of N finished random trials of the synthetic runner (``bench/overheads.py``: exact
parameters and predicted memory, an accuracy that rises with size and depth, no training)
is filled once per N in this checkout. Each arm -- a registered sampler in a checkout --
opens a copy of it in a child process started in that checkout (its own ``autopeft`` first
on the path, one thread) and makes ``--probes`` suggestions, each ``Study.ask()`` timed and
then told the synthetic runner's result. Reported per arm: the first suggestion (it
includes the process's first model fit and imports), the median of the rest, and the
hypervolume the suggestions added to the study's front (a fraction of the fixed box of
``bench/common.py``'s reference point), over ``--seeds`` sampler seeds.

The quality question is whether the large-study path of the pool samplers (``qnehvi``,
``autopeft``: a GP fitted on at most 128 rows, analytic EHVI over the posterior-mean front)
proposes as well as the full qLogNEHVI it replaces: the baseline checkout runs the old
path side by side on the same studies, and ``random`` is the floor.

Make the baseline with ``git archive <commit> | tar -x -C /tmp/base``.

    OMP_NUM_THREADS=1 python -m bench.sampler_cost --baseline /tmp/base

Results: bench/results/sampler_cost.json and .md (``--name``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, git_commit, provenance, run_in_checkout, write_results

#: The arm's child: open a copy of the filled study with a sampler, suggest, time, tell.
CHILD = """
import json, shutil, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import autopeft
from bench.common import box_volume, reference_point
from bench.overheads import SPACE, Synthetic

arm = json.loads(sys.argv[1])
shutil.copytree(arm["filled"], arm["root"])
config = autopeft.study_from_dict({
    "name": arm["study"], "model": "minilm", "search_space": SPACE,
    "halving": {"enabled": False}, "sampler": {"name": arm["sampler"], "seed": arm["seed"]},
})
study = autopeft.Study(config, root=arm["root"])
runner = Synthetic(study)
ref = reference_point(study)
box = box_volume(ref)
before = study.hypervolume(ref) / box
times, cpu = [], []
for _ in range(arm["probes"]):
    start, start_cpu = time.perf_counter(), time.process_time()
    trial, candidate = study.ask()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
    study.tell(trial, runner.run(candidate, None, set()))
sampler = study.optuna.sampler
print("RESULT " + json.dumps({
    "times": times,
    "cpu": cpu,
    "hv_before": before,
    "hv_gain": study.hypervolume(ref) / box - before,
    "fit_rows": getattr(sampler, "fit_rows", None),
    "failures": getattr(sampler, "failures", None),
}))
"""


def fill(n: int, root: Path) -> Path:
    """A study folder of ``n`` finished random trials (``bench/overheads.py``'s filler)."""
    code = (
        "import sys, warnings; warnings.filterwarnings('ignore')\n"
        "from pathlib import Path\n"
        "from bench.overheads import filled_study\n"
        "filled_study(int(sys.argv[1]), Path(sys.argv[2]))\n"
    )
    folder = root / f"filled-{n}"
    done = run_in_checkout(ROOT, code, str(n), str(folder))
    if isinstance(done, str):  # ran past its time-out
        raise SystemExit(f"filling {n} trials failed: {done}")
    if done.returncode != 0:
        raise SystemExit(f"filling {n} trials failed:\n{done.stderr[-3000:]}")
    return folder


def run_arm(checkout: Path, arm: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One arm in a child process started in ``checkout`` (None on a time-out or error)."""
    try:
        done = run_in_checkout(checkout, CHILD, json.dumps(arm), timeout=timeout)
    finally:
        shutil.rmtree(arm["root"], ignore_errors=True)
    if isinstance(done, str):
        return {"error": done}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"error": done.stderr.strip().splitlines()[-1][:300] if done.stderr else "?"}
    return json.loads(lines[-1][len("RESULT ") :])


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """First / median-of-the-rest / max seconds per suggestion and the HV gains over seeds."""
    ok = [r for r in runs if "times" in r]
    if not ok:
        return {"error": runs[0].get("error", "?") if runs else "not run"}
    firsts = [r["times"][0] for r in ok]
    rest = [t for r in ok for t in r["times"][1:]] or firsts
    rest_cpu = [t for r in ok for t in r["cpu"][1:]] or [r["cpu"][0] for r in ok]
    gains = [r["hv_gain"] for r in ok]
    return {
        "seeds": len(ok),
        "first_s": round(statistics.median(firsts), 3),
        "median_s": round(statistics.median(rest), 3),
        "median_cpu_s": round(statistics.median(rest_cpu), 3),
        "mean_s": round(statistics.fmean([t for r in ok for t in r["times"]]), 3),
        "mean_cpu_s": round(statistics.fmean([t for r in ok for t in r["cpu"]]), 3),
        "max_s": round(max(t for r in ok for t in r["times"]), 3),
        "hv_gain_mean": statistics.fmean(gains),
        "hv_gain_sd": statistics.stdev(gains) if len(gains) > 1 else 0.0,
        "hv_before": ok[0]["hv_before"],
        "fit_rows": ok[0].get("fit_rows"),
        "failures": sum(r.get("failures") or 0 for r in ok),
    }


def cell(s: dict[str, Any], what: str) -> str:
    """A table cell: seconds (median, first) or the HV gain (mean +- sd, x1e4)."""
    if "error" in s:
        return f"({s['error']})"
    if what == "time":
        return (
            f"{s['median_s']:.2f} / cpu {s['median_cpu_s']:.2f} (first {s['first_s']:.2f}, "
            f"max {s['max_s']:.2f})"
        )
    return f"{1e4 * s['hv_gain_mean']:.1f} ± {1e4 * s['hv_gain_sd']:.1f}"


def main() -> None:
    """Fill the studies, run every arm, write the tables."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.sampler_cost", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--sizes", default="200,500,1000", help="finished trials N")
    ap.add_argument("--samplers", default="random,tpe,nsga2,gp,qnehvi,autopeft")
    ap.add_argument("--probes", type=int, default=3, help="suggestions per arm")
    ap.add_argument("--seeds", type=int, default=3, help="sampler seeds of the quality arms")
    ap.add_argument("--quality", default="random,qnehvi", help="samplers run for every seed")
    ap.add_argument("--autopeft-probes", type=int, default=8, help="two q = 4 batches")
    ap.add_argument("--baseline", type=Path, help="a checkout whose qnehvi runs side by side")
    ap.add_argument("--baseline-sizes", default="200", help="N of the baseline's arms")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per arm")
    ap.add_argument("--name", default="sampler_cost")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument(
        "--render", action="store_true", help="rewrite the Markdown from the results JSON"
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.render:
        data = json.loads((args.out / f"{args.name}.json").read_text())
        write_results(args.out / args.name, data, report(data["rows"], sizes, args))
        return
    samplers, quality = args.samplers.split(","), args.quality.split(",")
    checkouts = {"this": ROOT}
    if args.baseline:
        checkouts["baseline"] = args.baseline.resolve()
    base_sizes = {int(s) for s in args.baseline_sizes.split(",")} if args.baseline else set()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in sizes:
            filled = fill(n, root)
            plan = [("this", s) for s in samplers]
            plan += [("baseline", "qnehvi")] if n in base_sizes else []
            for side, sampler in plan:
                seeds = args.seeds if (sampler in quality or side == "baseline") else 1
                probes = args.autopeft_probes if sampler == "autopeft" else args.probes
                runs = []
                for seed in range(seeds):
                    arm = {
                        "filled": str(filled),
                        "root": str(root / f"{side}-{sampler}-{n}-{seed}"),
                        "study": f"fill-{n}",
                        "sampler": sampler,
                        "seed": seed,
                        "probes": probes,
                    }
                    runs.append(run_arm(checkouts[side], arm, args.timeout))
                row = {"trials": n, "checkout": side, "sampler": sampler, "runs": runs}
                row |= summary(runs)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    meta = provenance() | {k: git_commit(v) for k, v in checkouts.items()}
    write_results(args.out / args.name, {"meta": meta, "rows": rows}, report(rows, sizes, args))


def report(rows: list[dict[str, Any]], sizes: list[int], args: argparse.Namespace) -> str:
    """The Markdown tables: seconds per suggestion, then the HV the suggestions added."""

    def find(n: int, side: str, sampler: str) -> dict[str, Any] | None:
        return next(
            (r for r in rows if (r["trials"], r["checkout"], r["sampler"]) == (n, side, sampler)),
            None,
        )

    def time_cell(r: dict[str, Any]) -> str:
        text = cell(r, "time")
        if r["sampler"] == "autopeft" and "mean_s" in r:
            text += f"; mean {r['mean_s']:.2f} / cpu {r['mean_cpu_s']:.2f}"
        return text

    def table(text: Callable[[dict[str, Any]], str]) -> list[str]:
        """One row per arm, one cell per N (``text`` of the arm's row, or "not run")."""
        out = []
        for side, sampler in arms:
            found = [find(n, side, sampler) for n in sizes]
            cells = [text(r) if r else "not run" for r in found]
            label = f"{sampler} (baseline)" if side == "baseline" else sampler
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        return out

    arms = [("this", s) for s in args.samplers.split(",")]
    arms += [("baseline", "qnehvi")] if any(r["checkout"] == "baseline" for r in rows) else []
    head = "| sampler | " + " | ".join(f"N={n}" for n in sizes) + " |"
    rule = "|---|" + "---|" * len(sizes)
    lines = [
        "# Sampler cost per suggestion at 200-1,000 finished trials (CPU, one thread)",
        "",
        f"Seconds per `Study.ask()`: the median of the suggestions after the first, wall / "
        f"the process's CPU time (the 2 cores are shared with other work: wall time "
        f"includes waiting for a core) (first, max, wall), {args.probes} suggestions per "
        f"arm ({args.autopeft_probes} for `autopeft`, "
        f"two q = 4 batches: a batch's later suggestions are queued, so its mean is the cost "
        f"per suggestion); the study is a copy of one N-trial synthetic study. Goal: < 1 s "
        f"at N=500 (the `autopeft` preset: < 10 s on a GPU).",
        "",
        head,
        rule,
    ]
    lines += table(time_cell)
    lines += [
        "",
        "## Hypervolume the suggestions added (x 1e-4 of the box; mean ± sd over seeds)",
        "",
        f"From the same N-trial study, each arm's {args.probes} suggestions are trained by "
        f"the synthetic runner; the gain of the study's front is a fraction of the fixed "
        f"reference box.",
        "",
        head,
        rule,
    ]
    lines += table(lambda r: f"{cell(r, 'hv')} ({r.get('seeds', 0)} seeds)")
    lines += [
        "",
        "One lucky candidate makes most of a gain, so a few suggestions over a few seeds "
        "separate a model from random search (the floor) but not two close models; "
        f"`autopeft` makes {args.autopeft_probes} suggestions, the others {args.probes}. "
        "The first suggestion of a process includes importing the model libraries and, for "
        "`autopeft`, compiling NUTS (JAX) for the capped number of rows.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

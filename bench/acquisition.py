"""Cost of one ``autopeft`` (SAAS + qNEHVI) batch: the whole-pool greedy against the prescreen.

A study is filled with N random trials of the synthetic runner (``bench/overheads.py``),
the ``autopeft`` sampler is asked once, and the inputs of its ``choose`` are captured. One
SAAS GP is fitted to them by NUTS (seeded), and then the same q = 4 batch is chosen two
ways, side by side on that one fit:

- baseline, autopeft before this benchmark: qLogNEHVI with 128 Monte Carlo samples per MCMC
  draw, the greedy q-batch over the whole pool (~1,300-1,500 candidates);
- current: 128 Monte Carlo samples shared out over the MCMC draws, the greedy q-batch over the
  pool's 128 best candidates by their own (q = 1) value (``autopeft/search/pool.py``).

Reported per N: the seconds of building the acquisition and of choosing, the batches (pool
indices) and the joint qLogNEHVI of each batch under one common reference acquisition (the
baseline's, re-seeded), so a cheaper choice that is worse shows as a lower value.

    OMP_NUM_THREADS=1 .venv/bin/python bench/acquisition.py [--trials 100,200]

Results: bench/results/acquisition_cpu.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from overheads import filled_study

from autopeft.search import pool
from autopeft.search.study import Study

RESULTS = Path(__file__).parent / "results"
#: (label, Monte Carlo samples per draw or None for the current rule, prescreen or 0 = none)
VARIANTS = (("whole pool, 128 MC per draw", 128, 0), ("prescreen 128, 128 MC in all", None, None))


def captured_inputs(n: int, root: Path) -> tuple:
    """The arguments the ``autopeft`` sampler passes to ``pool.choose`` after N trials."""
    base = filled_study(n, root).config
    sampler = base.sampler.model_copy(update={"name": "autopeft", "n_startup_trials": 10})
    cfg = base.model_copy(update={"sampler": sampler})
    got: list[tuple] = []
    choose = pool.choose
    pool.choose = lambda *args: got.append(args) or list(range(args[5]))
    try:
        Study(cfg, root=root).ask()
    finally:
        pool.choose = choose
    return got[0]


def measure(n: int) -> dict:
    """Fit once, then time and score the batch of each variant."""
    import torch
    from botorch.utils.sampling import manual_seed

    with tempfile.TemporaryDirectory() as root:
        x_train, y_train, x_pending, x_pool, exact, q, _, fidelity = captured_inputs(n, Path(root))
    rows = torch.cat([x_train] + ([x_pending] if x_pending is not None else []) + [x_pool])
    x_fit, x_base, x_pend, x_cand = pool.with_fidelity(x_train, x_pending, x_pool, fidelity)
    start = time.perf_counter()
    with manual_seed(0):
        gps = [pool.fit_gp(x_fit, y_train[:, :1], "saas")]
    nuts_s = round(time.perf_counter() - start, 1)
    out = {"trials": n, "pool": len(x_pool), "q": q, "nuts_s": nuts_s}

    def joint(batch: list[int]) -> float:
        with manual_seed(1), torch.no_grad():
            reference = pool.acquisition(gps, y_train, rows, exact, x_base, x_pend, 128)
            return float(reference(x_cand[batch].unsqueeze(0)))

    out["variants"] = []
    for label, mc, prescreen in VARIANTS:
        with manual_seed(0):
            start = time.perf_counter()
            acqf = pool.acquisition(gps, y_train, rows, exact, x_base, x_pend, mc)
            built = time.perf_counter()
            batch = pool.select(acqf, x_cand, q, prescreen)
            done = time.perf_counter()
        row = {
            "variant": label,
            "build_s": round(built - start, 1),
            "choose_s": round(done - built, 1),
            "total_s": round(done - start, 1),
            "batch": sorted(batch),
            "joint_log_nehvi": round(joint(batch), 4),
        }
        out["variants"].append(row)
        print(n, row, flush=True)
    return out


def write(results: list[dict], name: str, seconds: float) -> None:
    """The JSON and a Markdown table with the speed-up and whether the batch is the same."""
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# One `autopeft` batch (SAAS + qNEHVI, q = 4): whole-pool greedy vs prescreen",
        "",
        "One SAAS fit (NUTS, seeded) of N random synthetic trials; the same q = 4 batch chosen "
        "both ways on that fit. Joint value: the batch's qLogNEHVI under one common reference "
        "acquisition (128 MC samples per draw, re-seeded). See `bench/acquisition.py`.",
        "",
        "| trials | pool | NUTS s | variant | build s | choose s | total s | batch | joint |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for r in results:
        for v in r["variants"]:
            lines.append(
                f"| {r['trials']} | {r['pool']} | {r['nuts_s']} | {v['variant']} | "
                f"{v['build_s']} | {v['choose_s']} | {v['total_s']} | {v['batch']} | "
                f"{v['joint_log_nehvi']:.4f} |"
            )
        old, new = r["variants"]
        same = "the same batch" if old["batch"] == new["batch"] else "a different batch"
        verdicts.append(
            f"- {r['trials']} trials: {old['total_s'] / new['total_s']:.1f}x faster "
            f"({old['total_s']} s -> {new['total_s']} s after NUTS), {same}, joint value "
            f"{old['joint_log_nehvi']:.4f} -> {new['joint_log_nehvi']:.4f}."
        )
    lines += ["", "## Verdicts", "", *verdicts, ""]
    lines.append(
        f"Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/acquisition.py --trials "
        f"{','.join(str(r['trials']) for r in results)}` ({seconds / 60:.1f} min, "
        f"{platform.machine()} CPU)."
    )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", default="100,200", help="study sizes N")
    parser.add_argument("--name", default="acquisition_cpu", help="results file stem")
    args = parser.parse_args()
    start = time.perf_counter()
    results = [measure(int(n)) for n in args.trials.split(",")]
    write(results, args.name, time.perf_counter() - start)


if __name__ == "__main__":
    main()

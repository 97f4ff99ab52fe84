"""What evaluating at the rungs costs an SFT trial whose objective needs generated answers.

A causal-LM study with the objective ``exact_match`` generates answers at every evaluation,
the rungs' included. With ``halving.metric: eval_loss`` the rungs rank trials by the
evaluation loss, and the evaluations before the end skip generation. The same LoRA trial of
SmolLM2-135M on the built-in ``arithmetic`` task runs both ways, interleaved (A B A B ...),
with evaluations at the default rungs (1/4, 1/2, 1) and every ``eval_every`` steps; the
median wall time per trial is reported, and the final metrics must agree (the same training,
evaluated the same way at the end).

    python -m bench.rung_eval_cost --steps 40 --reps 2

Results: bench/results/rung_eval_cost_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import autopeft
from bench.common import RESULTS, provenance, rung_steps, write_results

#: The two ways a rung is ranked: the objective itself (the default), or the loss.
ARMS = {"rungs rank by exact_match (default)": None, "rungs rank by eval_loss": "eval_loss"}


def study_dict(args: argparse.Namespace, rung_metric: str | None) -> dict[str, Any]:
    """The bench's study: one LoRA candidate, the objective exact_match."""
    return {
        "name": "rung-eval-cost",
        "model": args.model,
        "task": {
            "kind": "causal_lm",
            "name": "arithmetic",
            "max_length": 96,
            "max_new_tokens": args.max_new_tokens,
            "generate_examples": args.generate_examples,
        },
        "search_space": {"modules": {"lora": {"rank": 8, "targets": ["q", "v"]}}},
        "training": {
            "steps": args.steps,
            "batch_size": 8,
            "lr": 2e-3,
            "eval_every": args.eval_every,
            "eval_examples": args.eval_examples,
        },
        "objectives": "exact_match, -trainable_params",
        "halving": {"metric": rung_metric},
    }


def run_arm(study: Any, ctx: Any, candidate: Any) -> dict[str, Any]:
    """One trial with evaluations at the rungs; its wall time and evaluations."""
    training = study.config.training
    start = time.perf_counter()
    result = autopeft.run_trial(
        ctx, candidate, eval_at=set(rung_steps(training.steps, training.rungs))
    )
    wall = time.perf_counter() - start
    if result.status is not autopeft.TrialStatus.COMPLETE:
        raise RuntimeError(f"run_trial: {result.status.value}: {result.error}")
    return {
        "wall_s": wall,
        "evaluations": len(result.history),
        "generated": sum("exact_match" in h for h in result.history),
        "metrics": result.metrics,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    """The results file: one row per arm."""
    lines = [
        f"# Rung evaluations of an SFT trial: `{meta['model']}`, `arithmetic`",
        "",
        f"One LoRA trial (rank 8 on q, v; {meta['steps']} steps, batch 8), the objective "
        f"`exact_match` ({meta['generate_examples']} answers of up to {meta['max_new_tokens']} "
        f"tokens generated at an evaluation that measures it), {meta['eval_examples']} rows for "
        f"the loss; evaluations at the rungs {meta['rung_steps']} and every "
        f"{meta['eval_every']} steps. Median of {meta['reps']} interleaved runs on "
        f"{meta['device']}.",
        "",
        "| arm | evaluations | of them generating | wall s per trial | vs the default | "
        "final exact_match | final eval_loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['evaluations']} | {r['generated']} | {r['wall_s']:.1f} | "
            f"{r['ratio']:.2f}x | {r['exact_match']:.3f} | {r['eval_loss']:.4f} |"
        )
    lines += ["", meta["verdict"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run both arms interleaved and write the medians."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.rung_eval_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-examples", type=int, default=200)
    parser.add_argument("--generate-examples", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--name", default=None, help="default: rung_eval_cost_<device>")
    args = parser.parse_args()

    cache = Path(tempfile.gettempdir()) / "autopeft-bench-cache"
    arms = {}
    for name, metric in ARMS.items():
        config = autopeft.study_from_dict(study_dict(args, metric))
        study = autopeft.Study(config, root=tempfile.mkdtemp())
        ctx = autopeft.TrialContext.create(config, cache_dir=cache)
        arms[name] = (study, ctx, study.space.sample(autopeft.RandomSuggest(0)))
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for _ in range(args.reps):
        for name, (study, ctx, candidate) in arms.items():
            runs[name].append(run_arm(study, ctx, candidate))
            print(f"{name}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
    base = statistics.median(r["wall_s"] for r in runs[next(iter(ARMS))])
    rows = []
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        rows.append(
            {
                "arm": name,
                "wall_s": wall,
                "ratio": wall / base,
                "evaluations": rs[0]["evaluations"],
                "generated": rs[0]["generated"],
                "exact_match": rs[0]["metrics"]["exact_match"],
                "eval_loss": rs[0]["metrics"]["eval_loss"],
                "runs_wall_s": [r["wall_s"] for r in rs],
            }
        )
    same = all(r["exact_match"] == rows[0]["exact_match"] for r in rows) and all(
        abs(r["eval_loss"] - rows[0]["eval_loss"]) < 1e-6 for r in rows
    )
    study, ctx, _ = next(iter(arms.values()))
    training = study.config.training
    meta = {
        **provenance(),
        "model": args.model,
        "device": str(ctx.device),
        "steps": training.steps,
        "eval_every": args.eval_every,
        "eval_examples": args.eval_examples,
        "generate_examples": args.generate_examples,
        "max_new_tokens": args.max_new_tokens,
        "rung_steps": rung_steps(training.steps, training.rungs),
        "reps": args.reps,
        "same_final_metrics": same,
        "verdict": (
            f"Ranking the rungs by the loss takes {rows[1]['ratio']:.2f}x the default's wall "
            f"time per trial; the final metrics are "
            f"{'the same' if same else 'NOT the same'} in both arms."
        ),
    }
    name = args.name or f"rung_eval_cost_{ctx.device.type}"
    write_results(args.out / name, {"meta": meta, "rows": rows}, markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()

"""Real low-fidelity trials on random candidates: the data the search-quality surrogate fits.

Candidates are drawn at random (``autopeft.RandomSuggest``, seeded per draw) from
``search_spaces/bench.yaml`` and trained for real with ``autopeft.run_trial`` on the bundled
``minilm``
model and ``rotten_tomatoes`` (max length 48, batch 16, lr 5e-3, 40 steps), evaluated at steps
14, 27 and 40 so each trial's learning curve is recorded. Each result is appended as one JSON
line (the ``TrialResult`` plus the sampled parameters), so the script can be interrupted and
resumed: it skips the draws already in the file.

    OMP_NUM_THREADS=2 python -m bench.collect_real_trials --n 80

Results: bench/results/real_trials_minilm.jsonl (one trial per line). At 40 steps most
trials are still at the majority-class floor at the first rungs. A longer fidelity, where
learning starts before the first halving rung (the same draws, 160 steps at lr 2e-3 evaluated
at 20, 40, 80 and 160; at lr 5e-3 most large candidates never left the floor in 160 steps):

    OMP_NUM_THREADS=2 python -m bench.collect_real_trials --n 64 --steps 160 --lr 2e-3 \
        --evals 20,40,80,160 --out bench/results/real_trials_minilm_160.jsonl

A longer one still, where nearly every trial learns (53 of the 56 collected) and the final
accuracy rises with the candidate's size (640 steps at lr 1e-3, scored on 1,000 validation
examples at 40, 80, 160, 320 and 640; 6-8 min a trial on one core, so two one-thread shards at
once; the file holds draws 0-55, this command adds 56-63):

    for k in 0 1; do OMP_NUM_THREADS=1 python -m bench.collect_real_trials --n 64 \
        --steps 640 --lr 1e-3 --evals 40,80,160,320,640 --eval-examples 1000 --shard $k/2 \
        --out bench/results/real_trials_minilm_640.jsonl & done
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import autopeft
from bench.common import (
    CACHE,
    RESULTS,
    SPACE,
    STEPS,
    bench_study,
    provenance,
    real_trials,
    rung_steps,
)

OUT = RESULTS / "real_trials_minilm.jsonl"


def _shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N), with 0 <= K < N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/2, but got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"0 <= K < N must hold, but got {text!r}")
    return k, n


def _task(text: str) -> dict:
    """``--task``: a JSON object (the study file's ``task`` section)."""
    try:
        task = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object, but got {text!r} ({err})"
        ) from None
    if not isinstance(task, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, but got {text!r}")
    return task


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.collect_real_trials", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--n", type=int, default=80, help="trials wanted in the file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--space", type=Path, default=SPACE, help="search space to draw from (default bench.yaml)"
    )
    parser.add_argument("--steps", type=int, default=STEPS, help="full fidelity in steps")
    parser.add_argument("--lr", type=float, default=5e-3, help="peak learning rate")
    parser.add_argument(
        "--evals",
        type=lambda text: [int(v) for v in text.split(",")],
        default=None,
        help="comma-separated evaluation steps (default: the rungs, 14,27,40 for 40 steps)",
    )
    parser.add_argument(
        "--eval-examples", type=int, default=300, help="validation examples per evaluation"
    )
    parser.add_argument(
        "--task",
        type=_task,
        default=None,
        help="the study's task section as JSON (default: rotten_tomatoes at max length 48), "
        'e.g. \'{"path": "/tmp/rt_order.jsonl", "max_length": 48}\'',
    )
    parser.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        help="K/N: collect only the draws i with i %% N == K, so N processes (one thread "
        "each) share the cores and append to the same file",
    )
    args = parser.parse_args()

    rungs = [e / args.steps for e in args.evals] if args.evals else None
    config = bench_study(
        steps=args.steps,
        rungs=rungs,
        lr=args.lr,
        eval_examples=args.eval_examples,
        space=args.space,
        **({"task": args.task} if args.task else {}),
    )
    space = autopeft.resolve(config.search_space, config.model)
    if not args.out.exists():  # a new file starts with its provenance
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # The task goes in too: the benchmarks that read the file name it.
        meta = provenance() | {"task": config.task.model_dump(exclude_defaults=True)}
        args.out.write_text(json.dumps({"meta": meta}, separators=(",", ":")) + "\n")
    done = {r["draw"] for r in real_trials(args.out)}
    shard, shards = args.shard
    wanted = {i for i in range(args.n) if i % shards == shard}
    print(
        f"{len(done)} trials in {args.out}; "
        f"collecting {len(wanted - done)} draws of 0..{args.n - 1}"
    )
    if done >= wanted:
        return
    started = time.perf_counter()
    context = autopeft.TrialContext.create(config, cache_dir=CACHE)
    print(f"context loaded in {time.perf_counter() - started:.1f} s")
    evals = set(rung_steps(config.training.steps, config.training.rungs))
    for i in range(args.n):
        # One generator per draw, seeded by (seed, index): draw i is the same on a resume.
        # Draw i of seed s: its own stream, so a resumed collection continues the sequence.
        suggest = autopeft.RandomSuggest(seed=args.seed * 100_003 + i)
        candidate = space.sample(suggest)
        if i in done or i not in wanted:
            continue
        result = autopeft.run_trial(context, candidate, eval_at=evals)
        record = json.loads(result.model_dump_json())
        record["params"] = suggest.params
        record["draw"] = i
        # One write of one line: appends from several shards stay whole lines.
        with args.out.open("a") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
        acc = result.metrics.get("accuracy")
        print(
            f"#{i:3d} {result.status.value:10s} acc {acc if acc is None else round(acc, 4)!s:6s} "
            f"params {result.trainable_params:>9,} {result.wall_time_s:5.1f} s  "
            f"{candidate.describe()}",
            flush=True,
        )
    total = time.perf_counter() - started
    print(f"done: {len(wanted - done)} trials in {total / 60:.1f} min")


if __name__ == "__main__":
    main()

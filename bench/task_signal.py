"""Signal and noise of a benchmark task: how far a space's candidates differ, against seeds.

A search can only show gains on a task where the candidates of its space end clearly apart;
on the bundled MiniLM / Rotten Tomatoes landscape those that learn end within the noise of
each other (bench/results/halving_ceiling_640.md). For one task this trains ``--k``
candidates drawn at random from a space (draw i is ``autopeft.RandomSuggest(seed=i)``, the
draws of ``bench/collect_real_trials.py``), one seed each, plus ``--seeds`` training seeds of
the draws named by ``--replicate`` (seed 0 is the candidate run), all with
``autopeft.run_trial`` on one split, scored on ``--eval-examples`` validation rows at each
step of ``--evals``. It reports, at every evaluation step (the rung curve, to judge halving
later): the spread of the metric across candidates (std, range, IQR), the pooled standard
deviation across seeds of one candidate, their ratio (the signal-to-noise ratio), the
binomial standard error of the metric on that many examples, and the rank correlation of each
step with the final metric.

A training seed here changes the adapters' initialisation and the batch order; the split,
the classifier head's initialisation (part of the base loaded once) and the evaluated rows
stay those of seed 0, so the seed spread is training noise on a fixed evaluation set.

Tasks (``--task``): ``rotten_tomatoes`` (the reference), ``rt_order`` (generated from the
Rotten Tomatoes snippets by bench/signal_tasks.py: which of three word orders a snippet is
written in), both on ``minilm`` with search_spaces/bench.yaml; ``arithmetic`` (the built-in
causal-LM word problems) on ``smollm2`` with LoRA (ranks 2-32, two target sets) or IA3 on a
searched layer mask, scored by exact match of greedy answers. Trials are appended to a file
under studies/.bench-cache/task_signal/ as they finish, so a run resumes.

    OMP_NUM_THREADS=1 python -m bench.task_signal --task rt_order --k 6 --seeds 3 \
        --replicate 0,1

Results: bench/results/task_signal_<task>.md and .json; ``--summary`` gathers the SNR of
every task's file into bench/results/task_signal_summary.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, RESULTS, ROOT, SPACE, provenance, real_trials, write_results
from bench.signal_stats import spread, summarize

RECORDS = CACHE / "task_signal"
#: The decoder space: LoRA (rank, two target sets) or IA3, on a searched layer mask.
DECODER_SPACE: dict[str, Any] = {
    "modules": {
        "lora": {"rank": [2, 8, 32], "targets": {"choice": [["q", "v"], ["all"]]}},
        "ia3": {},
    },
    "layers": "search",
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """One task's protocol: model, task section, space and training recipe."""

    model: str
    task: dict[str, Any]
    space: Any
    steps: int
    batch_size: int
    lr: float
    evals: tuple[int, ...]
    eval_examples: int
    metric: str
    objectives: str | None = None


MINILM = dict(model="minilm", space=str(SPACE), steps=160, batch_size=16, lr=2e-3)
PRESETS: dict[str, Preset] = {
    # The 160-step recipe of bench/results/real_trials_minilm_160.jsonl, scored on 1,000 rows.
    "rotten_tomatoes": Preset(
        **MINILM,  # type: ignore[arg-type]
        task={"name": "rotten_tomatoes", "max_length": 48},
        evals=(20, 40, 80, 160),
        eval_examples=1000,
        metric="accuracy",
    ),
    "rt_order": Preset(
        **MINILM,  # type: ignore[arg-type]
        task={"name": "rt_order", "max_length": 48},  # path filled in when written
        evals=(20, 40, 80, 160),
        eval_examples=1000,
        metric="accuracy",
    ),
    "arithmetic": Preset(
        model="smollm2",
        task={
            "kind": "causal_lm",
            "name": "arithmetic",
            "max_length": 96,
            "max_new_tokens": 6,
            "generate_examples": 200,
        },
        space=DECODER_SPACE,
        steps=30,
        batch_size=8,
        lr=2e-3,
        evals=(15, 30),
        eval_examples=200,
        metric="exact_match",
        objectives="exact_match, -trainable_params, -peak_memory",
    ),
}


def landscape_spread(path: Path, metric: str = "accuracy") -> list[dict]:
    """Spread across the COMPLETE trials of a ``collect_real_trials`` file, at each step."""
    done = [r for r in real_trials(path) if r["status"] == "COMPLETE"]
    steps = sorted({int(h["step"]) for r in done for h in r["history"]})
    rows = []
    for step in steps:
        values = [h[metric] for r in done for h in r["history"] if int(h["step"]) == step]
        rows.append({"file": path.name, "step": step, **spread(values)})
    return rows


# ---- running the trials ----


def study_config(preset: Preset, task_path: Path | None) -> Any:
    """The ``StudyConfig`` of ``preset`` (evaluation only at the steps of ``evals``)."""
    import autopeft

    task = dict(preset.task) | ({"path": str(task_path)} if task_path else {})
    raw: dict[str, Any] = {
        "name": f"signal-{preset.task['name']}",
        "model": preset.model,
        "task": task,
        "training": {
            "steps": preset.steps,
            "batch_size": preset.batch_size,
            "lr": preset.lr,
            "eval_every": preset.steps,
            "eval_examples": preset.eval_examples,
            "rungs": [e / preset.steps for e in preset.evals],
        },
        "search_space": preset.space,
    }
    if preset.objectives:
        raw["objectives"] = preset.objectives
    return autopeft.study_from_dict(raw)


def with_seed(ctx: Any, seed: int) -> Any:
    """``ctx`` training under ``seed`` (same split, base model and evaluation rows)."""
    training = ctx.config.training.model_copy(update={"seed": seed})
    return dataclasses.replace(ctx, config=ctx.config.model_copy(update={"training": training}))


def read_records(path: Path) -> list[dict]:
    """The trials already in ``path`` (one JSON object a line)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(args: argparse.Namespace, preset: Preset, path: Path) -> list[dict]:
    """Train the missing (draw, seed) trials, appending each to ``path``; all records."""
    import autopeft

    task_path = None
    if args.task == "rt_order":
        from bench.signal_tasks import write_rt_order

        task_path = write_rt_order(RECORDS)
    config = study_config(preset, task_path)
    space = autopeft.resolve(config.search_space, config.model)
    wanted = [(i, 0) for i in range(args.k)]
    wanted += [(i, s) for i in args.replicate for s in range(1, args.seeds)]
    records = read_records(path)
    done = {(r["draw"], r["seed"]) for r in records}
    todo = [w for w in wanted if w not in done]
    print(f"{len(done)} trials in {path}; {len(todo)} to train", flush=True)
    if not todo:
        return records
    started = time.perf_counter()
    ctx = autopeft.TrialContext.create(config, cache_dir=CACHE)
    print(f"context loaded in {time.perf_counter() - started:.1f} s", flush=True)
    for draw, seed in todo:
        suggest = autopeft.RandomSuggest(seed=draw)  # draw i of collect_real_trials, seed 0
        candidate = space.sample(suggest)
        result = autopeft.run_trial(with_seed(ctx, seed), candidate, eval_at=set(preset.evals))
        record = {
            "draw": draw,
            "seed": seed,
            "candidate": candidate.describe(),
            "params": suggest.params,
            "status": result.status.value,
            "error": result.error,
            "trainable_params": result.trainable_params,
            "wall_time_s": result.wall_time_s,
            "metrics": result.metrics,
            "history": [dict(h) for h in result.history],
        }
        with path.open("a") as f:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
        records.append(record)
        value = result.metrics.get(preset.metric)
        print(
            f"draw {draw:2d} seed {seed} {result.status.value:9s} {preset.metric} "
            f"{value if value is None else round(value, 4)!s:6s} "
            f"{result.wall_time_s:6.1f} s  {candidate.describe()}",
            flush=True,
        )
    return records


# ---- results ----


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table, or an em dash for None or nan."""
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def space_label(preset: Preset) -> str:
    """The preset's space: its file relative to the repository, or the inline YAML as JSON."""
    if isinstance(preset.space, str):
        return preset.space.removeprefix(f"{ROOT}/")
    return json.dumps(preset.space)


def markdown(task: str, preset: Preset, records: list[dict], rows: list[dict], meta: dict) -> str:
    """The results page of one task."""
    metric, evals = preset.metric, preset.evals
    step_cols = " | ".join(f"step {e}" for e in evals)
    space = space_label(preset)
    lines = [
        f"# Signal and noise of `{task}`",
        "",
        f"Model `{preset.model}`, task `{json.dumps(preset.task)}`, space `{space}`; "
        f"{preset.steps} steps at batch {preset.batch_size}, lr {preset.lr:g} (linear decay), "
        f"{metric} on {preset.eval_examples} validation rows at steps "
        f"{', '.join(map(str, evals))}. {meta['k']} candidates (random draws 0..{meta['k'] - 1}, "
        f"seed 0) and training seeds 0..{meta['seeds'] - 1} of draws "
        f"{', '.join(map(str, meta['replicate'])) or 'none'} (a seed changes the adapters' "
        "initialisation and the batch order; split, head initialisation and evaluated rows "
        f"are fixed). {meta['train_minutes']:.1f} min of training in all (one thread); "
        f"the trials are kept in `{meta['records']}`, {meta['trained_now']} of them trained "
        "by this run (the others by an earlier run of the same command).",
        "",
        "## Signal-to-noise by evaluation step",
        "",
        "| step | candidates: mean | std | range | IQR | seeds: pooled std (df) | "
        "**SNR** (std / seed std) | IQR / seed std | binomial SE | Spearman with final |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {fmt(r['mean'])} | {fmt(r['std'])} | {fmt(r['range'])} | "
            f"{fmt(r['iqr'])} | {fmt(r['seed_std'])} ({r['seed_df']}) | **{fmt(r['snr'], 1)}** | "
            f"{fmt(r['snr_iqr'], 1)} | {fmt(r['eval_se'])} | {fmt(r['spearman_final'], 2)} |"
        )
    lines += ["", "## Trials", "", f"| draw | seed | trainable | {step_cols} | s | candidate |"]
    lines.append("|---|---|---|" + "---|" * len(evals) + "---|---|")
    for r in sorted(records, key=lambda r: (r["draw"], r["seed"])):
        curve = {int(h["step"]): h.get(metric) for h in r["history"]}
        cells = " | ".join(fmt(curve.get(e)) for e in evals)
        if r["status"] != "COMPLETE":
            cells = f"{r['status']}: {str(r['error'])[:60]}" + " |" * (len(evals) - 1)
        lines.append(
            f"| {r['draw']} | {r['seed']} | {r['trainable_params']:,} | {cells} | "
            f"{r['wall_time_s']:.0f} | {r['candidate']} |"
        )
    if meta.get("landscape"):
        seed_std = rows[-1]["seed_std"]
        lines += [
            "",
            "## Candidate spread in earlier landscapes (one seed each, other protocols)",
            "",
            "Each collect_real_trials file's own recipe (steps, lr, evaluated rows: its first "
            "line); the last column divides by this run's final seed std.",
            "",
            "| file | step | candidates | mean | std | IQR | std / seed std | IQR / seed std |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in meta["landscape"]:
            lines.append(
                f"| {r['file']} | {r['step']} | {r['n']} | {fmt(r['mean'])} | {fmt(r['std'])} | "
                f"{fmt(r['iqr'])} | {fmt(r['std'] / seed_std, 1)} | "
                f"{fmt(r['iqr'] / seed_std, 1)} |"
            )
    final = rows[-1]
    by_draw = final.get("seed_std_by_draw", {})
    lines += [
        "",
        "Seed std at the final step, per replicated draw: "
        + (", ".join(f"draw {d}: {fmt(v)}" for d, v in by_draw.items()) or "none")
        + ".",
        "",
        f"At the final step the candidates' {metric} spread (std {fmt(final['std'])}, IQR "
        f"{fmt(final['iqr'])}) is **{fmt(final['snr'], 1)}x** the seed spread "
        f"({fmt(final['seed_std'])}, {final['seed_df']} degrees of freedom; binomial SE of "
        f"one evaluation {fmt(final['eval_se'])}).",
    ]
    return "\n".join(lines) + "\n"


def write_summary(out: Path) -> str:
    """task_signal_summary.md: the final-step SNR of every task_signal_<task>.json in ``out``."""
    lines = [
        "# Signal-to-noise of the benchmark tasks",
        "",
        "Final-step figures of each `task_signal_<task>.json` (see its .md for the rung curve).",
        "",
        "| results | task | model | lr | metric | eval rows | candidates: mean | std | IQR | "
        "seed std (df) | **SNR** | IQR / seed std | binomial SE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    data = {}
    for path in sorted(out.glob("task_signal_*.json")):
        if path.stem == "task_signal_summary":
            continue
        d = json.loads(path.read_text())
        r, p = d["signal"][-1], d["preset"]
        data[path.stem] = r
        lines.append(
            f"| `{path.stem}` | `{d['task']}` | `{p['model']}` | {p['lr']:g} | {p['metric']} | "
            f"{p['eval_examples']} | "
            f"{fmt(r['mean'])} | {fmt(r['std'])} | {fmt(r['iqr'])} | {fmt(r['seed_std'])} "
            f"({r['seed_df']}) | **{fmt(r['snr'], 1)}** | {fmt(r['snr_iqr'], 1)} | "
            f"{fmt(r['eval_se'])} |"
        )
    text = "\n".join(lines) + "\n"
    write_results(out / "task_signal_summary", {"meta": provenance(), "final": data}, text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.task_signal", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--task", choices=sorted(PRESETS))
    parser.add_argument("--k", type=int, default=6, help="candidates (random draws 0..K-1)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each replicated draw")
    parser.add_argument(
        "--replicate",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[0, 1],
        help="comma-separated draws trained under every seed (default 0,1)",
    )
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--evals", help="override the preset's evaluation steps (a,b,c)")
    parser.add_argument("--eval-examples", type=int, help="override the preset's rows")
    parser.add_argument("--lr", type=float, help="override the preset's peak learning rate")
    parser.add_argument("--name", help="results file stem (default task_signal_<task>)")
    parser.add_argument(
        "--landscape",
        type=Path,
        action="append",
        default=[],
        help="a collect_real_trials file whose candidate spread to set beside this run's "
        "seed spread (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--summary", action="store_true", help="only gather task_signal_summary.md")
    args = parser.parse_args()
    if args.summary:
        print(write_summary(args.out))
        return
    if args.task is None:
        parser.error("--task is required (or --summary)")
    preset = PRESETS[args.task]
    if args.steps or args.evals or args.eval_examples:
        evals = tuple(int(v) for v in args.evals.split(",")) if args.evals else preset.evals
        preset = dataclasses.replace(
            preset,
            steps=args.steps or evals[-1],
            evals=evals,
            eval_examples=args.eval_examples or preset.eval_examples,
        )
        if preset.evals[-1] != preset.steps:
            parser.error("the last evaluation step must be --steps")
    if args.lr:
        preset = dataclasses.replace(preset, lr=args.lr)
    if args.seeds > 1 and not args.replicate:
        parser.error("--seeds > 1 needs --replicate")
    if any(d >= args.k for d in args.replicate):
        parser.error(f"--replicate names draws below --k ({args.k})")
    # One records file per protocol: a changed recipe never mixes with an old one.
    tag = f"{args.task}-{preset.steps}-{'-'.join(map(str, preset.evals))}-{preset.eval_examples}"
    tag += f"-lr{preset.lr:g}" if preset.lr != PRESETS[args.task].lr else ""
    path = RECORDS / f"{tag}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    before = len(read_records(path))
    records = collect(args, preset, path)
    trained_now = len(records) - before
    wanted = set(range(args.k)) | set(args.replicate)
    records = [r for r in records if r["draw"] in wanted and r["seed"] < args.seeds]
    rows = summarize(records, preset.metric, preset.evals, preset.eval_examples)
    meta = {
        **provenance(),
        "k": args.k,
        "seeds": args.seeds,
        "replicate": args.replicate,
        "minutes": (time.perf_counter() - started) / 60,
        "train_minutes": sum(r["wall_time_s"] for r in records) / 60,
        "landscape": [row for p in args.landscape for row in landscape_spread(p)],
        "records": str(path.relative_to(ROOT)),
        "trained_now": trained_now,
    }
    data = {
        "meta": meta,
        "task": args.task,
        "preset": dataclasses.asdict(preset) | {"space": space_label(preset)},
        "signal": rows,
        "trials": records,
    }
    text = markdown(args.task, preset, records, rows, meta)
    write_results(args.out / (args.name or f"task_signal_{args.task}"), data, text)
    print(text)


if __name__ == "__main__":
    main()

"""Memory levers side by side: predicted and measured peak, training speed and first losses.

One LoRA candidate (rank 8 on q, v in every layer) trained for a few steps per row, each row
one setting of the memory levers (``docs/levers.md``) on four models: two decoders
(SmolLM2-135M on the offline ``arithmetic`` instruction task; ``llama-small``, SmolLM2's
shape with 8 layers, random weights) and two encoders (MiniLM and ``bert-base`` on
rotten_tomatoes). Every row runs the path a study's trial takes (``autopeft.run_trial``), so the
prediction is the one the budget prunes with, and the measurement is the one a study records:
on CPU the deterministic step estimate (profiler allocation peak of the heaviest micro batch,
plus AdamW's state; an *estimate*, not an allocator peak), on a GPU the CUDA allocator's peak
over the trial.

    OMP_NUM_THREADS=1 python -m bench.memory_levers [--device cuda]
        [--models smollm2,llama-small,minilm,bert-base] [--rows baseline,nf4] [--steps 3]
        [--name STEM] [--fit]
    python -m bench.memory_levers --repredict bench/results/memory_levers_gpu.json [--fit]
        [--also bench/results/memory_model_h200_fit.json ...]

Each row keeps what a fit reads (``autopeft.MemoryRow``: the prediction's static part, the
activation width and the elements each coefficient multiplies), so ``--repredict FILE``
predicts a results file's rows again with the current coefficients without a model or a
device, in place. ``--fit`` (after measuring, or with ``--repredict``) fits the activation
coefficients per device and family (``autopeft.fit_activation_coeffs``: non-negative,
relative error, a causal LM's logits and checkpointed block inputs among the terms) and
prints them as ``ACTIVATION_COEFFS`` entries with each group's errors before and after;
``--also FILES`` adds the rows of other memory_levers or memory_model results files to that
fit. Rows that need bitsandbytes are skipped with the reason when it is missing.
Results: bench/results/memory_levers_<cpu|gpu>.json and .md (or ``--name``'s stem), with
date, machine, git commit and command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import autopeft
from autopeft import Candidate, ModuleConfig
from bench.common import RESULTS, model_path, provenance, write_results
from bench.memory_model import fit_fields, fit_report

#: Per model: the task, batch size and length (training rows are that long at most).
MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "smollm2": ({"kind": "causal_lm", "name": "arithmetic", "max_length": 96}, 8),
    "llama-small": ({"kind": "causal_lm", "name": "arithmetic", "max_length": 96}, 8),
    # SmolLM2's shape with random weights: where its GGUF package is absent (the GPU machine).
    "smollm2-random": ({"kind": "causal_lm", "name": "arithmetic", "max_length": 96}, 8),
    "minilm": ({"name": "rotten_tomatoes", "max_length": 128}, 16),
    "bert-base": ({"name": "rotten_tomatoes", "max_length": 128}, 16),
}
#: Each row's levers (the study's ``training`` section); ``max_length`` as a share of the
#: task's and ``micro_batch_size`` as a share of the batch.
ROWS: dict[str, dict] = {
    "baseline": {},
    "bf16": {"dtype": "bf16"},
    "fp16": {"dtype": "fp16"},
    "checkpointing": {"gradient_checkpointing": True},
    "micro batch /4": {"micro_batch_size": 0.25},
    "max_length /2": {"max_length": 0.5},
    "nf4": {"quantization": "nf4"},
    "nf4-dq": {"quantization": "nf4-dq"},
    "fp4": {"quantization": "fp4"},
    "int8": {"quantization": "int8"},
    "nf4 bf16 + checkpointing + micro /4": {
        "quantization": "nf4",
        "dtype": "bf16",
        "gradient_checkpointing": True,
        "micro_batch_size": 0.25,
    },
}


def lora(layers: int) -> Candidate:
    """LoRA r8 on q, v in each of ``layers`` layers."""
    params: dict[str, Any] = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "use_dora": False}
    return Candidate(
        modules=(
            ModuleConfig(
                method="lora", params=params, layers=tuple(range(layers)), targets=("q", "v")
            ),
        )
    )


def training_of(row: dict, batch: int, max_length: int, steps: int) -> dict:
    """The study's training section for one row (shares resolved to sizes)."""
    out = {k: v for k, v in row.items() if k not in ("micro_batch_size", "max_length")}
    if "micro_batch_size" in row:
        out["micro_batch_size"] = max(1, int(batch * row["micro_batch_size"]))
    if "max_length" in row:
        out["max_length"] = int(max_length * row["max_length"])
    # Every step evaluated on a few rows: the history holds each step's training loss.
    return {"steps": steps, "batch_size": batch, "eval_every": 1, "eval_examples": 8, **out}


def needs_bnb(row: dict) -> bool:
    """Whether a row quantises the base (bitsandbytes)."""
    return row.get("quantization", "none") != "none"


def levers_of(training: dict, task_max_length: int) -> dict[str, Any]:
    """The levers a row's trial trains with, resolved (its training section over defaults)."""
    return {
        "batch_size": training["batch_size"],
        "micro_batch_size": training.get("micro_batch_size", training["batch_size"]),
        "max_length": training.get("max_length", task_max_length),
        "gradient_checkpointing": training.get("gradient_checkpointing", False),
        "dtype": training.get("dtype", "fp32"),
        "quantization": training.get("quantization", "none"),
    }


def measure(model: str, name: str, row: dict, device: str | None, steps: int) -> dict:
    """One row: a short trial with the row's levers; predicted and measured peak."""
    task, batch = MODELS[model]
    training = training_of(row, batch, task["max_length"], steps)
    study = autopeft.study_from_dict(
        {
            "name": "levers",
            "model": model_path(model),
            "task": task,
            "search_space": {"modules": {"lora": {}}},
            "training": training,
        }
    )
    cache = Path(tempfile.gettempdir()) / "autopeft-bench-cache"
    ctx = autopeft.TrialContext.create(study, cache_dir=cache, device=device)
    cand = lora(ctx.profile.num_layers)
    levers = levers_of(training, task["max_length"])
    res = autopeft.run_trial(ctx, cand)
    if res.error:
        raise RuntimeError(f"{model} {name}: {res.error}")
    seq = int(ctx.train_split(levers["max_length"]).lengths.max())
    measured, predicted = res.peak_memory_mb, res.predicted_memory_mb
    if measured is None or predicted is None:
        raise RuntimeError(f"{model} {name}: the trial recorded no peak ({res.status.value})")
    # ctx.device: a GPU's own cuBLAS workspaces, as the trial's prediction counts them.
    split = autopeft.memory_row(
        ctx.profile, cand, levers["micro_batch_size"], seq, round(measured, 1), ctx.device, levers
    )
    off = autopeft.repredict_memory([split])[0] - predicted
    if abs(off) > 0.05:  # the fit would read other terms than the trial predicted with
        print(
            f"{model} {name}: the row's split is {off:+.2f} MiB off its prediction", file=sys.stderr
        )
    out = {
        "model": model,
        "row": name,
        "family": ctx.profile.family,
        "device": ctx.device.type,
        "levers": levers,
        "seq": seq,
        "trainable": res.trainable_params,
        "measured_mb": round(measured, 1),
        "predicted_mb": round(predicted, 1),
        "error_pct": round(100 * (predicted - measured) / measured, 1),
        "tokens_per_s": round(res.tokens_per_s or 0.0, 1),
        "losses": [round(h["train_loss"], 4) for h in res.history],
        **fit_fields(split),
    }
    if abs(off) > 0.05:
        out["split_off_mb"] = round(off, 2)
    if "truncated_share" in res.metrics:
        out["truncated_share"] = round(res.metrics["truncated_share"], 3)
    if ctx.device.type == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name(ctx.device)
    return out


def header(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    """The title, what was measured and the table's head."""
    gpu = ctx_gpu(rows)
    if rows and rows[0]["device"] == "cuda":
        kind = f"CUDA allocator peak over the trial ({gpu})"
    else:
        kind = (
            "CPU estimate: profiler allocation peak of one forward/backward of the heaviest "
            "micro batch + model + AdamW state (an estimate of a GPU's peak, not a measurement "
            "of one; CPU compute is fp32 or CPU autocast, attention unfused)"
        )
    return [
        "# Memory levers: predicted vs measured peak, training speed, first losses",
        "",
        f"- measured: {kind}",
        f"- candidate: LoRA r8 on q, v in every layer, {args.steps} steps; training tokens/s "
        "exclude evaluation; losses are the training loss of each step",
        "",
        "| model | levers | micro x seq | measured MiB | predicted MiB | error | tokens/s | losses "
        "| truncated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


def ctx_gpu(rows: list[dict]) -> str:
    """The GPU the rows were measured on ('' on CPU)."""
    return rows[0].get("gpu", "") if rows else ""


def why(row: dict) -> str:
    """What is known of a row the prediction misses by more than 10%."""
    if row["levers"]["quantization"] == "int8" and row["device"] == "cpu":
        return (
            "bitsandbytes' CPU int8 path allocates more than the one dequantised weight the "
            "model counts (its peak is above the fp32 base's on BERT-base); a GPU row decides "
            "whether int8 needs a term of its own"
        )
    return "not explained yet"


def write(
    rows: list[dict], skipped: list[str], args: argparse.Namespace, meta: dict | None = None
) -> None:
    """The rows as JSON and the table (with the misses and the skipped rows) as Markdown.

    ``meta``: the provenance to keep (a re-prediction keeps the measurement's); None: this
    run's.
    """
    stem = args.name or f"memory_levers_{'gpu' if rows and rows[0]['device'] == 'cuda' else 'cpu'}"
    lines = header(args, rows)
    again = (meta or {}).get("repredicted")
    if again:
        lines.insert(
            2,
            f"- predicted again {again['date']} at git commit `{again['git_commit']}` "
            f"(`{again['command']}`) from each row's stored split",
        )
    for r in rows:
        losses = ", ".join(f"{v:.3f}" for v in r["losses"])
        trunc = f"{100 * r['truncated_share']:.1f}%" if "truncated_share" in r else ""
        lines.append(
            f"| {r['model']} | {r['row']} | {r['levers']['micro_batch_size']}x{r['seq']} "
            f"| {r['measured_mb']:,} | {r['predicted_mb']:,} | {r['error_pct']:+}% "
            f"| {r['tokens_per_s']:,} | {losses} | {trunc} |"
        )
    if rows:
        errors = [abs(r["error_pct"]) for r in rows]
        lines.append(
            f"\nrows: {len(rows)}; within 10%: {sum(e <= 10 for e in errors)}; median |error| "
            f"{statistics.median(errors):.1f}%; worst {max(errors)}%"
        )
    lines += [
        f"- {r['model']} {r['row']} misses: {why(r)}" for r in rows if abs(r["error_pct"]) > 10
    ]
    lines += [f"- skipped: {s}" for s in skipped]
    meta = meta or provenance(ctx_gpu(rows) or None) | {"skipped": skipped}
    write_results(args.out / stem, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 2 :]))


def results_rows(ap: argparse.ArgumentParser, path: Path, option: str) -> tuple[dict, list[dict]]:
    """The meta and rows of a results file, or a clear error naming the rule."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        ap.error(f"{option}: cannot read {str(path)!r} as JSON ({err})")
    # Files older than the provenance are a bare list of rows.
    rows = saved.get("rows") if isinstance(saved, dict) else saved
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        ap.error(
            f"{option}: {str(path)!r} must be a results file: a JSON object with `meta` and "
            "a non-empty list `rows`; hint: bench/results/memory_levers_*.json"
        )
    return (saved.get("meta", {}) if isinstance(saved, dict) else {}), rows


def repredict(rows: list[dict]) -> list[dict]:
    """Rows predicted again from their stored split with the current coefficients.

    Raises:
        autopeft.ConfigError: a row lacks the split (measured before rows kept it).
    """
    split = [autopeft.MemoryRow.from_dict(r, f"rows[{i}]") for i, r in enumerate(rows)]
    for r, predicted in zip(rows, autopeft.repredict_memory(split)):
        r["predicted_mb"] = round(predicted, 1)
        r["error_pct"] = round(100 * (r["predicted_mb"] - r["measured_mb"]) / r["measured_mb"], 1)
    return rows


def repredict_file(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--repredict FILE``: its rows predicted again in place; with ``--fit``, a fit."""
    meta, rows = results_rows(ap, args.repredict, "--repredict")
    also = [r for path in args.also for r in results_rows(ap, path, "--also")[1]]
    try:
        rows = repredict(rows)
        report = fit_report(rows + also) if args.fit else ""
    except autopeft.ConfigError as err:
        ap.error(f"--repredict {args.repredict}: {err}")
    args.name, args.out = args.repredict.stem, args.repredict.parent
    # The measurement's provenance stays; the prediction's is this command's.
    write(rows, meta.get("skipped", []), args, meta | {"repredicted": provenance()})
    if report:
        print(report)


def main() -> None:
    """Measure every row of every model named, writing the results after each."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.memory_levers", description=__doc__.splitlines()[0]
    )
    # smollm2-random (SmolLM2's shape, random weights) stands in for smollm2 where its GGUF
    # is not installed (the GPU machine); the same memory, so not run twice by default.
    ap.add_argument("--models", default="smollm2,llama-small,minilm,bert-base")
    ap.add_argument("--rows", default=",".join(ROWS), help="row names, comma-separated")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--name", help="results file stem (default memory_levers_<cpu|gpu>)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--fit",
        action="store_true",
        help="print activation coefficients fitted to the rows (measured or --repredict's)",
    )
    ap.add_argument(
        "--repredict",
        type=Path,
        metavar="FILE",
        help="only: predict a results file's rows again with the current coefficients (in place)",
    )
    ap.add_argument(
        "--also",
        type=Path,
        nargs="*",
        default=[],
        metavar="FILE",
        help="with --repredict --fit: memory_levers or memory_model results fitted together",
    )
    args = ap.parse_args()
    if args.also and not (args.repredict and args.fit):
        ap.error("--also adds rows to the fit of --repredict FILE --fit; give both")
    if args.repredict:
        repredict_file(ap, args)
        return
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    unknown += [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(
            f"unknown row or model {unknown[0]!r}; rows: {', '.join(ROWS)}; models: "
            f"{', '.join(MODELS)}"
        )
    bnb = find_spec("bitsandbytes") is not None
    rows: list[dict] = []
    skipped: list[str] = []
    for model in args.models.split(","):
        for name in args.rows.split(","):
            if needs_bnb(ROWS[name]) and not bnb:
                skipped.append(f"{model} {name}: bitsandbytes is not installed")
                continue
            start = time.perf_counter()
            try:
                rows.append(measure(model, name, ROWS[name], args.device, args.steps))
            except Exception as err:  # a row that cannot run says why; the grid goes on
                skipped.append(f"{model} {name}: {type(err).__name__}: {str(err)[:300]}")
            print(f"{model} {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            write(rows, skipped, args)  # after every row: a run cut short keeps its rows
    write(rows, skipped, args)  # and the skips after the last measured row
    if args.fit and rows:
        print(fit_report(rows))


if __name__ == "__main__":
    main()

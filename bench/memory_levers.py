"""Memory levers side by side: predicted and measured peak, training speed and first losses.

One LoRA candidate (rank 8 on q, v in every layer) trained for a few steps per row, each row
one setting of the memory levers (``autopeft.core.levers``) on four models: two decoders
(SmolLM2-135M on the offline ``arithmetic`` instruction task; ``llama-small``, SmolLM2's
shape with 8 layers, random weights) and two encoders (MiniLM and ``bert-base`` on
rotten_tomatoes). Every row runs the path a study's trial takes (``run_trial``), so the
prediction is the one the budget prunes with, and the measurement is the one a study records:
on CPU the deterministic step estimate (profiler allocation peak of the heaviest micro batch,
plus AdamW's state; an *estimate*, not an allocator peak), on a GPU the CUDA allocator's peak
over the trial.

    OMP_NUM_THREADS=1 .venv/bin/python bench/memory_levers.py [--device cuda]
        [--models smollm2,llama-small,minilm,bert-base] [--rows baseline,nf4] [--steps 3]
        [--name STEM] [--fit]

``--fit`` prints least-squares activation coefficients per family and device (a causal LM's
logits and checkpointed block inputs among them); ``--repredict FILE`` predicts a results
file's rows again from their stored terms with the current coefficients (no model needed).
Rows that need bitsandbytes are skipped with the reason when it is missing.
Results: bench/results/memory_levers_<cpu|gpu>.json and .md (or ``--name``'s stem), with
date, machine, git commit and command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_models import model_path  # noqa: E402
from provenance import commit  # noqa: E402

from autopeft import api
from autopeft.core import memory_model as memmodel
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.levers import Levers
from autopeft.train.measured_memory import cuda_workspace_bytes
from autopeft.train.trial import EMBEDDING_METHODS, TrialContext, run_trial, trial_levers

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]

#: Per model: the task, batch size and length (training rows are that long at most).
MODELS = {
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
    params = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "use_dora": False}
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
    return row.get("quantization", "none") != "none"


def prediction(ctx: TrialContext, cand: Candidate, levers: Levers, seq: int) -> dict:
    """The trial's prediction split into what the coefficients multiply and the rest."""
    embeddings = bool(EMBEDDING_METHODS & set(cand.methods))
    params = api.candidate_trainable_params(cand, ctx.profile)
    pred = memmodel.predict_memory(
        ctx.profile,
        cand,
        params,
        levers.micro_batch_size,
        seq,
        ctx.device.type,
        embeddings,
        cuda_workspace_bytes(ctx.device),
        levers,
    )
    terms = memmodel.activation_terms(
        ctx.profile, cand, levers.micro_batch_size, seq, embeddings, levers.gradient_checkpointing
    )
    autocast = ctx.device.type == "cuda" or levers.dtype != "fp32"
    width = memmodel.ACTIVATION_BYTES["cuda" if ctx.device.type == "cuda" else "cpu-autocast"]
    return {
        "total_mb": pred.total_mb,
        "static_mb": round(pred.static / memmodel.MB, 3),
        "act_bytes": width if autocast else 4,
        "terms": terms._asdict(),
    }


def measure(model: str, name: str, row: dict, device: str | None, steps: int) -> dict:
    """One row: a short trial with the row's levers; predicted and measured peak."""
    task, batch = MODELS[model]
    study = api.study_from_dict(
        {
            "name": "levers",
            "model": model_path(model),
            "task": task,
            "search_space": {"modules": {"lora": {}}},
            "training": training_of(row, batch, task["max_length"], steps),
        }
    )
    ctx = TrialContext.create(study, cache_dir=Path("/tmp/autopeft-bench-cache"), device=device)
    cand = lora(ctx.profile.num_layers)
    levers = trial_levers(ctx, cand)
    res = run_trial(ctx, cand)
    if res.error:
        raise RuntimeError(f"{model} {name}: {res.error}")
    seq = int(ctx.train_split(levers.max_length).lengths.max())
    measured, predicted = res.peak_memory_mb, res.predicted_memory_mb
    assert measured is not None and predicted is not None
    split = prediction(ctx, cand, levers, seq)
    assert abs(split.pop("total_mb") - predicted) < 0.01, "the split is not the trial's prediction"
    out = {
        "model": model,
        "row": name,
        "family": ctx.profile.family,
        "device": ctx.device.type,
        "levers": {k: v for k, v in vars(levers).items()},
        "seq": seq,
        "trainable": res.trainable_params,
        "measured_mb": round(measured, 1),
        "predicted_mb": round(predicted, 1),
        "error_pct": round(100 * (predicted - measured) / measured, 1),
        "tokens_per_s": round(res.tokens_per_s or 0.0, 1),
        "losses": [round(h["train_loss"], 4) for h in res.history],
        **split,
    }
    out["measured_by"] = (
        f"`{' '.join(['OMP_NUM_THREADS=1', '.venv/bin/python', *sys.argv])}`, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}"
    )
    if "truncated_share" in res.metrics:
        out["truncated_share"] = round(res.metrics["truncated_share"], 3)
    if ctx.device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(ctx.device)
    return out


def header(args: argparse.Namespace, rows: list[dict]) -> list[str]:
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
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
        f"{platform.node()} ({platform.machine()}, {torch.get_num_threads()} threads"
        f"{', ' + gpu if gpu else ''}); commit {commit()}",
        f"- command: `{' '.join(['OMP_NUM_THREADS=1', '.venv/bin/python', *sys.argv])}`",
        *([f"- rows measured by: {rows[0]['measured_by']}"] if "measured_by" in rows[0] else []),
        f"- measured: {kind}",
        f"- candidate: LoRA r8 on q, v in every layer, {args.steps} steps; training tokens/s "
        "exclude evaluation; losses are the training loss of each step",
        "",
        "| model | levers | micro x seq | measured MiB | predicted MiB | error | tokens/s | losses "
        "| truncated |",
        "|---|---|---|---|---|---|---|---|---|",
    ]


def ctx_gpu(rows: list[dict]) -> str:
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


def write(rows: list[dict], skipped: list[str], args: argparse.Namespace) -> None:
    stem = args.name or f"memory_levers_{'gpu' if rows and rows[0]['device'] == 'cuda' else 'cpu'}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = header(args, rows)
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
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 2 :]))


#: The coefficients a CPU fit solves for per family (the others keep the model's values).
FIT_TERMS = {
    "bert": ("hidden", "inter", "attention", "inputs", "checkpoints"),
    "llama": ("hidden", "inter", "attention", "inputs", "logits", "checkpoints"),
}


def repredict(rows: list[dict]) -> list[dict]:
    """Rows predicted again from their stored terms with the current coefficients."""
    for r in rows:
        coeffs = memmodel.activation_coeffs(r["family"], r["device"])._asdict()
        act = r["act_bytes"] * sum(coeffs[t] * x for t, x in r["terms"].items()) / memmodel.MB
        r["predicted_mb"] = round(r["static_mb"] + act, 1)
        r["error_pct"] = round(100 * (r["predicted_mb"] - r["measured_mb"]) / r["measured_mb"], 1)
    return rows


def with_width(row: dict) -> dict:
    """A ``memory_model.py`` row with the activation width its device implies."""
    return {"act_bytes": 2 if row["device"] == "cuda" else 4, **row}


def fit(rows: list[dict]) -> None:
    """Least-squares activation coefficients per family and device from the rows."""
    from scipy.optimize import nnls

    for family, device in sorted({(r["family"], r["device"]) for r in rows}):
        mine = [r for r in rows if (r["family"], r["device"]) == (family, device)]
        current = memmodel.activation_coeffs(family, device)._asdict()
        free = [
            t for t in FIT_TERMS.get(family, FIT_TERMS["bert"]) if any(r["terms"][t] for r in mine)
        ]
        fixed = [t for t in current if t not in free]
        xs = [[r["terms"][t] * r["act_bytes"] / memmodel.MB for t in free] for r in mine]
        ys = [
            r["measured_mb"]
            - r["static_mb"]
            - r["act_bytes"] * sum(current[t] * r["terms"][t] for t in fixed) / memmodel.MB
            for r in mine
        ]
        # Non-negative (every term is memory that exists) and relative (each row's error
        # counts alike, small models too): the block terms are collinear within one model,
        # and a plain fit trades them against each other with signs no tensor has.
        weights = [1.0 / r["measured_mb"] for r in mine]
        sol, _ = nnls(
            [[x * w for x in row] for row, w in zip(xs, weights)],
            [y * w for y, w in zip(ys, weights)],
        )
        fitted = {t: round(v, 3) for t, v in zip(free, sol.tolist())}
        print(f"{family} on {device} ({len(mine)} rows): {fitted}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # smollm2-random (SmolLM2's shape, random weights) stands in for smollm2 where its GGUF
    # is not installed (the GPU machine); the same memory, so not run twice by default.
    ap.add_argument("--models", default="smollm2,llama-small,minilm,bert-base")
    ap.add_argument("--rows", default=",".join(ROWS), help="row names, comma-separated")
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--name", help="results file stem (default memory_levers_<cpu|gpu>)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--fit", action="store_true", help="print coefficients fitted to the rows")
    ap.add_argument(
        "--repredict", type=Path, help="only: predict a results file's rows again (in place)"
    )
    ap.add_argument(
        "--also",
        type=Path,
        nargs="*",
        default=[],
        help="with --repredict --fit: memory_model.py results files fitted together",
    )
    args = ap.parse_args()
    if args.repredict:
        rows = repredict(json.loads(args.repredict.read_text()))
        if args.fit:
            fit(rows + [with_width(r) for f in args.also for r in json.loads(f.read_text())])
        args.name, args.out = args.repredict.stem, args.repredict.parent
        write(rows, [], args)
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
    if args.fit:
        fit(rows)


if __name__ == "__main__":
    main()

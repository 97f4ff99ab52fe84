"""Predicted vs measured peak training memory across module types and placements.

On CPU the "measured" figure is autopeft's deterministic step estimate (model + AdamW
state + the profiler's allocation peak over one forward/backward of the longest batch); on a
GPU it is the CUDA allocator's peak over real training steps. `--fit` refits the activation
coefficients of `autopeft.core.memory_model` (per family) by least squares and prints them;
`--repredict FILE` predicts the rows of a committed results file again with the current
model (no device needed), so measurements taken on a lent GPU keep checking the model as it
changes.

    .venv/bin/python bench/memory_model.py [--fit] [--device cuda] [--shapes 16x48,32x128]
        [--models minilm,tiny-llama,bert-base,bert-large] [--name STEM]
    .venv/bin/python bench/memory_model.py --repredict bench/results/memory_model_h200_fit.json

``--shapes`` lists batch x max-length pairs (the longest batch of rotten_tomatoes at that
length is measured); ``bert-base`` and ``bert-large`` are built from config
(``bench_models.py``).

Results: bench/results/memory_model_<cpu|gpu>.json and .md (or ``--name``'s stem).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_models import BERT_SIZES, model_path  # noqa: E402

from autopeft import api
from autopeft.core import memory_model as memmodel
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.train.build import build_adapted
from autopeft.train.measured_memory import MB, cpu_step_peak_mb, cuda_peak, cuda_workspace_bytes
from autopeft.train.trial import EMBEDDING_METHODS, TrialContext

RESULTS = Path(__file__).parent / "results"


def m(method, layers, targets=(), **params):
    return ModuleConfig(method=method, params=params, layers=tuple(layers), targets=tuple(targets))


def candidates(n: int) -> dict[str, Candidate]:
    top, all_ = range(n // 2, n), range(n)
    lora = {"alpha": 16.0, "dropout": 0.0, "use_dora": False}
    return {
        "lora r8 qv all": Candidate(modules=(m("lora", all_, ("q", "v"), rank=8, **lora),)),
        "lora r8 qv top half": Candidate(modules=(m("lora", top, ("q", "v"), rank=8, **lora),)),
        "dora r16 attn+ffn": Candidate(
            modules=(
                m(
                    "lora",
                    all_,
                    ("q", "k", "v", "o", "ffn_up", "ffn_down"),
                    rank=16,
                    alpha=16.0,
                    dropout=0.0,
                    use_dora=True,
                ),
            )
        ),
        "ia3": Candidate(modules=(m("ia3", all_, ("k", "v", "ffn_down")),)),
        "serial adapter 64": Candidate(
            modules=(m("serial_adapter", all_, size=64, activation="relu"),)
        ),
        "parallel adapter 32 top": Candidate(
            modules=(m("parallel_adapter", top, size=32, scale=4.0, activation="relu"),)
        ),
        "prefix 20": Candidate(modules=(m("prefix", all_, length=20),)),
        "bitfit": Candidate(
            modules=(m("bitfit", all_, ("q", "k", "v", "o", "ffn_up", "ffn_down"), norms=True),)
        ),
        "autopeft mix": Candidate(
            modules=(
                m("serial_adapter", top, size=24, activation="relu"),
                m("parallel_adapter", top, size=48, scale=4.0, activation="relu"),
                m("prefix", top, length=12),
            )
        ),
        "lora + parallel + prefix": Candidate(
            modules=(
                m("lora", all_, ("q", "v"), rank=8, **lora),
                m("parallel_adapter", all_, size=16, scale=4.0, activation="relu"),
                m("prefix", all_, length=10),
            )
        ),
        "head only": Candidate(modules=()),
    }


def measure(ctx: TrialContext, cand: Candidate, batch_size: int) -> tuple[float, dict]:
    train = ctx.data["train"]
    longest = train.lengths.argsort(descending=True)[:batch_size]
    batch = train.batch(longest)
    adapted = build_adapted(copy.deepcopy(ctx.base_model), ctx.profile, cand)
    if ctx.device.type == "cpu":
        return cpu_step_peak_mb(adapted, batch), batch
    model = adapted.model.to(ctx.device)
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-4)
    batch_d = {k: v.to(ctx.device) for k, v in batch.items()}
    with cuda_peak(ctx.device) as box:
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(**batch_d).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return box[0], batch


def predicted_row(
    profile, name: str, cand: Candidate, batch: int, seq: int, device: str, workspace: int
) -> dict:
    """The prediction of one measured row and the terms its coefficients multiply."""
    embeddings_trained = bool(EMBEDDING_METHODS & set(cand.methods))
    params = api.candidate_trainable_params(cand, profile)
    pred = memmodel.predict_memory(
        profile, cand, params, batch, seq, device, embeddings_trained, workspace
    )
    terms = memmodel.activation_terms(profile, cand, batch, seq, embeddings_trained)
    return {
        "candidate": name,
        "params": params,
        "seq": seq,
        "batch": batch,
        "device": device,
        "family": profile.family,
        "predicted_mb": round(pred.total_mb, 2),
        "static_mb": round(pred.static / MB, 2),
        "workspace_mb": round(pred.workspace / MB, 3),
        "terms": terms._asdict(),
    }


def with_error(row: dict) -> dict:
    row["error_pct"] = round(
        100 * (row["predicted_mb"] - row["measured_mb"]) / row["measured_mb"], 1
    )
    return row


def measure_model(model: str, batch_size: int, max_length: int, device: str | None) -> list:
    """Measured and predicted peak of every candidate on one model at one shape."""
    study = api.study_from_dict(
        {
            "name": "mem",
            "model": model_path(model),
            "task": {"name": "rotten_tomatoes", "max_length": max_length},
            "search_space": {"modules": {"lora": {}}},
            "training": {"batch_size": batch_size},
        }
    )
    ctx = TrialContext.create(study, cache_dir=Path("/tmp/autopeft-bench-cache"), device=device)
    workspace = cuda_workspace_bytes(ctx.device)
    where = {"model": model, "max_length": max_length}
    if ctx.device.type == "cuda":
        where["gpu"] = torch.cuda.get_device_name(ctx.device)
    rows = []
    for name, cand in candidates(ctx.profile.num_layers).items():
        measured, batch = measure(ctx, cand, batch_size)
        seq = batch["input_ids"].shape[1]
        row = predicted_row(ctx.profile, name, cand, batch_size, seq, ctx.device.type, workspace)
        rows.append(with_error({**where, "measured_mb": round(measured, 2), **row}))
    return rows


def profile_of(model: str):
    """A model's profile from its config alone: bundled, or one of ``BERT_SIZES``."""
    from transformers import BertConfig

    from autopeft.core.model_profile import load_profile, profile_from_config

    if model in BERT_SIZES:
        config = BertConfig(vocab_size=30522, **BERT_SIZES[model]).to_dict()
        return profile_from_config(config, 2)
    return load_profile(model)


def repredict(rows: list[dict]) -> list[dict]:
    """Committed measurements predicted again with the current memory model."""
    profiles = {model: profile_of(model) for model in {r["model"] for r in rows}}
    out = []
    for r in rows:
        profile = profiles[r["model"]]
        cand = candidates(profile.num_layers)[r["candidate"]]
        workspace = int(r.get("workspace_mb", memmodel.CUDA_WORKSPACE_BYTES / MB) * MB)
        row = predicted_row(
            profile, r["candidate"], cand, r["batch"], r["seq"], r["device"], workspace
        )
        out.append(with_error({**r, **row}))
    return out


#: Peak MiB of LoRA r8 on q,v trained on an H100 (bf16 autocast, eager, sequence 128, random
#: weights), from the GPU anchor figures in ../shared/FACTS.md: (model, batch, measured).
H100_ANCHORS = (
    ("minilm", 32, 495),
    ("bert-base", 32, 1856),
    ("bert-base", 128, 5323),
    ("bert-large", 32, 4919),
)
#: The coefficients ``--fit`` solves for on each device; the others keep the model's values
#: (on a GPU, fused attention saves no scores matrix and DoRA scales with tokens, not weights).
FIT_TERMS = {
    "cpu": ("hidden", "inter", "attention", "inputs", "dora_weights"),
    "cuda": ("hidden", "inter", "inputs", "transient", "dora_outputs"),
}


def anchors(out: Path) -> None:
    """The CUDA prediction against the H100 measurements of FACTS.md, from configs alone."""
    lines = [
        "# CUDA prediction vs the H100 anchor figures (../shared/FACTS.md)",
        "",
        "LoRA r8 on q,v in every layer, bf16 autocast, sequence 128; measured on an H100 by an "
        "earlier session (random weights, eager); predicted here from the config alone "
        "(`predict_memory(..., 'cuda')`: the CUDA coefficients fitted on an H200 "
        "(memory_model_h200_fit), Hopper's cuBLAS workspaces, autocast weight copies). None "
        "of these points was in the fit: another GPU, a fixed sequence length, BERT-large.",
        "",
        "| model | batch | measured MiB | predicted MiB | error | weights | weight copies "
        "| activations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, batch, measured in H100_ANCHORS:
        profile = profile_of(model)
        lora = m("lora", range(profile.num_layers), ("q", "v"), rank=8, alpha=16.0)
        cand = Candidate(modules=(lora,))
        params = api.candidate_trainable_params(cand, profile)
        pred = memmodel.predict_memory(profile, cand, params, batch, 128, "cuda")
        lines.append(
            f"| {model} | {batch} | {measured:,} | {pred.total_mb:,.0f} | "
            f"{100 * (pred.total_mb - measured) / measured:+.1f}% | {pred.weights / MB:,.0f} | "
            f"{pred.weight_copies / MB:,.0f} | {pred.activations / MB:,.0f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory_model_h100_anchors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write(rows: list[dict], out: Path, stem: str, note: str = "") -> None:
    """The rows as ``STEM.json`` and a table with each error as ``STEM.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
    if rows[0]["device"] == "cuda":
        kind = f"CUDA allocator peak, {rows[0].get('gpu', 'GPU')}, bf16 autocast, 3 steps"
    else:
        kind = "CPU step estimate: profiler allocation peak of one forward/backward"
    header = [
        f"# Predicted vs measured peak training memory ({kind})",
        "",
        "The longest batch of rotten_tomatoes at each batch size x max length; predicted: "
        "autopeft.core.memory_model.predict_memory." + (f" {note}" if note else ""),
        "",
        "| model | batch x max length | candidate | trainable | measured MiB | predicted MiB "
        "| error |",
        "|---|---|---|---|---|---|---|",
    ]
    lines = [
        f"| {r['model']} | {r['batch']}x{r['max_length']} | {r['candidate']} | {r['params']:,} "
        f"| {r['measured_mb']} | {r['predicted_mb']} | {r['error_pct']:+}% |"
        for r in rows
    ]
    errors = [abs(r["error_pct"]) for r in rows]
    within = sum(e <= 15 for e in errors)
    lines.append(
        f"\nworst |error|: {max(errors)}% over {len(rows)} candidates; within 15%: "
        f"{within}/{len(rows)}; median |error|: {statistics.median(errors):.1f}%"
    )
    (out / f"{stem}.md").write_text("\n".join(header + lines) + "\n")
    print("\n".join(lines))


def measured_rows(ap: argparse.ArgumentParser, path: Path) -> list[dict]:
    """The rows of a results file this script wrote, or a clear error naming the rule."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        ap.error(f"--repredict: cannot read {str(path)!r} as JSON ({err})")
    needed = {"model", "candidate", "batch", "seq", "device", "measured_mb"}
    if not (isinstance(rows, list) and rows and all(needed <= set(r) for r in rows)):
        ap.error(
            f"--repredict: {str(path)!r} must be a memory_model results file: a JSON list of "
            f"rows with {', '.join(sorted(needed))}; hint: bench/results/memory_model_*.json"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,tiny-llama")
    ap.add_argument("--shapes", default="16x48", help="batch x max length, comma-separated")
    ap.add_argument("--device", default=None)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument(
        "--anchors", action="store_true", help="only: CUDA prediction vs FACTS.md's H100 figures"
    )
    ap.add_argument(
        "--repredict", type=Path, help="only: predict a results file's rows again (in place)"
    )
    ap.add_argument("--name", help="results file stem (default memory_model_<cpu|gpu>)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args()
    if args.anchors:
        anchors(args.out)
        return
    if args.repredict:
        rows = repredict(measured_rows(ap, args.repredict))
        if args.fit:
            fit(rows)
        note = "Measured on the device named above; predicted again with the current model."
        write(rows, args.repredict.parent, args.repredict.stem, note)
        return
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    rows = []
    for model in args.models.split(","):
        for batch_size, max_length in shapes:
            rows += measure_model(model, batch_size, max_length, args.device)
            tag = "gpu" if rows[0]["device"] == "cuda" else "cpu"
            # Written after every shape: a run cut short by its time limit keeps its rows.
            write(rows, args.out, args.name or f"memory_model_{tag}")
    if args.fit:
        fit(rows)


def fit(rows: list[dict]) -> None:
    """Least-squares activation coefficients per family from (measured - static)."""
    device = rows[0]["device"]
    act_bytes = 2 if device == "cuda" else 4
    free = FIT_TERMS[device]
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family]
        xs = [[r["terms"][t] * act_bytes / MB for t in free] for r in mine]
        ys = [r["measured_mb"] - r["static_mb"] for r in mine]
        # BERT's FFN is 4x its hidden size, so those two columns are collinear: the SVD
        # driver returns the minimum-norm split (the predictions do not depend on it).
        sol = torch.linalg.lstsq(
            torch.tensor(xs, dtype=torch.float64),
            torch.tensor(ys, dtype=torch.float64)[:, None],
            driver="gelsd",
        ).solution[:, 0]
        coeffs = memmodel.activation_coeffs(family, device)._replace(
            **{t: round(v, 3) for t, v in zip(free, sol.tolist())}
        )
        print(f"{family} on {device}: {coeffs}")


if __name__ == "__main__":
    main()

"""Predicted vs measured peak training memory across module types and placements.

On CPU the "measured" figure is autopeft's deterministic estimate (parameters + AdamW state +
tensors saved for backward, one forward of the longest batch); on a GPU it is the CUDA
allocator's peak over real training steps. `--fit` refits the activation coefficients of
`autopeft.core.memory` (per family) by least squares and prints them.

    .venv/bin/python bench/memory_model.py [--fit] [--device cuda] [--shapes 16x48,32x128]
        [--models minilm,tiny-llama,bert-base]

``--shapes`` lists batch x max-length pairs (the longest batch of rotten_tomatoes at that
length is measured); ``bert-base`` is built from config (``bench_models.py``).

Results: bench/results/memory_model_<cpu|gpu>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_models import model_path  # noqa: E402

from autopeft import api
from autopeft.core import memory as memmodel
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.train.build import build_adapted
from autopeft.train.memory import MB, cpu_estimate_mb, cuda_peak
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
        return cpu_estimate_mb(adapted, batch), batch
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
    rows = []
    for name, cand in candidates(ctx.profile.num_layers).items():
        measured, batch = measure(ctx, cand, batch_size)
        embeddings_trained = bool(EMBEDDING_METHODS & set(cand.methods))
        params = api.candidate_trainable_params(cand, ctx.profile)
        seq = batch["input_ids"].shape[1]
        pred = memmodel.predict_memory(
            ctx.profile,
            cand,
            params,
            batch_size,
            seq,
            ctx.device.type,
            embeddings_trained=embeddings_trained,
        )
        rows.append(
            {
                "model": model,
                "candidate": name,
                "params": params,
                "seq": seq,
                "measured_mb": round(measured, 2),
                "predicted_mb": round(pred.total_mb, 2),
                "error_pct": round(100 * (pred.total_mb - measured) / measured, 1),
                "static_mb": round(pred.static / MB, 2),
                "device": ctx.device.type,
                "max_length": max_length,
                "family": ctx.profile.family,
                "blocks": memmodel.blocks_with_gradient(ctx.profile, cand, embeddings_trained),
                "hidden": ctx.profile.hidden_size,
                "inter": ctx.profile.intermediate_size,
                "heads": ctx.profile.num_heads,
                "batch": batch_size,
                "inputs": memmodel.module_input_elements(ctx.profile, cand),
            }
        )
    return rows


#: Peak MiB of LoRA r8 on q,v trained on an H100 (bf16 autocast, eager, sequence 128, random
#: weights), from the GPU anchor figures in ../shared/FACTS.md: (model, batch, measured).
H100_ANCHORS = (
    ("minilm", 32, 495),
    ("bert-base", 32, 1856),
    ("bert-base", 128, 5323),
    ("bert-large", 32, 4919),
)
BERT_SIZES = {
    "bert-base": {},
    "bert-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}


def anchors(out: Path) -> None:
    """The CUDA prediction against the H100 measurements of FACTS.md, from configs alone."""
    from transformers import BertConfig

    from autopeft.core.profile import load_profile, profile_from_config

    lines = [
        "# CUDA prediction vs the H100 anchor figures (../shared/FACTS.md)",
        "",
        "LoRA r8 on q,v in every layer, bf16 autocast, sequence 128; measured on an H100 by an "
        "earlier session (random weights, eager); predicted here from the config alone "
        "(`predict_memory(..., 'cuda')`, CPU activation coefficients at 2 bytes, autocast "
        "weight copies). Four LoRA points, not a fit: a first check of the CUDA path until a "
        "lent GPU runs `bench/gpu/checks.sh`.",
        "",
        "| model | batch | measured MiB | predicted MiB | error | weights | weight copies "
        "| activations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, batch, measured in H100_ANCHORS:
        if model == "minilm":
            profile = load_profile("minilm")
        else:
            config = BertConfig(vocab_size=30522, **BERT_SIZES[model]).to_dict()
            profile = profile_from_config(config, 2)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,tiny-llama")
    ap.add_argument("--shapes", default="16x48", help="batch x max length, comma-separated")
    ap.add_argument("--device", default=None)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument(
        "--anchors", action="store_true", help="only: CUDA prediction vs FACTS.md's H100 figures"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args()
    if args.anchors:
        anchors(args.out)
        return
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    rows = []
    for model in args.models.split(","):
        for batch_size, max_length in shapes:
            rows += measure_model(model, batch_size, max_length, args.device)
    if args.fit:
        fit(rows, 4 if (args.device or "cpu") == "cpu" else 2)
    tag = "gpu" if rows and (args.device or "cpu") != "cpu" else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"memory_model_{tag}.json").write_text(json.dumps(rows, indent=2) + "\n")
    if tag == "gpu":
        kind = f"CUDA allocator peak, {torch.cuda.get_device_name()}, bf16 autocast, 3 steps"
    else:
        kind = "CPU saved-tensor estimate (one forward)"
    header = [
        f"# Predicted vs measured peak training memory ({kind})",
        "",
        "The longest batch of rotten_tomatoes at each batch size x max length; predicted: "
        "autopeft.core.memory.predict_memory.",
        "",
    ]
    lines = [
        "| model | batch x max length | candidate | trainable | measured MiB | predicted MiB "
        "| error |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['batch']}x{r['max_length']} | {r['candidate']} | {r['params']:,} "
        f"| {r['measured_mb']} | {r['predicted_mb']} | {r['error_pct']:+}% |"
        for r in rows
    ]
    worst = max(abs(r["error_pct"]) for r in rows)
    lines.append(f"\nworst |error|: {worst}% over {len(rows)} candidates")
    (args.out / f"memory_model_{tag}.md").write_text("\n".join(header + lines) + "\n")
    print("\n".join(lines))


def fit(rows: list[dict], act_bytes: int) -> None:
    """Least-squares activation coefficients per family from (measured - static)."""
    for family in sorted({r["family"] for r in rows}):
        xs, ys = [], []
        for r in rows:
            if r["family"] != family or not r["blocks"]:
                continue
            tokens = r["batch"] * r["seq"] * act_bytes / MB
            per_block = tokens * r["blocks"]
            xs.append(
                [
                    per_block * r["hidden"],
                    per_block * r["inter"],
                    per_block * r["heads"] * r["seq"],
                    tokens * r["inputs"],
                ]
            )
            ys.append(r["measured_mb"] - r["static_mb"])
        sol = torch.linalg.lstsq(
            torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64)[:, None]
        ).solution
        print(f"{family}: " + ", ".join(f"{v:.3f}" for v in sol[:, 0].tolist()))


if __name__ == "__main__":
    main()

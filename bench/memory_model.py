"""Predicted vs measured peak training memory across module types and placements.

Eleven candidates (LoRA on all or half the layers, DoRA, (IA)^3, serial and parallel
adapters, prefix tuning, BitFit, mixes, the head alone) per model and batch x max length,
each a short trial through ``autopeft.run_trial``: the prediction is the one a study's budget
check makes (``autopeft.predict_memory`` at the task's longest row), the measurement the one
a study records (on CPU autopeft's deterministic step estimate of the longest batch; on a GPU
the CUDA allocator's peak over the trial's training steps).

``--repredict FILE`` predicts the rows of a committed results file again with the current
model (no device needed), so measurements taken on a lent GPU keep checking the model as it
changes; ``--anchors`` predicts the H100 anchor figures (:data:`H100_ANCHORS`). ``--fit``
(after measuring, or with ``--repredict``) fits the activation coefficients to the rows
(``autopeft.fit_activation_coeffs``: non-negative, relative error, per device and family) and
prints them as ``ACTIVATION_COEFFS`` entries with each group's errors before and after;
nothing in autopeft changes until they are pasted in. Each row keeps what the fit reads
(``autopeft.MemoryRow``: the static part, the activation width and the terms).

    python -m bench.memory_model [--device cuda] [--shapes 16x48,32x128]
        [--models minilm,tiny-llama,bert-base,bert-large] [--name STEM] [--fit]
    python -m bench.memory_model --repredict bench/results/memory_model_h200_fit.json [--fit]

``--shapes`` lists batch x max-length pairs; ``bert-base`` and ``bert-large`` are built from
config (:func:`bench.common.model_path`). Results: bench/results/memory_model_<cpu|gpu>.json
and .md (or ``--name``'s stem).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import autopeft
from autopeft import Candidate, ModuleConfig
from bench.common import BERT_SIZES, RESULTS, model_path, provenance, write_results

MB = 1024 * 1024
#: Trial steps per row: enough for the optimiser state and the allocator's steady peak.
STEPS = 3


def m(method: str, layers: range, targets: tuple[str, ...] = (), **params: Any) -> ModuleConfig:
    """One module of a candidate."""
    return ModuleConfig(method=method, params=params, layers=tuple(layers), targets=targets)


def candidates(n: int) -> dict[str, Candidate]:
    """The measured candidates on a model of ``n`` layers, by name."""
    top, all_ = range(n // 2, n), range(n)
    lora = {"alpha": 16.0, "dropout": 0.0, "use_dora": False}
    dora = {"alpha": 16.0, "dropout": 0.0, "use_dora": True}
    every = ("q", "k", "v", "o", "ffn_up", "ffn_down")
    return {
        "lora r8 qv all": Candidate(modules=(m("lora", all_, ("q", "v"), rank=8, **lora),)),
        "lora r8 qv top half": Candidate(modules=(m("lora", top, ("q", "v"), rank=8, **lora),)),
        "dora r16 attn+ffn": Candidate(modules=(m("lora", all_, every, rank=16, **dora),)),
        "ia3": Candidate(modules=(m("ia3", all_, ("k", "v", "ffn_down")),)),
        "serial adapter 64": Candidate(
            modules=(m("serial_adapter", all_, size=64, activation="relu"),)
        ),
        "parallel adapter 32 top": Candidate(
            modules=(m("parallel_adapter", top, size=32, scale=4.0, activation="relu"),)
        ),
        "prefix 20": Candidate(modules=(m("prefix", all_, length=20),)),
        "bitfit": Candidate(modules=(m("bitfit", all_, every, norms=True),)),
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


def fit_fields(row: Any) -> dict[str, Any]:
    """What a fit reads of a row (an ``autopeft.MemoryRow``) beyond its other columns."""
    return {k: v for k, v in row.to_dict().items() if k in ("static_mb", "act_bytes", "terms")}


def predicted_row(
    profile: Any,
    name: str,
    cand: Candidate,
    batch: int,
    seq: int,
    device: str,
    workspace: int,
    measured_mb: float,
) -> dict:
    """The prediction of one measured row (``workspace``: cuBLAS workspace bytes)."""
    row = autopeft.memory_row(
        profile, cand, batch, seq, measured_mb, device, workspace_bytes=workspace
    )
    return {
        "candidate": name,
        "params": autopeft.candidate_trainable_params(cand, profile),
        "seq": seq,
        "batch": batch,
        "device": device,
        "family": profile.family,
        "predicted_mb": round(autopeft.repredict_memory([row])[0], 2),
        "workspace_mb": round(workspace / MB if device == "cuda" else 0.0, 3),
        **fit_fields(row),
    }


def with_error(row: dict) -> dict:
    """The row with the prediction's error relative to the measurement, in %."""
    row["error_pct"] = round(
        100 * (row["predicted_mb"] - row["measured_mb"]) / row["measured_mb"], 1
    )
    return row


def measure_model(model: str, batch_size: int, max_length: int, device: str | None) -> list:
    """Measured and predicted peak of every candidate on one model at one shape."""
    study = autopeft.study_from_dict(
        {
            "name": "mem",
            "model": model_path(model),
            "task": {"name": "rotten_tomatoes", "max_length": max_length},
            "search_space": {"modules": {"lora": {}}},
            "training": {
                "batch_size": batch_size,
                "steps": STEPS,
                "eval_every": STEPS,
                "eval_examples": 8,
            },
        }
    )
    ctx = autopeft.TrialContext.create(
        study, cache_dir=Path(tempfile.gettempdir()) / "autopeft-bench-cache", device=device
    )
    where: dict[str, Any] = {"model": model, "max_length": max_length}
    if ctx.device.type == "cuda":
        import torch

        where["gpu"] = torch.cuda.get_device_name(ctx.device)
    rows = []
    for name, cand in candidates(ctx.profile.num_layers).items():
        result = autopeft.run_trial(ctx, cand)
        if result.peak_memory_mb is None or result.predicted_memory_mb is None:
            raise RuntimeError(f"{model} {name}: {result.status.value}: {result.error}")
        seq = int(ctx.data["train"].lengths.max())
        measured = round(result.peak_memory_mb, 2)
        # ctx.device: a GPU's own cuBLAS workspaces, as the trial's prediction counts them.
        split = autopeft.memory_row(ctx.profile, cand, batch_size, seq, measured, ctx.device)
        rows.append(
            {
                **where,
                "candidate": name,
                "params": result.trainable_params,
                "seq": seq,
                "batch": batch_size,
                "device": ctx.device.type,
                "family": ctx.profile.family,
                "measured_mb": measured,
                "predicted_mb": round(result.predicted_memory_mb, 2),
                **fit_fields(split),
            }
        )
        with_error(rows[-1])
    return rows


def profile_of(model: str) -> Any:
    """A model's profile from its config alone: bundled, or one of ``BERT_SIZES``."""
    if model not in BERT_SIZES:
        return autopeft.load_profile(model)
    from transformers import BertConfig

    with tempfile.TemporaryDirectory() as folder:
        BertConfig(**{"vocab_size": 30522, **BERT_SIZES[model]}).save_pretrained(folder)
        return autopeft.load_profile(folder)


def repredict(rows: list[dict]) -> list[dict]:
    """Committed measurements predicted again with the current memory model."""
    profiles = {model: profile_of(model) for model in {r["model"] for r in rows}}
    out = []
    for r in rows:
        profile = profiles[r["model"]]
        cand = candidates(profile.num_layers)[r["candidate"]]
        # A row without its workspace predates it: Hopper's two cuBLAS workspaces.
        workspace = int(r.get("workspace_mb", 64.0 if r["device"] == "cuda" else 0.0) * MB)
        row = predicted_row(
            profile,
            r["candidate"],
            cand,
            r["batch"],
            r["seq"],
            r["device"],
            workspace,
            r["measured_mb"],
        )
        out.append(with_error(r | row))
    return out


def fit_report(rows: Sequence[dict]) -> str:
    """Activation coefficients fitted to results rows, with each group's errors before/after.

    ``rows``: rows of memory_model or memory_levers results (each with ``family``,
    ``device``, ``measured_mb``, ``static_mb``, ``terms`` and, for levers, ``act_bytes``).

    Raises:
        autopeft.ConfigError: a row lacks what the fit reads (its path says which).
    """
    memory = [autopeft.MemoryRow.from_dict(r, f"rows[{i}]") for i, r in enumerate(rows)]
    fitted = autopeft.fit_activation_coeffs(memory)
    now, then = autopeft.repredict_memory(memory), autopeft.repredict_memory(memory, fitted)
    lines = ["fit: |error| with autopeft's coefficients -> with the fitted ones"]
    for device, family in sorted({(r.device, r.family) for r in memory}):
        mine = [i for i, r in enumerate(memory) if (r.device, r.family) == (device, family)]
        measured = [memory[i].measured_mb for i in mine]
        before = [abs(100 * (now[i] / m - 1)) for i, m in zip(mine, measured)]
        after = [abs(100 * (then[i] / m - 1)) for i, m in zip(mine, measured)]
        lines.append(
            f"- {family} on {device}, {len(mine)} rows: median {statistics.median(before):.1f}% "
            f"-> {statistics.median(after):.1f}%, worst {max(before):.1f}% -> {max(after):.1f}%"
        )
    lines += [
        "fitted ACTIVATION_COEFFS entries (autopeft/core/memory_model.py):",
        autopeft.format_activation_coeffs(fitted),
    ]
    return "\n".join(lines)


#: Peak MiB of LoRA r8 on q,v in every layer trained on an H100 (bf16 autocast, eager,
#: sequence 128, random weights), measured in an earlier session of this project on a lent
#: H100 and kept in its notes: (model, batch, measured).
H100_ANCHORS = (
    ("minilm", 32, 495),
    ("bert-base", 32, 1856),
    ("bert-base", 128, 5323),
    ("bert-large", 32, 4919),
)


def anchors(out: Path) -> None:
    """The CUDA prediction against the H100 anchor figures, from configs alone."""
    lines = [
        "# CUDA prediction vs the H100 anchor figures",
        "",
        "LoRA r8 on q,v in every layer, bf16 autocast, sequence 128; measured on a lent H100 "
        "in an earlier session of this project (random weights, eager); predicted here from "
        "the config alone (`autopeft.predict_memory(..., 'cuda')`: the CUDA coefficients "
        "fitted on an H200 (memory_model_h200_fit), Hopper's cuBLAS workspaces, autocast "
        "weight copies). None of these points was in the fit: another GPU, a fixed sequence "
        "length, BERT-large.",
        "",
        "| model | batch | measured MiB | predicted MiB | error | weights | weight copies "
        "| activations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    anchor_rows = []
    for model, batch, measured in H100_ANCHORS:
        profile = profile_of(model)
        lora = m("lora", range(profile.num_layers), ("q", "v"), rank=8, alpha=16.0)
        cand = Candidate(modules=(lora,))
        params = autopeft.candidate_trainable_params(cand, profile)
        pred = autopeft.predict_memory(profile, cand, params, batch, 128, "cuda")
        error = 100 * (pred.total_mb - measured) / measured
        anchor_rows.append(
            {"model": model, "batch": batch, "measured_mb": measured}
            | {"predicted_mb": round(pred.total_mb, 1), "error_pct": round(error, 1)}
        )
        lines.append(
            f"| {model} | {batch} | {measured:,} | {pred.total_mb:,.0f} | {error:+.1f}% | "
            f"{pred.weights / MB:,.0f} | {pred.weight_copies / MB:,.0f} | "
            f"{pred.activations / MB:,.0f} |"
        )
    text = "\n".join(lines) + "\n"
    write_results(
        out / "memory_model_h100_anchors", {"meta": provenance(), "rows": anchor_rows}, text
    )
    print(text)


def write(rows: list[dict], stem: Path, meta: dict, note: str = "") -> None:
    """The rows as ``STEM.json`` and a table with each error as ``STEM.md``."""
    if rows[0]["device"] == "cuda":
        kind = f"CUDA allocator peak, {rows[0].get('gpu', 'GPU')}, bf16 autocast"
    else:
        kind = "CPU step estimate of the longest batch"
    header = [
        f"# Predicted vs measured peak training memory ({kind})",
        "",
        "Rotten_tomatoes at each batch size x max length; predicted: "
        "`autopeft.predict_memory` at the longest row." + (f" {note}" if note else ""),
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
    write_results(stem, {"meta": meta, "rows": rows}, "\n".join(header + lines) + "\n")
    print("\n".join(lines))


def measured_rows(ap: argparse.ArgumentParser, path: Path) -> tuple[dict, list[dict]]:
    """The meta and rows of a results file this script wrote, or a clear error naming the rule."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        ap.error(f"--repredict: cannot read {str(path)!r} as JSON ({err})")
    rows = saved.get("rows") if isinstance(saved, dict) else None
    needed = {"model", "candidate", "batch", "seq", "device", "measured_mb"}
    if not (isinstance(rows, list) and rows and all(needed <= set(r) for r in rows)):
        ap.error(
            f"--repredict: {str(path)!r} must be a memory_model results file: a JSON object "
            f"with `meta` and `rows`, each row with {', '.join(sorted(needed))}; hint: "
            "bench/results/memory_model_*.json"
        )
    return saved.get("meta", {}), rows


def main() -> None:
    """Measure, predict again or predict the anchors, as the options say."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.memory_model", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--models", default="minilm,tiny-llama")
    ap.add_argument("--shapes", default="16x48", help="batch x max length, comma-separated")
    ap.add_argument("--device", default=None)
    ap.add_argument("--anchors", action="store_true", help="only: predict the H100 anchors")
    ap.add_argument(
        "--repredict", type=Path, help="only: predict a results file's rows again (in place)"
    )
    ap.add_argument("--name", help="results file stem (default memory_model_<cpu|gpu>)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    ap.add_argument(
        "--fit",
        action="store_true",
        help="print activation coefficients fitted to the rows (measured or --repredict's)",
    )
    args = ap.parse_args()
    if args.anchors:
        anchors(args.out)
        return
    if args.repredict:
        meta, measured = measured_rows(ap, args.repredict)
        note = "Measured as `meta` says; predicted again with the current model."
        # The measurement's provenance stays; the prediction's is this command's.
        meta = meta | {"repredicted": provenance()}
        again = repredict(measured)
        write(again, args.repredict.with_suffix(""), meta, note)
        if args.fit:
            print(fit_report(again))
        return
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    rows: list[dict] = []
    for model in args.models.split(","):
        for batch_size, max_length in shapes:
            rows += measure_model(model, batch_size, max_length, args.device)
            tag = "gpu" if rows[0]["device"] == "cuda" else "cpu"
            # Written after every shape: a run cut short by its time limit keeps its rows.
            gpu = rows[0].get("gpu")
            write(rows, args.out / (args.name or f"memory_model_{tag}"), provenance(gpu))
    if args.fit:
        print(fit_report(rows))


if __name__ == "__main__":
    main()

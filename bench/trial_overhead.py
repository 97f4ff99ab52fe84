"""Per-trial framework overhead: run_trial vs a bare PyTorch loop vs Hugging Face Trainer.

The same model, LoRA candidate, data, batches and step count go through each path; runs are
interleaved (A B C A B C ...) and the median is reported. Whole-trial wall time counts copying
the loaded base model, attaching the adapter, training and one evaluation; step time counts
the training steps alone. The bare loop and the Trainer build the adapter with peft's
``LoraConfig`` and use the study's recipe (AdamW, linear warm-up and decay, clipping), as a
researcher would write them.

    python -m bench.trial_overhead --steps 30 --reps 3

Results: bench/results/trial_overhead_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import autopeft
from autopeft import Candidate, ModuleConfig
from bench.common import RESULTS, provenance, write_results

#: The q and v projections' module names per model family (what ``targets: [q, v]`` means).
QV = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"]}
#: The bench's LoRA: rank 8, alpha 16, no dropout, on q and v of every layer.
RANK, ALPHA = 8, 16.0


def candidate(layers: int) -> Candidate:
    """The bench's LoRA as an autopeft candidate."""
    cfg = ModuleConfig(
        method="lora",
        params={"rank": RANK, "alpha": ALPHA, "dropout": 0.0, "use_dora": False},
        layers=tuple(range(layers)),
        targets=("q", "v"),
    )
    return Candidate(modules=(cfg,))


def lora_config(ctx: Any, **params: Any) -> Any:
    """peft's ``LoraConfig`` of the bench's LoRA on the context's model (``params`` replace
    its rank, alpha or target modules)."""
    from peft import LoraConfig

    settings: dict[str, Any] = {
        "r": RANK,
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "target_modules": QV[ctx.profile.family],
    }
    return LoraConfig(task_type="SEQ_CLS", **(settings | params))


def warmup_linear(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup`` of the steps, then linear decay to 0 (0-based steps)."""
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, 1.0 - (step - warm) / max(1, total - warm))


def bare_loop(ctx: Any, cand: Candidate, steps: int) -> tuple[float, float, float]:
    """The minimal loop a researcher would write: peft model, AdamW, linear schedule."""
    from peft import get_peft_model

    cfg, dev = ctx.config.training, ctx.device
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(ctx.base_model)
    model = get_peft_model(model, lora_config(ctx)).to(dev)
    torch.manual_seed(cfg.seed)  # the same dropout stream as run_trial
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_linear(s, cfg.steps, cfg.warmup)
    )
    model.train()
    # bf16 autocast on a GPU, as run_trial and the Trainer (bf16=True) train there.
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    t0 = time.perf_counter()
    for batch in ctx.data["train"].batches(cfg.batch_size, cfg.seed, steps):
        with autocast:
            loss = model(**{k: v.to(dev) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    train_seconds = time.perf_counter() - t0
    model.eval()
    valid, correct, n = (
        ctx.data["validation"],
        0,
        min(cfg.eval_examples, len(ctx.data["validation"])),
    )
    with torch.no_grad():
        for s in range(0, n, cfg.batch_size * 2):
            b = valid.batch(torch.arange(s, min(n, s + cfg.batch_size * 2)))
            with autocast:
                logits = model(**{k: v.to(dev) for k, v in b.items()}).logits
            correct += int((logits.argmax(-1).cpu() == b["labels"]).sum())
    return time.perf_counter() - start, correct / n, train_seconds


class Rows(torch.utils.data.Dataset):
    """An autopeft token set as the per-example dataset ``transformers.Trainer`` expects."""

    def __init__(self, enc: Any, n: int):
        """The first ``n`` rows of the token set ``enc``."""
        self.enc, self.n = enc, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.enc.batch(torch.tensor([i])).items()}


def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad a list of examples to the longest (the padding autopeft's batches use)."""
    width = max(len(r["input_ids"]) for r in rows)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - len(t)))  # noqa: E731
    return {
        "input_ids": torch.stack([pad(r["input_ids"]) for r in rows]),
        "attention_mask": torch.stack([pad(r["attention_mask"]) for r in rows]),
        "labels": torch.stack([r["labels"] for r in rows]),
    }


def trainer_args(ctx: Any, steps: int, **extra: Any) -> Any:
    """``TrainingArguments`` with the study's recipe: steps, batch, lr, warm-up, clipping."""
    from transformers import TrainingArguments

    cfg = ctx.config.training
    return TrainingArguments(
        output_dir=str(Path(tempfile.gettempdir()) / "autopeft-bench-trainer"),
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size * 2,
        learning_rate=cfg.lr,
        warmup_steps=int(cfg.warmup * cfg.steps),
        lr_scheduler_type="linear",
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=ctx.device.type == "cpu",
        bf16=ctx.device.type == "cuda",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=cfg.seed,
        **extra,
    )


def trainer_data(ctx: Any) -> dict:
    """Train and validation sets, collator and accuracy metric for ``transformers.Trainer``."""
    train, valid = ctx.data["train"], ctx.data["validation"]
    return {
        "train_dataset": Rows(train, len(train)),
        "eval_dataset": Rows(valid, min(ctx.config.training.eval_examples, len(valid))),
        "data_collator": collate,
        "compute_metrics": lambda p: {
            "accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())
        },
    }


def hf_trainer(ctx: Any, cand: Candidate, steps: int) -> tuple[float, float, float]:
    """The same trial through transformers.Trainer (what HF users run today)."""
    from peft import get_peft_model
    from transformers import Trainer

    start = time.perf_counter()
    torch.manual_seed(ctx.config.training.seed)
    model = copy.deepcopy(ctx.base_model)
    model = get_peft_model(model, lora_config(ctx))
    trainer = Trainer(model=model, args=trainer_args(ctx, steps), **trainer_data(ctx))
    out = trainer.train()
    metrics = trainer.evaluate()
    return time.perf_counter() - start, metrics["eval_accuracy"], out.metrics["train_runtime"]


def main() -> None:
    """Run the three paths interleaved and write the medians."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.trial_overhead", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--eval-examples", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()

    study = autopeft.study_from_dict(
        {
            "name": "bench",
            "model": args.model,
            "task": {"name": "rotten_tomatoes", "max_length": args.max_length},
            "search_space": {"modules": {"lora": {}}},
            "training": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "eval_every": args.steps,
                "eval_examples": args.eval_examples,
            },
        }
    )
    cache = Path(tempfile.gettempdir()) / "autopeft-bench-cache"
    ctx = autopeft.TrialContext.create(study, cache_dir=cache)
    cand = candidate(ctx.profile.num_layers)

    # run_trial reports tokens/s over its training steps; the training seconds follow from it.
    def autopeft_path(ctx: Any, cand: Candidate, steps: int) -> tuple[float, float, float]:
        start = time.perf_counter()
        res = autopeft.run_trial(ctx, cand, steps=steps)
        wall = time.perf_counter() - start
        if res.status is not autopeft.TrialStatus.COMPLETE or not res.tokens_per_s:
            raise RuntimeError(f"run_trial: {res.status.value}: {res.error}")
        tokens = int(
            sum(
                int(b["attention_mask"].sum())
                for b in ctx.data["train"].batches(args.batch_size, ctx.config.training.seed, steps)
            )
        )
        return wall, res.metrics["accuracy"], tokens / res.tokens_per_s

    paths = {"bare loop": bare_loop, "autopeft run_trial": autopeft_path, "HF Trainer": hf_trainer}
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in paths}
    for _ in range(args.reps):
        for name, fn in paths.items():
            runs[name].append(fn(ctx, cand, args.steps))
    base_wall = statistics.median(r[0] for r in runs["bare loop"])
    base_step = statistics.median(r[2] for r in runs["bare loop"]) / args.steps
    rows = []
    for name, rs in runs.items():
        wall = statistics.median(r[0] for r in rs)
        step = statistics.median(r[2] for r in rs) / args.steps
        rows.append(
            {
                "path": name,
                "trial_wall_s": round(wall, 3),
                "wall_ratio_vs_bare": round(wall / base_wall, 3),
                "step_ms": round(1000 * step, 1),
                "step_ratio_vs_bare": round(step / base_step, 3),
                "accuracy": round(statistics.median(r[1] for r in rs), 4),
                "walls": [round(r[0], 3) for r in rs],
            }
        )
    gpu = torch.cuda.get_device_name() if ctx.device.type == "cuda" else None
    device = gpu or "cpu"
    result = {
        "meta": provenance(gpu),
        "benchmark": "trial_overhead",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "candidate": cand.describe(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "reps": args.reps,
        "rows": rows,
    }
    tag = "gpu" if ctx.device.type == "cuda" else "cpu"
    lines = [
        f"# Trial overhead ({device}, {args.model}, {cand.describe()}, {args.steps} steps, "
        f"batch {args.batch_size}, max length {args.max_length}, median of {args.reps})",
        "",
        "| path | trial wall s | wall vs bare | step ms | step vs bare | val. accuracy |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['path']} | {r['trial_wall_s']} | {r['wall_ratio_vs_bare']}x | {r['step_ms']} | "
        f"{r['step_ratio_vs_bare']}x | {r['accuracy']} |"
        for r in rows
    ]
    write_results(args.out / f"trial_overhead_{tag}", result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

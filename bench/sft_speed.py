"""Causal-LM SFT step time: autopeft's loop vs a bare PyTorch loop vs TRL's SFTTrainer.

One LoRA candidate (r=8, alpha 16, on q and v of every layer) on the built-in ``arithmetic``
instruction task, fp32 on the CPU. Every arm trains a fresh copy of the same base model,
adapted by ``autopeft.train.build.build_adapted`` under the same seed, on the same token
batches (autopeft's own encoded ``train`` split, ``Encoded.batches``), with the same AdamW
and warm-up + linear-decay schedule, for ``--warmup`` + ``--steps`` steps:

A  ``autopeft.train.loop.train_and_eval`` itself (what ``run_trial`` calls);
B  a bare loop: forward, backward, clip, AdamW step, scheduler step, zero_grad;
C  ``trl.SFTTrainer`` on the same rows as a ``datasets.Dataset`` of prompt/completion
   (chat turns when the tokenizer has a chat template, as autopeft renders them),
   ``completion_only_loss=True``, the rows in the batches' order (sequential sampler), the
   same optimiser and scheduler objects passed in; logging, saving and evaluation off.
   Skipped, with one line saying so, when ``trl`` is not installed.

Timing: each arm stamps the wall clock (``time.perf_counter``) and this process's CPU time
(``time.process_time``) once per optimiser step: A through ``AdaptedModel.step_hooks``, which
the loop calls after the scheduler step; B at the same point; C in a
``TrainerCallback.on_step_end``. A step's time is the gap between its stamp and the previous
one, so it holds everything the loop does per step (drawing the batch included) and nothing
before the first or after the last step: model copy, adapter build, optimiser set-up, TRL's
dataset preparation and A's final evaluation fall outside. The first ``--warmup`` steps are
left out. A's evaluator is a stub (evaluation is not training time; ``train_and_eval``
always evaluates at its last step, after the last stamp) and A evaluates at step 1 too
(``eval_at={1}``, a warm-up step), so that its history records the first step's loss with
the loop's own ``train_loss``. After one untimed priming run, the runs are interleaved with
the order rotated each repeat (A B C, B C A, C A B, ...); the table gives the median over
every timed step of every repeat, and its ratio to the bare loop's. With one torch thread
(``OMP_NUM_THREADS=1``) the CPU time is the step's own work, which other processes on a
shared machine inflate far less than its wall time (they take the core away, not the work).

``--lockstep`` runs A and B step by step in one process instead (A1 B1 A2 B2 ..., A in a
worker thread, a semaphore handing the turn over after every step): both meet the same load
step for step, which on a shared machine separates a real difference between them from the
load's drift between runs far better than interleaved runs do (see :func:`lockstep`).

When C runs, the results also time the LM head + loss alone (forward and backward on one
batch's hidden states) both ways, the model's own and TRL's fused one (:func:`head_costs`).

TRL's ``SFTConfig`` defaults to ``bf16=True`` (CPU autocast through accelerate) and
``gradient_checkpointing=True``: both are set off here, so all three arms train in fp32
without recomputation. On the CPU, TRL's fused LM head still scores every position (it keeps
only the answer positions on Triton devices), in chunks, without the full logits tensor.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        .venv/bin/python bench/sft_speed.py            # smollm2, 20 timed steps, 3 repeats
    ... bench/sft_speed.py --lockstep --reps 2          # A and B alternating step by step
    ... bench/sft_speed.py --smoke --out /tmp/x         # tiny-llama, 3 steps, 1 repeat (test)

Results: ``<out>/sft_speed_<model>_cpu.json`` and ``.md`` (``--name`` overrides the stem).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopeft import api  # noqa: E402
from autopeft.core.candidate import Candidate, ModuleConfig  # noqa: E402
from autopeft.core.study_config import trial_training  # noqa: E402
from autopeft.train.build import AdaptedModel, build_adapted  # noqa: E402
from autopeft.train.loop import lr_factor, train_and_eval  # noqa: E402
from autopeft.train.trial import TrialContext  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ARMS = {
    "A": "autopeft train_and_eval",
    "B": "bare PyTorch loop",
    "C": "TRL SFTTrainer",
}


def candidate(layers: int) -> Candidate:
    """LoRA r=8 (alpha 16, no dropout) on q and v of every layer."""
    cfg = ModuleConfig(
        method="lora",
        params={"rank": 8, "alpha": 16.0, "dropout": 0.0, "use_dora": False},
        layers=tuple(range(layers)),
        targets=("q", "v"),
    )
    return Candidate(modules=(cfg,))


def adapted_copy(ctx: TrialContext, cand: Candidate) -> AdaptedModel:
    """A fresh copy of the base model with the candidate attached, seeded as ``run_trial``."""
    cfg = trial_training(ctx.config.training, cand)
    torch.manual_seed(cfg.seed)
    return build_adapted(copy.deepcopy(ctx.base_model), ctx.profile, cand, total_steps=cfg.steps)


def optimiser(adapted: AdaptedModel, cfg) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and the warm-up + decay schedule, built as ``train_and_eval`` builds them."""
    groups = (
        adapted.param_groups(cfg.lr)
        if hasattr(adapted, "param_groups")
        else [{"params": adapted.trainable_parameters(), "lr": cfg.lr}]
    )
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup, cfg.schedule)
    )
    return opt, sched


def stamp() -> tuple[float, float]:
    """Wall time and this process's CPU time, in seconds."""
    return time.perf_counter(), time.process_time()


def arm_autopeft(
    ctx: TrialContext,
    cand: Candidate,
    total: int,
    adapted: AdaptedModel | None = None,
    after_stamp: Any = None,
) -> dict[str, Any]:
    """A: the product's loop, stamped through its per-step hook; evaluation stubbed.

    ``after_stamp()`` (lock-step mode) runs in the hook right after each stamp.
    """
    cfg = trial_training(ctx.config.training, cand)
    adapted = adapted or adapted_copy(ctx, cand)
    stamps: list[tuple[float, float]] = []

    def hook(_model, _step) -> None:
        stamps.append(stamp())
        if after_stamp is not None:
            after_stamp()

    adapted.step_hooks.append(hook)

    def no_eval(adapted, data, batch_size, limit, device):
        return {"eval_loss": float("nan")}

    out = train_and_eval(
        adapted,
        ctx.data["train"],
        ctx.data["validation"],
        cfg,
        total,
        None,
        ctx.device,
        frozenset({1}),
        no_eval,
    )
    assert out.steps == total and len(stamps) == total, (out.steps, len(stamps))
    return {"stamps": stamps, "first_loss": out.history[0]["train_loss"]}


def arm_bare(ctx: TrialContext, cand: Candidate, total: int) -> dict[str, Any]:
    """B: the loop a researcher writes by hand, over the same batches."""
    cfg = trial_training(ctx.config.training, cand)
    adapted = adapted_copy(ctx, cand)
    model = adapted.model.to(ctx.device)
    model.train()
    params = adapted.trainable_parameters()
    opt, sched = optimiser(adapted, cfg)
    stamps: list[tuple[float, float]] = []
    first = None
    for step, batch in enumerate(ctx.data["train"].batches(cfg.batch_size, cfg.seed, total), 1):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        stamps.append(stamp())
        opt.zero_grad(set_to_none=True)
        if step == 1:
            first = float(loss.detach())
    return {"stamps": stamps, "first_loss": first}


def lockstep(ctx: TrialContext, cand: Candidate, total: int) -> dict[str, dict[str, Any]]:
    """A and B step by step in one process: A1 B1 A2 B2 ... (A in a worker thread).

    Two semaphores hand the turn over after every step, so exactly one arm runs at any
    moment and both meet the same machine load, step for step. A step's time runs from the
    moment its arm got the turn back to its stamp, in wall time and in the running thread's
    own CPU time (``time.thread_time``; with one torch thread, forward and backward run on
    the calling thread), so the other arm's steps are never counted.
    """
    import threading

    cfg = trial_training(ctx.config.training, cand)
    turn = {"A": threading.Semaphore(0), "B": threading.Semaphore(0)}
    resumed: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    ends: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    wait_s = 1800

    def clock() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def take(arm: str) -> None:
        if not turn[arm].acquire(timeout=wait_s):
            raise RuntimeError(f"lock-step: arm {arm} never got its turn back")
        resumed[arm].append(clock())

    def a_hook() -> None:
        ends["A"].append(clock())
        turn["B"].release()
        take("A")

    adapted_a, adapted_b = adapted_copy(ctx, cand), adapted_copy(ctx, cand)
    box: dict[str, Any] = {}

    def run_a() -> None:
        try:
            box["A"] = arm_autopeft(ctx, cand, total, adapted_a, a_hook)
        except BaseException as err:  # noqa: BLE001 -- re-raised in the main thread
            box["error"] = err
            turn["B"].release()

    worker = threading.Thread(target=run_a, name="arm-A")
    worker.start()
    model = adapted_b.model.to(ctx.device)
    model.train()
    params = adapted_b.trainable_parameters()
    opt, sched = optimiser(adapted_b, cfg)
    first = None
    take("B")  # after A's first step
    for step, batch in enumerate(ctx.data["train"].batches(cfg.batch_size, cfg.seed, total), 1):
        if "error" in box:
            break
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        ends["B"].append(clock())
        opt.zero_grad(set_to_none=True)
        if step == 1:
            first = float(loss.detach())
        turn["A"].release()
        if step < total:
            take("B")
    worker.join()
    if "error" in box:
        raise box["error"]
    # Steps 2..total: each from the turn taken after the step before to its own end stamp
    # (A's first turn is taken after its step 1, B's before its step 1).
    pairs = {"A": zip(resumed["A"], ends["A"][1:]), "B": zip(resumed["B"][1:], ends["B"][1:])}
    steps = {arm: [(e[0] - r[0], e[1] - r[1]) for r, e in p] for arm, p in pairs.items()}
    assert len(steps["A"]) == len(steps["B"]) == total - 1, {k: len(v) for k, v in steps.items()}
    return {
        "A": {"steps": steps["A"], "first_loss": box["A"]["first_loss"]},
        "B": {"steps": steps["B"], "first_loss": first},
    }


def batch_rows(ctx: TrialContext, total: int) -> list[int]:
    """The train split's row numbers in the order the ``total`` batches draw them.

    Found by matching each batch row's tokens against the encoded split (rows are distinct),
    so the benchmark does not copy ``Encoded.batches``' shuffling rule.
    """
    train, cfg = ctx.data["train"], ctx.config.training
    where = {
        tuple(train.input_ids[i, : int(train.lengths[i])].tolist()): i for i in range(len(train))
    }
    order = []
    for batch in train.batches(cfg.batch_size, cfg.seed, total):
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            order.append(where[tuple(ids[: int(mask.sum())].tolist())])
    return order


def renders_chat(ctx: TrialContext) -> bool:
    """Whether autopeft renders the prompts with the tokenizer's chat template."""
    chat = ctx.config.task.chat_template
    tok = ctx.data["train"].tokenizer
    return bool(getattr(tok, "chat_template", None)) if chat is None else chat


def trl_rows(ctx: TrialContext, order: list[int]) -> tuple[list[dict[str, Any]], bool]:
    """Prompt/completion rows for TRL (chat turns when autopeft renders a chat template)."""
    train, task = ctx.data["train"], ctx.task
    dropped, _, _ = train.fit
    if dropped:
        raise SystemExit(f"{dropped} train rows did not fit max_length: raise --max-length")
    chat = renders_chat(ctx)
    rows = []
    for i in order:
        r = task.split["train"][i]
        prompt, completion = task.prompts[r], task.completions[r]
        assert completion == train.references[i]
        if chat:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": completion}],
                }
            )
        else:
            rows.append({"prompt": prompt, "completion": completion})
    return rows, chat


def token_check(ctx: TrialContext, order: list[int], prepared) -> dict[str, Any]:
    """Whether TRL's own tokenisation and loss mask equal autopeft's, row by row."""
    train = ctx.data["train"]
    same_ids = same_labels = 0
    first_diff = None
    for k, i in enumerate(order):
        ours = train.batch(torch.tensor([i]))
        ids, labels = ours["input_ids"][0].tolist(), ours["labels"][0].tolist()
        theirs_ids, theirs_labels = prepared[k]["input_ids"], prepared[k]["labels"]
        same_ids += ids == theirs_ids
        same_labels += labels == theirs_labels
        if first_diff is None and (ids != theirs_ids or labels != theirs_labels):
            tok = train.tokenizer
            first_diff = {
                "row": k,
                "autopeft": tok.decode(ids),
                "trl": tok.decode(theirs_ids),
                "autopeft_answer": tok.decode([t for t in labels if t != -100]),
                "trl_answer": tok.decode([t for t in theirs_labels if t != -100]),
            }
    return {
        "rows": len(order),
        "same_input_ids": same_ids,
        "same_labels": same_labels,
        "first_difference": first_diff,
    }


def arm_trl(ctx: TrialContext, cand: Candidate, total: int, rows, order, check: list) -> dict:
    """C: TRL's SFTTrainer on the same rows, order, optimiser and schedule."""
    import warnings

    import datasets
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    cfg = trial_training(ctx.config.training, cand)
    adapted = adapted_copy(ctx, cand)
    opt, sched = optimiser(adapted, cfg)
    stamps: list[tuple[float, float]] = []
    first: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(stamp())

    class FirstLoss(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not first:
                first.append(float((loss[0] if return_outputs else loss).detach()))
            return loss

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        # transformers' own deprecation notice for a field SFTConfig sets by default
        warnings.filterwarnings("ignore", category=FutureWarning)
        args = SFTConfig(
            output_dir=out,
            max_steps=total,
            per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.lr,
            max_grad_norm=cfg.max_grad_norm,
            weight_decay=cfg.weight_decay,
            completion_only_loss=True,
            # SFTConfig's own defaults are bf16=True (CPU autocast through accelerate) and
            # gradient_checkpointing=True; the comparison is fp32 without recomputation.
            bf16=False,
            gradient_checkpointing=False,
            max_length=ctx.config.task.max_length,
            train_sampling_strategy="sequential",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=ctx.device.type == "cpu",
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=cfg.seed,
        )
        trainer = FirstLoss(
            model=adapted.model,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=ctx.data["train"].tokenizer,
            optimizers=(opt, sched),
            callbacks=[Stamp()],
        )
        trainer.remove_callback(PrinterCallback)  # its end-of-training summary line
        if not check:
            check.append(token_check(ctx, order, trainer.train_dataset))
        trainer.train()
    assert len(stamps) == total, len(stamps)
    return {"stamps": stamps, "first_loss": first[0]}


def head_costs(ctx: TrialContext, reps: int = 5) -> dict[str, float]:
    """Median ms of the LM head + loss, forward and backward, on one batch's hidden states.

    ``hf``: the model's own path (``lm_head`` over every position, then the causal-LM
    cross-entropy), as arms A and B run it; ``trl``: TRL's chunked log-probabilities with the
    outputs ``SFTTrainer`` asks for (log-probs, entropy, top-1), as arm C runs it. Both
    differentiate the hidden states only (the head is frozen), as in training.
    """
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, _ChunkedLogProbFunction

    model = ctx.base_model
    batch = next(ctx.data["train"].batches(ctx.config.training.batch_size, 0, 1))
    with torch.no_grad():
        hidden0 = model.base_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    head = model.get_output_embeddings()
    labels = batch["labels"]

    def hf() -> None:
        hidden = hidden0.clone().requires_grad_(True)
        loss = model.loss_function(head(hidden), labels, vocab_size=head.weight.shape[0])
        loss.backward()

    def trl() -> None:
        hidden = hidden0.clone().requires_grad_(True)
        h, tgt = hidden[:, :-1].reshape(-1, hidden.shape[-1]), labels[:, 1:].reshape(-1)
        mask = tgt != -100
        logp, entropy, _, _, top1 = _ChunkedLogProbFunction.apply(
            h,
            head.weight,
            head.bias,
            tgt.clamp(min=0),
            1.0,
            _CHUNKED_LOGPROB_CHUNK_SIZE,
            None,
            1.0,
            ("log_probs", "entropy", "is_top1"),
        )
        loss = -(logp.masked_fill(~mask, 0)).sum() / mask.sum()
        loss.backward()

    out = {}
    for name, fn in (("hf", hf), ("trl", trl)):
        fn()  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.process_time()
            fn()
            times.append(1000 * (time.process_time() - t0))
        out[name] = round(statistics.median(times), 1)
    out["positions"] = int(labels[:, 1:].numel())
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def busy_processes(threshold: float = 20.0) -> list[str]:
    """Other processes using more than ``threshold`` % of a core over one second."""
    try:
        import psutil
    except ImportError:
        return []
    procs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid != os.getpid()]
    for p in procs:
        try:
            p.cpu_percent(None)
        except psutil.Error:
            pass
    time.sleep(1.0)
    busy = []
    for p in procs:
        try:
            use = p.cpu_percent(None)
            if use > threshold:
                cmd = " ".join(p.info["cmdline"] or [])[:100]
                busy.append(f"{use:.0f}% pid {p.pid}: {cmd}")
        except psutil.Error:
            pass
    return busy


def versions() -> dict[str, str]:
    """Versions of the libraries every arm runs on."""
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` when autopeft/ has uncommitted edits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "autopeft"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}+dirty" if head and dirty else head or "unknown"


def durations(stamps: list[tuple[float, float]], warmup: int) -> list[tuple[float, float]]:
    """``(wall, cpu)`` seconds of steps ``warmup + 1 ..`` from one stamp per step."""
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps[warmup - 1 :], stamps[warmup:])]


def summarise(runs: dict[str, list[list[tuple[float, float]]]], firsts: dict[str, float]):
    """Per arm: timed step times (ms, wall and CPU) pooled over repeats; medians, means."""
    out = {}
    for arm, reps in runs.items():
        wall = [1000 * w for rep in reps for w, _ in rep]
        cpu = [1000 * c for rep in reps for _, c in rep]
        out[arm] = {
            "name": ARMS[arm],
            "median_ms": round(statistics.median(wall), 2),
            "mean_ms": round(statistics.mean(wall), 2),
            "min_ms": round(min(wall), 2),
            "median_cpu_ms": round(statistics.median(cpu), 2),
            "mean_cpu_ms": round(statistics.mean(cpu), 2),
            "mean_ms_per_repeat": [round(1000 * statistics.mean(w for w, _ in r), 2) for r in reps],
            "timed_steps": len(wall),
            "steps_ms_per_repeat": [[round(1000 * w, 1) for w, _ in r] for r in reps],
            "steps_cpu_ms_per_repeat": [[round(1000 * c, 1) for _, c in r] for r in reps],
            "first_step_loss": firsts[arm],
        }
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2, or tiny-llama (fast)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them (>= 1)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repeats of each arm")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--arms", default="ABC", help="which arms to run, e.g. AB")
    parser.add_argument(
        "--lockstep",
        action="store_true",
        help="A and B only, alternating step by step in one process (see lockstep())",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny-llama, 3 steps, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--name", default=None, help="results file stem")
    parser.add_argument("--note", default="", help="a line for the results file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.steps, args.warmup, args.reps, args.max_length = "tiny-llama", 3, 1, 1, 48
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (a step's time is the gap to the one before)")
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "autopeft-sft-speed" if args.smoke else RESULTS
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    arms = ["A", "B"] if args.lockstep else [a for a in "ABC" if a in args.arms.upper()]
    if "C" in arms:
        try:
            import trl  # noqa: F401
        except ImportError:
            print(
                "trl is not installed: skipping arm C (TRL SFTTrainer); `pip install trl` runs it"
            )
            arms.remove("C")
    total = args.warmup + args.steps
    started = datetime.now(timezone.utc)
    busy_before = busy_processes()
    load = [os.getloadavg()[0]]
    study = api.study_from_dict(
        {
            "name": "sft_speed",
            "model": args.model,
            "task": {"kind": "causal_lm", "name": "arithmetic", "max_length": args.max_length},
            "search_space": {"modules": {"lora": {}}},
            "training": {
                "steps": total,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "eval_every": total,
                "eval_examples": args.batch_size,
            },
        }
    )
    ctx = TrialContext.create(study, cache_dir=Path("/tmp/autopeft-bench-cache"), device="cpu")
    cand = candidate(ctx.profile.num_layers)
    order = batch_rows(ctx, total)
    rows, chat = trl_rows(ctx, order) if "C" in arms else (None, renders_chat(ctx))
    check: list[dict] = []
    fns = {
        "A": lambda: arm_autopeft(ctx, cand, total),
        "B": lambda: arm_bare(ctx, cand, total),
        "C": lambda: arm_trl(ctx, cand, total, rows, order, check),
    }
    runs: dict[str, list[list[tuple[float, float]]]] = {a: [] for a in arms}
    firsts: dict[str, float] = {}
    # One untimed bare run first: the process's first training steps (allocator growth, kernel
    # selection) would otherwise fall on whichever arm runs first.
    arm_bare(ctx, cand, args.warmup)
    for rep in range(args.reps):
        gc.collect()
        t0 = time.perf_counter()
        if args.lockstep:
            done = lockstep(ctx, cand, total)
            for arm in arms:
                runs[arm].append(done[arm]["steps"][args.warmup - 1 :])
                firsts[arm] = done[arm]["first_loss"]
            print(
                f"rep {rep + 1}/{args.reps} A+B lock-step: {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            load.append(os.getloadavg()[0])
            continue
        # Interleaved, the order rotated each repeat (ABC, BCA, CAB, ...) so no arm always
        # runs right after the same other one.
        for arm in arms[rep % len(arms) :] + arms[: rep % len(arms)]:
            gc.collect()
            t0 = time.perf_counter()
            done = fns[arm]()
            runs[arm].append(durations(done["stamps"], args.warmup))
            firsts[arm] = done["first_loss"]
            print(
                f"rep {rep + 1}/{args.reps} {arm} ({ARMS[arm]}): {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        load.append(os.getloadavg()[0])
    summary = summarise(runs, firsts)
    heads = head_costs(ctx) if "C" in arms else None
    base = summary.get("B", {}).get("median_ms")
    base_cpu = summary.get("B", {}).get("median_cpu_ms")
    for s in summary.values():
        s["ratio_vs_bare"] = round(s["median_ms"] / base, 3) if base else None
        s["cpu_ratio_vs_bare"] = round(s["median_cpu_ms"] / base_cpu, 3) if base_cpu else None
    widths = ctx.data["train"].lengths[order].view(-1, args.batch_size).max(1).values
    env = " ".join(
        f"{k}={os.environ[k]}"
        for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        if k in os.environ
    )
    result = {
        "benchmark": "sft_speed",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": [round(x, 2) for x in load],
            "busy_processes_at_start": busy_before,
        },
        "git_commit": git_commit(),
        "versions": versions(),
        "command": f"{env} .venv/bin/python bench/{Path(__file__).name} "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "note": args.note,
        "model": args.model,
        "candidate": cand.describe(),
        "trainable_params": adapted_params(ctx, cand),
        "task": "arithmetic (built-in), chat template" if chat else "arithmetic (built-in)",
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "batch_width_tokens": {
            "mean": round(float(widths.float().mean()), 1),
            "min": int(widths.min()),
            "max": int(widths.max()),
        },
        "lr": args.lr,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "reps": args.reps,
        "mode": "lockstep" if args.lockstep else "interleaved",
        "arms": summary,
        "trl_tokens_vs_autopeft": check[0] if check else None,
        "lm_head_loss_cpu_ms": heads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    default = f"sft_speed_{args.model}_cpu" + ("_lockstep" if args.lockstep else "")
    stem = args.name or ("sft_speed_smoke" if args.smoke else default)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(md)
    print(md)
    print(f"written: {args.out / stem}.json / .md", file=sys.stderr)
    return result


def adapted_params(ctx: TrialContext, cand: Candidate) -> int:
    """Trainable parameters of the candidate (exact, from the method's formula)."""
    from autopeft import methods
    from autopeft.core.resolve import candidate_params

    return candidate_params(cand, ctx.profile, methods.registry())


def markdown(r: dict[str, Any]) -> str:
    """The results file: the set-up, the table, the loss and token checks."""
    m, v = r["machine"], r["versions"]
    lines = [
        f"# SFT step time: autopeft vs a bare loop vs TRL ({r['model']}, CPU fp32)",
        "",
        f"- date: {r['date']}; git commit: `{r['git_commit']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}; "
        f"1-min load average at start and after each repeat: {m['load_avg_1min']}",
        f"- other busy processes at start: {'; '.join(m['busy_processes_at_start']) or 'none'}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- command: `{r['command']}`",
        f"- {r['candidate']} ({r['trainable_params']:,} trainable), task {r['task']}, batch "
        f"{r['batch_size']}, padded width {r['batch_width_tokens']['mean']} tokens on average "
        f"({r['batch_width_tokens']['min']}-{r['batch_width_tokens']['max']}), lr {r['lr']}; "
        f"{r['warmup_steps']} warm-up + {r['timed_steps']} timed steps, {r['reps']} repeats, "
        + (
            "A and B in lock-step (A1 B1 A2 B2 ... in one process, one arm running at a time; "
            "a step's time from its arm's turn to its stamp, CPU time of the running thread)"
            if r.get("mode") == "lockstep"
            else "interleaved (order rotated each repeat)"
        )
        + "; after one untimed priming run; median over every timed step"
        + (
            "; TRL with bf16=False, gradient_checkpointing=False (not its defaults)"
            if "C" in r["arms"]
            else ""
        ),
    ]
    if r["note"]:
        lines.append(f"- note: {r['note']}")
    lines += [
        "",
        "| arm | median ms/step (wall) | vs bare | median CPU ms/step | vs bare (CPU) "
        "| mean ms/step per repeat (wall) | first-step loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, s in r["arms"].items():
        ratio = f"{s['ratio_vs_bare']}x" if s["ratio_vs_bare"] else "-"
        cpu_ratio = f"{s['cpu_ratio_vs_bare']}x" if s["cpu_ratio_vs_bare"] else "-"
        lines.append(
            f"| {arm}: {s['name']} | {s['median_ms']} | {ratio} | {s['median_cpu_ms']} | "
            f"{cpu_ratio} | {', '.join(map(str, s['mean_ms_per_repeat']))} | "
            f"{s['first_step_loss']:.6f} |"
        )
    heads = r.get("lm_head_loss_cpu_ms")
    if heads:
        lines += [
            "",
            f"LM head + loss alone, forward and backward on one batch's hidden states "
            f"({heads['positions']} positions, median CPU ms): the model's own (A, B) "
            f"{heads['hf']}, TRL's chunked log-probs with entropy and top-1 (C) {heads['trl']}.",
        ]
    tc = r["trl_tokens_vs_autopeft"]
    if tc:
        lines += [
            "",
            f"TRL's own tokenisation of the same rows: {tc['same_input_ids']}/{tc['rows']} rows "
            f"with autopeft's input ids, {tc['same_labels']}/{tc['rows']} with its loss mask.",
        ]
        if tc["first_difference"]:
            lines.append(f"First difference: `{json.dumps(tc['first_difference'])}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Trial throughput: trials packed per device vs one trial per device vs the HF Trainer's search.

Three ways to run the same search, side by side in one run, on one device:

- ``packed``: autopeft's Ray executor, several trials per device (on a GPU the share per trial
  comes from the predicted memory, up to 16 trials per GPU; on a CPU one trial per core);
- ``one-per-device``: the same executor with one trial holding the whole device;
- ``trainer``: ``transformers.Trainer.hyperparameter_search`` (optuna backend) over the same
  LoRA space, one trial after another: what Hugging Face users run today (LoRA space only).

An encoder classifies ``rotten_tomatoes`` (metric: accuracy); a decoder of SmolLM2's shape
(``llama-small``, ``smollm2-random``) is tuned on the generated ``arithmetic`` causal-LM task
(metric: ``eval_loss`` on the answer tokens; random weights learn too little in a few steps for
exact match to tell trials apart). The Trainer then trains on the same rows and batches as
autopeft's causal-LM trial: prompt and padding masked by position, right padding to the
longest row of the batch, plain ``Trainer`` with that collator (no TRL). Its ``eval_loss`` is
the Trainer's own (the mean of per-batch means), so it is reported, not compared.

The model, data, steps and batch size are the same everywhere, halving is off (every trial
trains to the end) and the two Ray modes use the ``random`` sampler under one seed, so trial
``i`` is the same candidate in both and its accuracy can be compared (it should match up to
the noise of non-deterministic GPU kernels). Device utilisation is sampled while each mode runs
(``nvidia-smi`` on a GPU, ``psutil`` on a CPU).

    python -m bench.throughput --model minilm --space lora --trials 32 --steps 200
    python -m bench.throughput --model bert-base --space mixed --trials 16
    python -m bench.throughput --model smollm2-random --trials 12 --steps 50

The Ray modes run the study through ``autopeft.run(..., executor="ray")``. ``bert-base`` is a
BERT-base-sized classifier (12 layers, hidden 768, random weights) built from config with the
bundled tokenizer and saved once under ``studies/.bench-cache/``; ``smollm2-random`` is
SmolLM2-135M's shape (30 layers, 134.5M parameters, random weights) and ``llama-small`` the
same with 8 layers. Results:
``bench/results/throughput_<device>_<model>_<space>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import autopeft
from bench.common import CACHE, LLAMA_SIZES, RESULTS, ROOT, model_path, provenance, write_results

#: The LoRA space (72 configurations on every layer), searched the same way by the Trainer.
LORA = {"rank": [2, 4, 8, 16, 32, 64], "alpha": [8, 16, 32, 64]}
TARGETS = {
    "qv": ["q", "v"],
    "qkvo": ["q", "k", "v", "o"],
    "all": ["q", "k", "v", "o", "ffn_up", "ffn_down"],
}
SPACES = {
    "lora": {
        "modules": {"lora": {**LORA, "targets": {"choice": list(TARGETS.values())}}},
        "layers": "all",
    },
    "mixed": str(ROOT / "search_spaces" / "bench.yaml"),
}


MODES = ("packed", "one-per-device", "trainer")
#: The module names each target stands for, per model family (what the Trainer's peft needs).
PEFT_NAMES = {
    "bert": {
        "q": "query",
        "k": "key",
        "v": "value",
        "o": "attention.output.dense",
        "ffn_up": "intermediate.dense",
        "ffn_down": "output.dense",
    },
    "llama": {
        "q": "q_proj",
        "k": "k_proj",
        "v": "v_proj",
        "o": "o_proj",
        "ffn_up": "up_proj",
        "ffn_down": "down_proj",
    },
}
#: The task each kind of model runs, its metric and whether the metric is maximised.
TASKS = {
    "rotten_tomatoes": ({"name": "rotten_tomatoes"}, "accuracy", True),
    "arithmetic": ({"kind": "causal_lm", "name": "arithmetic"}, "eval_loss", False),
}


def task_of(args: argparse.Namespace) -> str:
    """``--task``, else ``arithmetic`` for the decoders built from config, else sentiment."""
    return args.task or ("arithmetic" if args.model in LLAMA_SIZES else "rotten_tomatoes")


def max_length(args: argparse.Namespace) -> int:
    """``--max-length``, else 48 tokens (a sentence) or 96 (a chat-rendered problem and answer)."""
    return args.max_length or (96 if task_of(args) == "arithmetic" else 48)


def study_config(name: str, args: argparse.Namespace) -> Any:
    """The study every mode runs: random sampler, halving off, the given model and space."""
    return autopeft.study_from_dict(
        {
            "name": name,
            "model": model_path(args.model),
            "task": {**TASKS[task_of(args)][0], "max_length": max_length(args)},
            "training": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "eval_every": args.steps,
                "eval_examples": args.eval_examples,
            },
            "search_space": SPACES[args.space],
            "sampler": {"name": "random", "seed": 0},
            "halving": {"enabled": False},
        }
    )


class Utilisation:
    """Samples the device's utilisation (%) and memory in use (MiB) in the background."""

    def __init__(self, gpu: bool, every_s: float = 0.5):
        """Sample ``nvidia-smi`` (``gpu``) or ``psutil`` every ``every_s`` seconds."""
        self.gpu, self.every_s = gpu, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[float, float]:
        if self.gpu:
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "--id=0",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            util, mem = (float(v) for v in out.strip().split(","))
            return util, mem
        import psutil

        return psutil.cpu_percent(None), psutil.virtual_memory().used / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(self._sample())

    def __enter__(self) -> Utilisation:
        self._sample()  # psutil: the first call starts the interval
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        """Mean and median utilisation, peak memory in use."""
        if not self.samples:
            return {"util_mean": None, "util_median": None, "mem_peak_mb": None}
        utils = [u for u, _ in self.samples]
        return {
            "util_mean": round(statistics.fmean(utils), 1),
            "util_median": round(statistics.median(utils), 1),
            "mem_peak_mb": round(max(m for _, m in self.samples)),
        }


def trials_of(mode: str, args: argparse.Namespace) -> int:
    """How many trials ``mode`` runs: ``--mode-trials`` for it, else ``--trials``."""
    return args.mode_trials.get(mode, args.trials)


def parse_mode_trials(text: str) -> dict[str, int]:
    """``one-per-device=12,trainer=12`` -> {mode: trials}; the rule and the value if not."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        mode, _, count = item.partition("=")
        if mode not in MODES or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(
                f"each item is MODE=N with MODE one of {', '.join(MODES)} and N >= 1, "
                f"but got {item!r}"
            )
        out[mode] = int(count)
    return out


def ray_mode(mode: str, args: argparse.Namespace, root: str, gpu: bool, cores: int) -> dict:
    """One Ray mode: the study, its wall time, trials/hour and the metric of each trial."""
    config = study_config(f"throughput-{mode}", args)
    if mode == "packed":
        options = {"gpus_per_trial": None} if gpu else {"cpus_per_trial": 1.0}
    else:
        options = {"gpus_per_trial": 1.0} if gpu else {"cpus_per_trial": float(cores)}
    started, started_at = time.perf_counter(), time.time()
    with Utilisation(gpu) as util:
        study = autopeft.run(
            config, n_trials=trials_of(mode, args), executor="ray", root=root, **options
        )
    wall = time.perf_counter() - started
    # Re-proposals of a known candidate are told its result without training: not counted.
    reused = {t.number for t in study.optuna.trials if t.user_attrs.get("reused")}
    results = {n: r for n, r in study.results() if n not in reused}
    done = {n: r for n, r in results.items() if r.status is autopeft.TrialStatus.COMPLETE}
    ends = sorted(
        t.datetime_complete.timestamp()
        for t in study.optuna.trials
        if t.number in results and t.datetime_complete is not None
    )
    # Warm rate: trials that ended after the first one, over the time since it ended — the
    # workers' cold start (imports, model load, tokenising) is outside it.
    steady = 3600 * (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 2 else None
    return {
        "mode": mode,
        "options": options,
        "trials": len(results),
        "complete": len(done),
        "wall_s": round(wall, 1),
        "trials_per_hour": round(3600 * len(results) / wall, 1),
        "warm_trials_per_hour": round(steady, 1) if steady else None,
        "first_trial_end_s": round(ends[0] - started_at, 1) if ends else None,
        "values": {n: r.metrics.get(TASKS[task_of(args)][1]) for n, r in done.items()},
        "candidates": {n: r.candidate.describe() for n, r in done.items()},
        "trial_wall_s": statistics.median(r.wall_time_s for r in done.values()) if done else None,
        # Against a trial's wall time: how much of it the training steps themselves take,
        # and how fast they run beside the other packed trials.
        "tokens_per_s_median": (
            round(statistics.median(r.tokens_per_s or 0.0 for r in done.values())) if done else None
        ),
        **util.summary(),
    }


def trainer_mode(args: argparse.Namespace, gpu: bool) -> dict:
    """``Trainer.hyperparameter_search`` over the same LoRA space, optuna backend, in turn."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer

    from bench.trial_overhead import Rows, trainer_args, trainer_data

    ctx = autopeft.TrialContext.create(study_config("throughput-trainer", args), cache_dir=CACHE)
    _, metric, maximise = TASKS[task_of(args)]
    values: list[float] = []

    def hp_space(trial: Any) -> dict:
        return {
            **{k: trial.suggest_categorical(k, v) for k, v in LORA.items()},
            "targets": trial.suggest_categorical("targets", list(TARGETS)),
        }

    def model_init(trial: Any = None) -> Any:
        # Optuna gives the same value back when hp_space already suggested it.
        chosen: dict[str, Any] = hp_space(trial) if trial is not None else {"targets": "qv"}
        targets = [PEFT_NAMES[ctx.profile.family][t] for t in TARGETS[chosen["targets"]]]
        torch.manual_seed(ctx.config.training.seed)
        model = copy.deepcopy(ctx.base_model)
        lora = LoraConfig(
            task_type=ctx.profile.task_type,  # SEQ_CLS trains the head too, CAUSAL_LM not
            r=chosen.get("rank", 8),
            lora_alpha=float(chosen.get("alpha", 16)),  # type: ignore[arg-type]  # peft: int
            lora_dropout=0.0,  # autopeft's LoRA default
            target_modules=targets,
        )
        return get_peft_model(model, lora)

    key = metric if metric.startswith("eval_") else f"eval_{metric}"

    def objective(metrics: dict) -> float:
        values.append(metrics[key])
        return metrics[key]

    if metric == "accuracy":
        extra: dict[str, Any] = {}
        data = trainer_data(ctx)
    else:
        # Only the loss: logits over the vocabulary for every validation row are not kept.
        extra = {"prediction_loss_only": True}
        train, valid = ctx.data["train"], ctx.data["validation"]
        pad_id: int = train.pad_id  # type: ignore[attr-defined]  # a causal-LM split's
        data = {
            "train_dataset": Rows(train, len(train)),
            "eval_dataset": Rows(valid, min(ctx.config.training.eval_examples, len(valid))),
            "data_collator": lambda rows: pad_rows(rows, pad_id),
        }
    trainer = Trainer(model_init=model_init, args=trainer_args(ctx, args.steps, **extra), **data)
    started = time.perf_counter()
    with Utilisation(gpu) as util:
        trainer.hyperparameter_search(
            direction="maximize" if maximise else "minimize",
            backend="optuna",
            hp_space=hp_space,
            n_trials=trials_of("trainer", args),
            compute_objective=objective,
        )
    wall = time.perf_counter() - started
    return {
        "mode": "trainer",
        "options": {"backend": "optuna"},
        "trials": len(values),
        "complete": len(values),
        "wall_s": round(wall, 1),
        "trials_per_hour": round(3600 * len(values) / wall, 1),
        f"{metric}_median": statistics.median(values) if values else None,
        **util.summary(),
    }


def pad_rows(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad causal-LM rows to the longest, as autopeft's batches are: padding gets the
    pad id, attention 0 and no loss (label -100); the rows' own labels already mask the prompt.
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.stack(
            [torch.nn.functional.pad(r[key], (0, width - len(r[key])), value=value) for r in rows]
        )

    return {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": pad("attention_mask", 0),
        "labels": pad("labels", -100),
    }


def compare(packed: dict, single: dict) -> dict:
    """The metric of the same trial number (same candidate) in the two Ray modes."""
    common = sorted(set(packed["values"]) & set(single["values"]))
    same = [n for n in common if packed["candidates"][n] == single["candidates"][n]]
    diffs = [
        abs(packed["values"][n] - single["values"][n])
        for n in same
        if packed["values"][n] is not None and single["values"][n] is not None
    ]
    return {
        "same_candidates": len(same),
        "max_abs_diff": max(diffs) if diffs else None,
        "mean_abs_diff": statistics.fmean(diffs) if diffs else None,
    }


def _trial_counts(result: dict) -> str:
    """``16 trials`` or ``48 trials (one-per-device 12, trainer 12)``."""
    own = result.get("mode_trials") or {}
    extra = ", ".join(f"{m} {n}" for m, n in own.items())
    return f"{result['trials']} trials" + (f" ({extra})" if extra else "")


def markdown(result: dict) -> str:
    """The table, the check of the metric per candidate and the verdict."""
    rows = result["modes"]
    base = next((r["trials_per_hour"] for r in rows if r["mode"] == "one-per-device"), None)
    lines = [
        f"# Trial throughput ({result['device']}, {result['model']}, {result['task']}, "
        f"space {result['space']}, "
        f"{_trial_counts(result)} x {result['steps']} steps, batch {result['batch_size']})",
        "",
        "| mode | trials/h | vs one per device | warm trials/h | first trial ends s | complete "
        "| wall s | median trial s | median trial tokens/s | util % (mean) | peak memory MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        trial_s = r.get("trial_wall_s")
        ratio = "—" if not base else f"{r['trials_per_hour'] / base:.2f}x"
        warm = r.get("warm_trials_per_hour")
        lines.append(
            f"| {r['mode']} | {r['trials_per_hour']:,.0f} | {ratio} | "
            f"{'—' if warm is None else f'{warm:,.0f}'} | {r.get('first_trial_end_s') or '—'} | "
            f"{r['complete']}/{r['trials']} | {r['wall_s']:,.0f} | "
            f"{'—' if trial_s is None else f'{trial_s:.1f}'} | "
            f"{r.get('tokens_per_s_median') or '—'} | {r['util_mean']} | "
            f"{r['mem_peak_mb']} |"
        )
    lines.append("")
    match = result["metric_match"]
    if match:
        lines.append(
            f"Same candidate, packed vs one per device: {match['same_candidates']} trials, max "
            f"|Δ {result['metric']}| {match['max_abs_diff']}, mean {match['mean_abs_diff']}."
        )
    packed = next((r for r in rows if r["mode"] == "packed"), None)
    if packed and base:
        ratio = packed["trials_per_hour"] / base
        lines.append(
            f"Goal: packed ≥ 4x one per device — {'MET' if ratio >= 4 else 'NOT met'} "
            f"({ratio:.2f}x)."
        )
        single = next(r for r in rows if r["mode"] == "one-per-device")
        if packed.get("warm_trials_per_hour") and single.get("warm_trials_per_hour"):
            warm = packed["warm_trials_per_hour"] / single["warm_trials_per_hour"]
            lines.append(f"Warm (cold start excluded): {warm:.2f}x.")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the modes named, writing the results after each."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model",
        default="minilm",
        help="minilm, bert-base, llama-small, smollm2-random, or a model path",
    )
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="default: arithmetic (causal LM) for llama-small and smollm2-random, else "
        "rotten_tomatoes",
    )
    parser.add_argument("--space", choices=sorted(SPACES), default="lora")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--max-length", type=int, help="default: 48 (rotten_tomatoes) or 96 (arithmetic)"
    )
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-examples", type=int, default=300)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--mode-trials",
        type=parse_mode_trials,
        default={},
        help="trials of some modes instead of --trials, e.g. 'one-per-device=12,trainer=12': "
        "packed needs several waves of trials to leave its cold start behind, the others "
        "reach their rate in fewer (trials/hour is a rate, so the counts may differ)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import os

    import ray
    import torch

    gpu = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    modes = args.modes.split(",")
    device = torch.cuda.get_device_name() if gpu else f"cpu-{platform.machine()}-{cores}cores"
    result = {
        "meta": provenance(torch.cuda.get_device_name() if gpu else None),
        "benchmark": "throughput",
        "device": device,
        "model": args.model,
        "task": task_of(args),
        "metric": TASKS[task_of(args)][1],
        "max_length": max_length(args),
        "space": args.space,
        "trials": args.trials,
        "mode_trials": args.mode_trials,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "modes": [],
        "metric_match": {},
    }
    tag = f"{'gpu' if gpu else 'cpu'}_{args.model}_{args.space}"

    def record(run: dict) -> None:
        # Written after every mode: a run cut short by its time limit keeps what it measured.
        result["modes"].append(run)
        ray_runs = [r for r in result["modes"] if "values" in r]
        if len(ray_runs) == 2:
            result["metric_match"] = compare(*ray_runs)
        write_results(args.out / f"throughput_{tag}", result, markdown(result))
        print(json.dumps({k: v for k, v in run.items() if k not in ("values", "candidates")}))

    ray_modes = [m for m in ("packed", "one-per-device") if m in modes]
    if ray_modes:
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as root:
            for mode in ray_modes:
                record(ray_mode(mode, args, root, gpu, cores))
        ray.shutdown()
    if "trainer" in modes and args.space == "lora":
        record(trainer_mode(args, gpu))
    print(markdown(result))


if __name__ == "__main__":
    main()

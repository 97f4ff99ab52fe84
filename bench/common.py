"""What every benchmark shares: provenance, results files, and the models built from config.

Provenance: a results file says when (UTC), on what machine, at which git commit and by which
command it was measured (:func:`provenance`); :func:`write_results` writes the JSON (with it
under ``meta``) and the Markdown (with it as the line under the title) together.

Models: ``bert-base`` and ``bert-large`` are classifiers of BERT's sizes (12 layers, hidden
768; 24 layers, hidden 1024; random weights) with the bundled MiniLM tokenizer, saved once
under ``studies/.bench-cache/``; ``llama-small`` and ``smollm2-random`` likewise: SmolLM2-135M's
shape and tokenizer with 8 layers or its own 30. Memory and speed do not depend on the
weights' values. SmolLM2's config and tokenizer come from the offline ``smollm2`` model where
it is installed, else from the copies ``bench/gpu/bundle.py`` ships (the GPU machine, where
its 98 MB package does not travel) under the stand-in distribution ``SMOLLM2_SHAPE_DIST``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "studies" / ".bench-cache"
#: ``TrialResult.memory_kind`` of a figure that is an estimate, not a measurement (pydantic
#: turns the value into autopeft's enum member).
CPU_ESTIMATE: Any = "cpu-estimate"


def git_commit(checkout: Path = ROOT) -> str:
    """The short commit of ``checkout``, marked when a tracked file differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" + uncommitted changes" if dirty else "")


def run_in_checkout(
    checkout: Path, code: str, *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str] | str:
    """Run ``python -c code args...`` in a child process started in ``checkout``.

    ``python -c`` puts its working directory first on the path, and ``PYTHONPATH`` names the
    checkout too, so the child imports that checkout's ``autopeft`` and ``bench`` (a baseline
    run side by side with this one); one thread, as every benchmark here. Returns the
    finished process (output captured as text), or a line saying it ran past ``timeout``.
    """
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    env["MKL_NUM_THREADS"] = "1"
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"no result in {timeout:.0f} s"


def machine(gpu: str | None = None) -> str:
    """This machine in a few words: host, architecture, cores and the GPU if one is used."""
    cores = os.cpu_count() or 1
    return f"{platform.node()} ({platform.machine()}, {cores} cores{', ' + gpu if gpu else ''})"


def command() -> str:
    """How this benchmark was started: ``python -m bench.NAME ARGS`` with the thread limit."""
    name = Path(sys.argv[0]).stem
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return f"{prefix}python -m bench.{name} {' '.join(sys.argv[1:])}".rstrip()


def provenance(gpu: str | None = None) -> dict[str, str]:
    """Date (UTC), machine, git commit and command of the running benchmark."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": f"{now:%Y-%m-%d %H:%M} UTC",
        "machine": machine(gpu),
        "git_commit": git_commit(),
        "command": command(),
    }


def provenance_line(meta: dict[str, Any]) -> str:
    """The Markdown line under a results file's title."""
    return (
        f"Measured {meta['date']} on {meta['machine']} at git commit `{meta['git_commit']}`: "
        f"`{meta['command']}`."
    )


def save_json(path: Path, data: Any) -> None:
    """Write a results JSON compactly (the large search results stay small in the tree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def write_results(stem: Path, data: dict[str, Any], markdown: str) -> None:
    """``stem``.json (``data``, whose ``meta`` holds the provenance) and ``stem``.md.

    The Markdown gets the provenance line under its first line (the title).
    """
    save_json(stem.with_suffix(".json"), data)
    title, _, body = markdown.partition("\n")
    text = f"{title}\n\n{provenance_line(data['meta'])}\n{body}"
    stem.with_suffix(".md").write_text(text if text.endswith("\n") else text + "\n")


#: BertConfig arguments of the sizes built from config (BertConfig's defaults are BERT-base).
BERT_SIZES: dict[str, dict[str, Any]] = {
    "bert-base": {},
    "bert-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}
#: Decoders of SmolLM2-135M's shape (its config and tokenizer) with other depths, or its own.
LLAMA_SIZES: dict[str, dict[str, int]] = {
    "llama-small": {"num_hidden_layers": 8},
    "smollm2-random": {},
}
#: Where the GPU bundle puts SmolLM2's config and tokenizer: a stand-in distribution, found
#: through ``importlib.metadata`` like the offline packages (the bundle's site is on the path).
SMOLLM2_SHAPE_DIST, SMOLLM2_SHAPE_DIR = "autopeft-bench-smollm2-shape", "autopeft_bench_smollm2"
#: The files of SmolLM2's shape the bundle ships (those present; not its weights).
SMOLLM2_SHAPE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def model_path(name: str) -> str:
    """A bundled short name or a path as is; a ``BERT_SIZES`` or ``LLAMA_SIZES`` name: built
    and saved once, its folder."""
    if name in LLAMA_SIZES:
        return _llama(name)
    if name not in BERT_SIZES:
        return name
    folder = CACHE / f"{name}-random"
    # The tokenizer is saved last: a folder without it was cut off while saving the weights.
    if not (folder / "tokenizer_config.json").exists():
        from transformers import BertConfig, BertForSequenceClassification

        import autopeft

        tokenizer = autopeft.load_tokenizer("minilm")
        sizes = {"vocab_size": tokenizer.vocab_size, "num_labels": 2, **BERT_SIZES[name]}
        config = BertConfig(**sizes)
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def smollm2_shape() -> Path:
    """A folder with SmolLM2-135M's config and tokenizer: saved here once from the offline
    ``smollm2`` model, or the copies the GPU bundle ships.

    Raises:
        ConfigError: when neither is there (its message names the packages to install).
    """
    folder = CACHE / "smollm2-shape"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    try:
        shipped = Path(str(md.distribution(SMOLLM2_SHAPE_DIST).locate_file(SMOLLM2_SHAPE_DIR)))
    except md.PackageNotFoundError:
        shipped = None
    if shipped is not None and (shipped / "config.json").is_file():
        return shipped
    save_smollm2_shape(folder)
    return folder


def save_smollm2_shape(folder: Path) -> None:
    """Save SmolLM2-135M's config and tokenizer (not its weights) into ``folder``."""
    import autopeft

    # Built without weights (meta device): only the config is wanted.
    config = autopeft.load_model("smollm2", head="lm", weights=False).config
    tokenizer = autopeft.load_tokenizer("smollm2")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)  # last: its file marks a complete folder
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _llama(name: str) -> str:
    folder = CACHE / name if name.endswith("-random") else CACHE / f"{name}-random"
    if not (folder / "tokenizer_config.json").exists():
        from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

        source = smollm2_shape()
        config = AutoConfig.from_pretrained(source)
        for key, value in LLAMA_SIZES[name].items():
            setattr(config, key, value)
        LlamaForCausalLM(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


# The search benchmarks (search_quality, search_cost, halving_ceiling, seed_spread): studies of
# the bench space run on the surrogate (bench/surrogate.py) of real trials.

SPACE = ROOT / "search_spaces" / "bench.yaml"
#: The 40-step benchmark: a full trial is 40 steps, evaluated at the halving rungs.
STEPS, RUNGS = 40, [0.34, 0.67, 1.0]
#: Accuracy (maximised), trainable parameters and predicted memory (minimised).
DIRECTIONS = ("maximize", "minimize", "minimize")


def bench_study(
    name: str = "bench",
    steps: int = STEPS,
    rungs: list[float] | None = None,
    lr: float = 5e-3,
    eval_examples: int = 300,
    space: Path = SPACE,
    **extra: Any,
) -> Any:
    """The benchmarks' study (a ``StudyConfig``): minilm, rotten_tomatoes at max length 48.

    ``steps`` is the full fidelity (40 by default), ``lr`` the peak learning rate and
    ``rungs`` the evaluation / halving fractions, ``eval_examples`` the validation examples
    each evaluation scores, ``space`` the search space file; ``extra`` entries replace
    top-level sections (``sampler``, ``halving``, ...).
    """
    import autopeft

    raw = {
        "name": name,
        "model": "minilm",
        "task": {"name": "rotten_tomatoes", "max_length": 48},
        "training": {
            "steps": steps,
            "batch_size": 16,
            "lr": lr,
            "eval_every": steps,
            "eval_examples": eval_examples,
            "rungs": rungs or RUNGS,
        },
        "search_space": str(space),
    }
    return autopeft.study_from_dict(raw | extra)


def real_trials(data: Path) -> list[dict]:
    """The real trials of a file written by ``python -m bench.collect_real_trials`` (its
    first line, the provenance ``{"meta": ...}``, is not a trial)."""
    lines = (json.loads(line) for line in data.read_text().splitlines() if line.strip())
    return [r for r in lines if "meta" not in r]


def data_fidelity(records: list[dict]) -> tuple[int, tuple[float, ...]]:
    """The real trials' full fidelity in steps and their evaluation steps as fractions."""
    total = max(r["target_steps"] for r in records)
    evals = sorted({int(h["step"]) for r in records for h in r["history"]})
    return total, tuple(round(e / total, 4) for e in evals)


def rung_steps(total: int, rungs: Sequence[float]) -> list[int]:
    """The steps the rungs (fractions of ``total``) fall on, rounded as a study rounds them."""
    steps = sorted({max(1, round(r * total)) for r in rungs} | {total})
    return [s for s in steps if s <= total]


class Largest:
    """What ``ResolvedSpace.sample`` asks for: every parameter at its largest value."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """The upper bound."""
        return high

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """The upper bound."""
        return high

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """The last choice (the spaces list sizes in increasing order)."""
        return choices[-1]


def reference_point(study: Any) -> list[float]:
    """Accuracy 0.5, 1.1 x the space's largest params, 1.1 x the largest predicted memory."""
    import autopeft

    _, hi = study.space.param_range()
    largest = study.space.sample(Largest())  # every module on, largest, every layer
    training = study.config.training
    mem = autopeft.predict_memory(
        study.profile, largest, hi, training.batch_size, study.config.task.max_length, "cpu"
    ).total_mb
    return [0.5, 1.1 * hi, 1.1 * mem]


def box_volume(reference: Sequence[float]) -> float:
    """Volume of the box between the ideal corner (accuracy 1, 0 params, 0 MiB) and
    ``reference``: hypervolumes here are fractions of it."""
    return (1.0 - reference[0]) * reference[1] * reference[2]


def hv_gain(
    point: Sequence[float],
    front: Sequence[Sequence[float]],
    reference: Sequence[float],
    base: float | None = None,
) -> float:
    """Hypervolume ``point`` adds to ``front`` (0 if dominated or outside the box); ``base``,
    the front's own hypervolume, saves recomputing it."""
    import autopeft

    if base is None:
        base = autopeft.hypervolume(front, reference, DIRECTIONS)
    return autopeft.hypervolume([*front, point], reference, DIRECTIONS) - base


def trained_curve(study: Any) -> dict:
    """Hypervolume and cumulative training steps after each trained trial, their statuses.

    The x-axis is trained trials: a re-proposed candidate takes over an earlier result,
    costs no training, adds no point and does not count as a trial.
    """
    import autopeft

    results = dict(study.results())
    reused = {t.number for t in study.optuna.trials if t.user_attrs.get("reused")}
    trained = sorted(n for n in results if n not in reused)
    points, steps, total = [], [], 0
    for number in trained:
        r = results[number]
        points.append(study.values_of(r) if r.status is autopeft.TrialStatus.COMPLETE else None)
        total += r.steps
        steps.append(total)
    ref = reference_point(study)
    box = box_volume(ref)
    seen: list[list[float]] = []
    hv = []
    for p in points:
        seen += [p] if p is not None else []
        hv.append(autopeft.hypervolume(seen, ref, study.directions) / box if seen else 0.0)
    return {
        "hv": hv,
        "steps": steps,
        "statuses": [results[n].status.value for n in trained],
        #: Each trained trial's objective values (None unless COMPLETE), in order.
        "points": points,
        "reused": len(reused),
        "reference": ref,
        #: The reference box's volume: ``hv`` is a fraction of it.
        "box": box,
    }


#: The study attribute holding a search run's wall seconds so far (resumes add to it).
WALL_ATTR = "bench_wall_s"


@dataclasses.dataclass(frozen=True)
class Spec:
    """One search run: until ``max_trials`` trained trials or ``step_budget`` steps."""

    part: str
    label: str
    sampler: str
    halving: bool
    seed: int
    step_budget: int
    max_trials: int
    #: The full fidelity in steps and the halving rungs (fractions of it).
    fidelity: int = STEPS
    rungs: tuple[float, ...] = tuple(RUNGS)
    min_delta: float = 0.0
    eta: float = 3.0
    #: halving.stop_hopeless: also stop trials the finished ones show cannot reach the front.
    stop_hopeless: bool = False
    #: The surrogate reports the final accuracy at every rung (a ceiling, not a method).
    oracle: bool = False
    #: halving.metric: what a rung ranks trials by (None: the task metric, accuracy).
    rung_metric: str | None = None


def run_one(spec: Spec, surrogate: Any, root: str) -> dict:
    """Run one study on the surrogate in chunks until its budget is spent."""
    return run_study(spec, surrogate, root)[1]


def run_study(spec: Spec, surrogate: Any, root: str) -> tuple[dict, dict]:
    """:func:`run_one`, also returning the study's whole :func:`trained_curve` (uncut)."""
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    name = f"{spec.part}-{spec.label}-h{int(spec.halving)}-s{spec.seed}"
    config = bench_study(
        name,
        steps=spec.fidelity,
        rungs=list(spec.rungs),
        sampler={"name": spec.sampler, "seed": spec.seed},
        halving={
            "enabled": spec.halving,
            "min_delta": spec.min_delta,
            "eta": spec.eta,
            "stop_hopeless": spec.stop_hopeless,
            "metric": spec.rung_metric,
        },
    )
    import autopeft

    study = autopeft.Study(config, root=root)
    runner = surrogate.runner(study, seed=spec.seed, oracle=spec.oracle)
    started, n = time.perf_counter(), 0

    def spent() -> int:
        reused = {t.number for t in study.optuna.trials if t.user_attrs.get("reused")}
        return sum(r.steps for k, r in study.results() if k not in reused)

    while spent() < spec.step_budget and n < spec.max_trials:
        before = study.n_done()
        n = min(spec.max_trials, before + 5)
        autopeft.run_local(study, n, runner=runner, progress=False)
        if study.n_done() == before:  # the space is exhausted
            break
    # A run resumed from --keep adds to the wall time its earlier runs recorded in the study.
    wall = study.optuna.user_attrs.get(WALL_ATTR, 0.0) + time.perf_counter() - started
    study.optuna.set_user_attr(WALL_ATTR, wall)
    curve = trained_curve(study)
    # Runs go in chunks of 5 trials: cut at the trial that spends the budget.
    steps = curve["steps"]
    cut = next((i + 1 for i, s in enumerate(steps) if s >= spec.step_budget), len(steps))
    return curve, {
        **dataclasses.asdict(spec),
        "hv": curve["hv"][:cut],
        "steps": steps[:cut],
        "trials": cut,
        "pruned": curve["statuses"][:cut].count("PRUNED"),
        "reused": curve["reused"],
        "wall_s": wall,
    }


def run_all(
    specs: list,
    run: Callable[[Any, Any, str], dict],
    jobs: int,
    line: Callable[[Any, dict], str],
    surrogate: Any,
    keep: Path | None = None,
) -> list[dict]:
    """``run(spec, surrogate, root)`` for every spec in ``jobs`` processes; prints ``line``.

    Every run shares the one fitted ``surrogate`` (the caller reports its quality from the
    same fit). The studies live in a temporary folder, or in ``keep``, where a rerun resumes
    them.
    """
    runs = []
    with contextlib.ExitStack() as stack:
        if keep is None:
            root = stack.enter_context(tempfile.TemporaryDirectory())
        else:
            keep.mkdir(parents=True, exist_ok=True)
            root = str(keep)
        pool = stack.enter_context(ProcessPoolExecutor(jobs))
        futures = [pool.submit(run, s, surrogate, root) for s in specs]
        for spec, fut in zip(specs, futures):
            runs.append(fut.result())
            print(line(spec, runs[-1]), flush=True)
    return runs

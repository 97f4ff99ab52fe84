"""Run one trial: budget check, build, train at a fidelity, measure; failures become data."""

from __future__ import annotations

import gc
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autopeft import methods, stop, tasks
from autopeft.core.candidate import Candidate
from autopeft.core.levers import Levers
from autopeft.core.memory_model import predict_memory
from autopeft.core.method_rules import method_violation
from autopeft.core.model_profile import ModelProfile
from autopeft.core.resolve import candidate_params
from autopeft.core.space import Budget
from autopeft.core.study_config import StudyConfig, trial_training
from autopeft.core.trial_result import MemoryKind, TrialResult, TrialStatus
from autopeft.tasks import TaskKind
from autopeft.train.build import AdaptedModel, build_adapted
from autopeft.train.data import Encoded
from autopeft.train.levers import prepare_base, trainable_in_fp32
from autopeft.train.loop import Evaluate, NonFiniteLoss, Report, train_and_eval
from autopeft.train.measured_memory import cpu_step_peak_mb, cuda_peak, cuda_workspace_bytes
from autopeft.train.models import load_model
from autopeft.train.profile_model import profile_model
from autopeft.train.weights import save_trainable

#: Training batches a data-driven initialisation (EVA) may draw from, at most.
DATA_INIT_BATCHES = 16


@dataclass
class TrialContext:
    """What every trial of a study shares: loaded once per worker and reused.

    The base model is loaded once; each trial trains a deep copy, so nothing leaks between
    trials and no trial pays for loading weights from disk.
    """

    config: StudyConfig
    task: Any
    data: dict[str, Encoded]
    #: The base unquantised trials copy; without weights (meta) when every trial quantises.
    base_model: torch.nn.Module
    profile: ModelProfile
    device: torch.device
    #: Test seam: called with the adapted model before training (e.g. to inject a fault).
    before_training: Callable[[AdaptedModel], None] | None = None
    #: Where COMPLETE trials leave their trained adapter + head (``<candidate key>.safetensors``).
    weights_dir: Path | None = None
    tokenizer: Any = None
    cache_dir: Path | None = None
    #: Training splits encoded at a ``max_length`` lever's values (the task's is ``data``).
    _train_at: dict[int, Encoded] = field(default_factory=dict)

    @classmethod
    def create(
        cls, config: StudyConfig, cache_dir: Path | None = None, device: str | None = None
    ) -> TrialContext:
        """Load the task, tokenise it (cached on disk) and load the base model once.

        What encoding did to rows that did not fit ``task.max_length`` is printed once.
        """
        kind = tasks.get(config.task.kind)
        task = kind.load(config.task, seed=config.training.seed)
        tokenizer = kind.tokenizer(config.model, task)
        # When every trial loads its own quantised base, the shared one only gives the
        # profile: built without weights (an 8B base in fp32 would hold 32 GB for nothing).
        quantized_only = "none" not in {v for _, v in config.lever_values("quantization")}
        model = load_model(
            config.model,
            num_labels=kind.num_labels(task),
            seed=config.training.seed,
            head=kind.head,
            weights=not quantized_only,
        )
        profile = profile_model(model)
        data = kind.encode(task, tokenizer, config.task, cache_dir, profile)
        for note in kind.notes(data):
            print(f"{config.name}: {note}", file=sys.stderr, flush=True)
        # One batch drawn now: a batch larger than the train split stops the study here, once,
        # with the data's ConfigError, instead of failing every trial with it.
        next(data["train"].batches(config.training.batch_size, config.training.seed, 1))
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        _check_platform(config, dev)
        return cls(
            config, task, data, model, profile, dev, tokenizer=tokenizer, cache_dir=cache_dir
        )

    def train_split(self, max_length: int) -> Encoded:
        """The training rows at ``max_length`` tokens (encoded once per length, cached)."""
        if max_length >= self.config.task.max_length:
            return self.data["train"]
        if max_length not in self._train_at:
            task_cfg = self.config.task.model_copy(update={"max_length": max_length})
            profile = self.profile
            encoded = self.kind.encode(self.task, self.tokenizer, task_cfg, self.cache_dir, profile)
            self._train_at[max_length] = encoded["train"]
        return self._train_at[max_length]

    def truncated_share(self, max_length: int) -> float:
        """The share of training rows (at ``task.max_length``) longer than ``max_length``."""
        lengths = self.data["train"].lengths
        return float((lengths > max_length).float().mean()) if len(lengths) else 0.0

    def load_quantized(self, levers: Levers) -> torch.nn.Module:
        """The base model loaded again, quantised as ``levers`` say."""
        cfg = self.config
        return load_model(
            cfg.model,
            num_labels=self.profile.num_labels,
            seed=cfg.training.seed,
            dtype=levers.dtype,
            head=self.kind.head,
            quantization=levers.quantization,
            keep=(self.profile.head_path,) if self.profile.has_head else (),
        )

    @property
    def kind(self) -> TaskKind:
        """The study's task kind."""
        return tasks.get(self.config.task.kind)

    def evaluator(self, during: bool = False) -> Evaluate:
        """The task kind's evaluation, computing the metrics the study uses.

        ``during``: an evaluation before the end of training. Under a ``halving.metric`` it
        measures that metric (what the rungs rank by) and what the kind always measures:
        costly metrics only the result needs (generated answers, when the rungs rank by
        ``eval_loss`` beside an ``exact_match`` objective) wait for the last evaluation.
        Without one it measures what the last does, as pruned trials' objective values at
        their rung are what the BO samplers fit them by.
        """
        cfg = self.config
        wanted = frozenset([cfg.task.metric, cfg.rung_metric, *(o.metric for o in cfg.objectives)])
        if during and cfg.halving.metric is not None:
            wanted = frozenset([cfg.rung_metric])
        kind = self.kind

        def evaluate(adapted, data, batch_size, limit, device):
            return kind.evaluate(adapted, data, batch_size, limit, device, wanted)

        return evaluate

    @property
    def budget(self) -> Budget:
        """The study's budget."""
        return self.config.search_space.budget


def _check_platform(config: StudyConfig, device: torch.device) -> None:
    """Refuse, before any trial, levers this device cannot run (one paragraph, no fallback)."""
    from autopeft.core.errors import ConfigError, Problem
    from autopeft.core.study_config import LEVERS_HINT

    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else None
    for path, why in config.platform_problems(bf16):
        raise ConfigError(Problem(path, why, hint=LEVERS_HINT))


def trial_levers(ctx: TrialContext, candidate: Candidate) -> Levers:
    """The memory levers one trial of ``candidate`` trains with."""
    cfg = trial_training(ctx.config.training, candidate)
    return Levers.of(cfg, ctx.config.task.max_length)


def weights_path(folder: Path, candidate: Candidate, seed: int) -> Path:
    """Where the trained weights of ``candidate`` (trained under ``seed``) live."""
    return folder / f"{candidate.key()}-seed{seed}.safetensors"


def _seq_len(ctx: TrialContext, candidate: Candidate, max_length: int) -> int:
    # Virtual tokens (MethodSpec.virtual_tokens_param, e.g. prompt tuning's) lengthen inputs.
    extra = 0
    for m in candidate.modules:
        param = methods.get(m.method).virtual_tokens_param
        if param is not None:
            extra += int(m.params.get(param, 0))
    return int(ctx.train_split(max_length).lengths.max()) + extra


def trains_embeddings(candidate: Candidate) -> bool:
    """Whether a module's gradient reaches the input embeddings (``trains_embeddings``)."""
    return any(methods.get(name).trains_embeddings for name in candidate.methods)


def check_budget(ctx: TrialContext, candidate: Candidate) -> tuple[int, float, str | None]:
    """Exact parameters, predicted memory, and why the candidate is over budget (or None)."""
    prof = ctx.profile
    levers = trial_levers(ctx, candidate)
    params = candidate_params(candidate, prof, methods.registry())
    pred = predict_memory(
        prof,
        candidate,
        params,
        levers.micro_batch_size,
        _seq_len(ctx, candidate, levers.max_length),
        ctx.device.type,
        embeddings_trained=trains_embeddings(candidate),
        workspace_bytes=cuda_workspace_bytes(ctx.device),
        levers=levers,
        methods=methods.registry(),
    ).total_mb
    why = method_violation(candidate, prof, methods.registry())
    return params, pred, why or ctx.budget.violation(params, pred, prof.base_params)


def run_trial(
    ctx: TrialContext,
    candidate: Candidate,
    steps: int | None = None,
    report: Report | None = None,
    eval_at: set[int] | frozenset[int] = frozenset(),
) -> TrialResult:
    """Train ``candidate`` for ``steps`` (default: the study's full fidelity) and measure it.

    Never raises for a trial's own failure: over budget or out of memory -> INFEASIBLE;
    NaN/inf loss or any exception -> FAILED with the reason; stopped by ``report`` -> PRUNED.
    """
    cfg = trial_training(ctx.config.training, candidate)
    levers = trial_levers(ctx, candidate)
    target = steps or cfg.steps
    params, predicted, over = check_budget(ctx, candidate)
    base: dict[str, Any] = dict(
        candidate=candidate,
        trainable_params=params,
        head_params=ctx.profile.head_params,
        predicted_memory_mb=predicted,
        target_steps=target,
    )
    if over:
        return TrialResult(status=TrialStatus.INFEASIBLE, error=over, **base)
    started = time.perf_counter()
    adapted = None
    try:
        torch.manual_seed(cfg.seed)
        model = prepare_base(levers, ctx.base_model, ctx.load_quantized)
        adapted = build_adapted(model, ctx.profile, candidate, total_steps=cfg.steps)
        trainable_in_fp32(adapted.model)
        adapted.precision = levers.dtype
        train = ctx.train_split(levers.max_length)
        if adapted.trainable_params != params:
            raise RuntimeError(
                f"built model has {adapted.trainable_params} trainable parameters, the formula "
                f"says {params}: a bug in the method's formula"
            )
        # Data-driven initialisation (LoRA's EVA) sees a few training batches first.
        for m in candidate.modules:
            batches = train.batches(levers.micro_batch_size, cfg.seed + 1, DATA_INIT_BATCHES)
            methods.get(m.method).data_init(adapted.model, batches, m)
        if ctx.before_training:
            ctx.before_training(adapted)
        memory_kind = MemoryKind.CUDA if ctx.device.type == "cuda" else MemoryKind.CPU_ESTIMATE
        peak = None
        if memory_kind is MemoryKind.CPU_ESTIMATE:  # the heaviest micro batch: its longest rows
            longest = train.lengths.argsort(descending=True)[: levers.micro_batch_size]
            peak = cpu_step_peak_mb(adapted, train.batch(longest))
            torch.manual_seed(cfg.seed)
        with cuda_peak(ctx.device) as cuda_box:
            out = train_and_eval(
                adapted,
                train,
                ctx.data["validation"],
                cfg,
                target,
                report,
                ctx.device,
                eval_at,
                ctx.evaluator(during=True),
                ctx.evaluator(),
            )
        peak = cuda_box[0] if memory_kind is MemoryKind.CUDA else peak
        if cfg.max_length is not None:
            out.metrics["truncated_share"] = ctx.truncated_share(levers.max_length)
        if ctx.weights_dir is not None and not out.stopped_early:
            save_trainable(
                adapted, weights_path(ctx.weights_dir, candidate, ctx.config.training.seed)
            )
        wall = time.perf_counter() - started
        return TrialResult(
            status=TrialStatus.PRUNED if out.stopped_early else TrialStatus.COMPLETE,
            metrics=out.metrics,
            peak_memory_mb=peak,
            memory_kind=memory_kind,
            wall_time_s=wall,
            steps=out.steps,
            tokens_per_s=out.tokens / out.train_seconds if out.train_seconds > 0 else None,
            history=out.history,
            **base,
        )
    except torch.cuda.OutOfMemoryError as err:
        reason = f"out of device memory: {str(err).splitlines()[0] if str(err) else 'OOM'}"
        return _failed(TrialStatus.INFEASIBLE, reason, None, started, base)
    except NonFiniteLoss as err:
        return _failed(TrialStatus.FAILED, str(err), err.step, started, base)
    except Exception as err:  # noqa: BLE001 -- any trial error is recorded, the study goes on
        where = traceback.extract_tb(err.__traceback__)[-1]
        reason = f"{type(err).__name__}: {err} (at {Path(where.filename).name}:{where.lineno})"
        return _failed(TrialStatus.FAILED, reason, None, started, base)
    finally:
        del adapted
        _release(ctx.device)


def _failed(status, reason, step, started, base) -> TrialResult:
    return TrialResult(
        status=status,
        error=reason,
        error_step=step,
        wall_time_s=time.perf_counter() - started,
        **base,
    )


def _release(device: torch.device) -> None:
    # Free the trial's tensors before the next trial (after an OOM especially). A stop
    # signal during the collection would run inside a finaliser or a weak reference's
    # callback, where Python drops the interrupt: held, it interrupts the trial here.
    with stop.deferred():
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

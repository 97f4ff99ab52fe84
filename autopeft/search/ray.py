"""The Ray Tune executor: several trials at once, on one machine or a Ray cluster.

- :class:`StudySearcher`, a thin Ray ``Searcher`` over the :class:`Study` — not Ray's
  ``OptunaSearch``, which records early-stopped trials as COMPLETE with truncated values. It
  asks the study's own sampler (running trials are pending, so workers don't duplicate) and
  tells every result through the study's one ``tell`` path.
- :class:`ParetoHalvingScheduler`, a Ray ``TrialScheduler`` applying the same pure rule as
  the local executor (:class:`autopeft.core.halving.HalvingRule`) at each rung; the trials
  it stops are told PRUNED.
- Workers keep the loaded model and tokenised task in a per-process cache, and actors are
  reused, so a model is loaded once per worker, not once per trial. With GPUs, several
  trials share one GPU through fractional GPU resources (default chosen from the space's
  largest predicted memory).
Only the driver touches the study's storage, so the embedded SQLite works with Ray too.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from autopeft import tasks
from autopeft.core.candidate import Candidate
from autopeft.core.halving import HalvingRule, rung_steps
from autopeft.core.result import TrialResult, TrialStatus
from autopeft.core.study_config import StudyConfig
from autopeft.search.study import REUSABLE, Study

_RUNNERS: dict[str, Any] = {}  # per worker process: loaded once, reused across trials


def _runner(config_json: str, cache_dir: str, kind: str):
    key = f"{kind}|{config_json}"
    if key not in _RUNNERS:
        config = StudyConfig.model_validate_json(config_json)
        if kind == "blackbox":
            from autopeft.search.blackbox import BlackboxRunner
            from autopeft.search.study import model_profile

            _RUNNERS[key] = BlackboxRunner(
                model_profile(config.model, head=tasks.get(config.task.kind).head),
                config.training,
                config.search_space.budget,
            )
        else:
            from autopeft.search.local import TrainingRunner
            from autopeft.train.trial import TrialContext

            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            ctx = TrialContext.create(config, cache_dir=Path(cache_dir))
            ctx.weights_dir = Path(cache_dir).parent / "weights"  # the study folder's
            _RUNNERS[key] = TrainingRunner(ctx)
    return _RUNNERS[key]


def trial_function(trial_config: dict, config_json: str, cache_dir: str, kind: str) -> None:
    """What a Ray worker runs for one trial: train, report each rung, then the final result."""
    runner = _runner(config_json, cache_dir, kind)
    candidate = Candidate.model_validate(trial_config["candidate"])
    config = StudyConfig.model_validate_json(config_json)
    base = {"number": trial_config["number"], "params": trial_config["params"]}
    base["predicted_memory"] = trial_config["predicted_memory"]

    def report(step: int, metrics: dict[str, float]) -> bool:
        tune.report(
            {
                **base,
                "step": step,
                "metric": config.rung_score(metrics),  # higher is better, as the scheduler wants
                "final": False,
                "metrics": json.dumps(metrics),
            }
        )
        return True  # the scheduler stops the trial by ending this function

    result = runner.run(candidate, report, set(trial_config["eval_at"]))
    base["worker_pid"] = os.getpid()
    base["worker_node"] = ray.get_runtime_context().get_node_id()
    tune.report(
        {
            **base,
            "step": result.steps,
            "metric": config.task_score(result.metrics) or 0.0,
            "final": True,
            "result": result.model_dump_json(),
        }
    )


class ParetoHalvingScheduler(FIFOScheduler):
    """Stops a trial at a rung when the halving rule says so (see :mod:`core.halving`)."""

    def __init__(self, study: Study, rule: HalvingRule, rungs: list[int]):
        super().__init__()
        self.study, self.rule = study, rule
        self.rungs = set(rungs[:-1])  # the last rung is the full fidelity
        self.points: dict[int, dict[int, list[float]]] = {
            step: dict(enumerate(study.rung_points(step))) for step in self.rungs
        }
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """CONTINUE, or STOP at a rung where the trial is not among the best 1/eta."""
        step = result.get("step")
        if result.get("final") or step not in self.rungs:
            return TrialScheduler.CONTINUE
        number = int(result["number"])
        point = [
            float(result["metric"]),
            float(result["params"]),
            float(result["predicted_memory"]),
        ]
        peers = [p for n, p in self.points[step].items() if n != -number - 1]
        self.points[step][-number - 1] = point  # negative keys: this run's trials
        self.study.record_rung(number, step, point)
        finished = self.study.rung_outcomes(step) if self.rule.stop_hopeless else []
        if self.rule.should_continue(point, peers, finished):
            return TrialScheduler.CONTINUE
        self.stopped.add(trial.trial_id)
        return TrialScheduler.STOP


class StudySearcher(Searcher):
    """Suggests candidates from the study's sampler and tells results back to the study."""

    def __init__(self, study: Study, n_trials: int, rungs: list[int], runner_budget, listener=None):
        super().__init__(metric="metric", mode="max")
        self.study, self.n_trials, self.rungs = study, n_trials, rungs
        self.budget = runner_budget
        self.listener = listener
        self.numbers: dict[str, int] = {}
        self.scheduler: ParetoHalvingScheduler | None = None
        self.known = study.known_results()  # re-proposed candidates reuse these results
        self.exhausted = False

    def _remaining(self) -> int:
        return self.n_trials - self.study.n_done() - len(self.numbers)

    def suggest(self, trial_id: str) -> dict | str | None:
        """The next candidate, or FINISHED once enough trials are done or running."""
        if self._remaining() <= 0 or self.exhausted:
            return Searcher.FINISHED if not self.numbers else None
        proposal = self.study.propose(self.known)
        if proposal is None:  # only known candidates proposed: finish with what runs
            self.exhausted = True
            return Searcher.FINISHED if not self.numbers else None
        trial, candidate = proposal
        params, predicted, _ = self.budget(candidate)
        self.numbers[trial_id] = trial.number
        return {
            "number": trial.number,
            "candidate": candidate.to_json(),
            "params": params,
            "predicted_memory": predicted,
            "eval_at": self.rungs,
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Tell the study: the worker's result, PRUNED if the scheduler stopped it, or FAILED."""
        number = self.numbers.pop(trial_id, None)
        if number is None:
            return
        res = self._result(trial_id, number, result, error)
        if result and result.get("worker_pid"):
            storage, tid = self.study.optuna._storage, self.study._trial_id(number)
            storage.set_trial_user_attr(tid, "worker_pid", int(result["worker_pid"]))
            storage.set_trial_user_attr(tid, "worker_node", str(result.get("worker_node")))
        self.study.tell(number, res)
        if res.status in REUSABLE:
            self.known[res.candidate.key()] = res
        if self.listener:
            self.listener(number, res)

    def _result(self, trial_id: str, number: int, result: dict | None, error: bool) -> TrialResult:
        frozen = self.study.optuna._storage.get_trial(self.study._trial_id(number))
        candidate = Candidate.model_validate(frozen.user_attrs["candidate"])
        if result and result.get("final") and result.get("result"):
            return TrialResult.model_validate_json(result["result"])
        base = dict(
            candidate=candidate,
            trainable_params=int(result["params"]) if result else 0,
            predicted_memory_mb=float(result["predicted_memory"]) if result else None,
            head_params=self.study.profile.head_params,
            target_steps=self.study.config.training.steps,
        )
        if result and self.scheduler and trial_id in self.scheduler.stopped and not error:
            metrics = json.loads(result.get("metrics", "{}"))
            history = [{"step": float(result["step"]), **metrics}]
            return TrialResult(
                status=TrialStatus.PRUNED,
                metrics=metrics,
                steps=int(result["step"]),
                history=history,
                **base,
            )
        reason = "the Ray worker failed (see the Ray logs of this trial)" if error else "no result"
        return TrialResult(status=TrialStatus.FAILED, error=reason, **base)


def run_ray(
    study: Study,
    n_trials: int,
    *,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
    halving: bool | None = None,
    runner: str = "training",
    max_failures: int = 1,
    progress: bool = True,
) -> Study:
    """Run the study on Ray until it holds ``n_trials`` finished trials.

    Args:
        study: the study (its storage is only touched by this driver process).
        n_trials: total finished trials wanted; a restarted driver continues.
        address: a Ray cluster (``auto``, ``ray://host:port``); None starts a local Ray.
        cpus_per_trial: CPUs per trial.
        gpus_per_trial: GPU fraction per trial; None: chosen from predicted memory.
        max_concurrent: cap on simultaneous trials (None: as many as resources allow).
        halving: override the study's ``halving.enabled``.
        runner: ``training`` (real trials) or ``blackbox`` (synthetic, for tests).
        max_failures: retries of a trial whose worker died (e.g. a lost node).
        progress: show a live progress line.
    """
    from autopeft.search.local import Progress

    cfg, hcfg = study.config, study.config.halving
    enabled = hcfg.enabled if halving is None else halving
    rule = HalvingRule.from_config(hcfg)
    rungs = rung_steps(cfg.training.steps, cfg.training.rungs) if enabled else [cfg.training.steps]
    study.recover_interrupted()  # trials of a dead driver: failed and re-queued
    if not ray.is_initialized():
        # address=None must mean "a new local Ray": plain ray.init() would join any Ray
        # instance already running on this machine (another study's, a test's).
        ray.init(
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    budget = study.driver_budget
    gpus = (
        _gpu_fraction(study, budget, cpus_per_trial) if gpus_per_trial is None else gpus_per_trial
    )
    if max_concurrent is None:
        batch = cfg.sampler.batch_size
        max_concurrent = batch if batch else (4 if cfg.sampler.name == "autopeft" else None)
    display = Progress(study, n_trials) if progress else None
    searcher = StudySearcher(
        study, n_trials, rungs, budget, listener=display.update if display else None
    )
    scheduler = ParetoHalvingScheduler(study, rule, rungs) if enabled else FIFOScheduler()
    searcher.scheduler = scheduler if enabled else None
    trainable = tune.with_parameters(
        trial_function,
        config_json=cfg.model_dump_json(),
        cache_dir=str((study.folder / "cache").resolve()),
        kind=runner,
    )
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            reuse_actors=True,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=str((study.folder / "ray").resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    try:
        tuner.fit()
    finally:
        if display:
            display.close()
    return study


MAX_TRIALS_PER_GPU = 16
MEMORY_HEADROOM = 1.3  # predicted memory is a model: room for its error and the allocator's
#: What each trial process holds on its GPU outside PyTorch's allocator (the CUDA context and
#: the kernels of cuBLAS & co.), which the memory model does not predict. On the H200, 16
#: packed MiniLM trials showed 9,348 MiB in nvidia-smi, ~584 MiB a process of which the
#: allocator's peak was ~200-300 (bench/results/throughput_gpu_minilm_lora.md).
CUDA_CONTEXT_MB = 512


def gpu_share(worst_mb: float, gpu_mb: float, cpus_per_gpu: float, cpus_per_trial: float) -> float:
    """GPU share per trial: as many trials per GPU as its memory and the CPUs beside it allow.

    Args:
        worst_mb: the largest predicted peak memory of a trial in the space (each trial's
            process holds ``CUDA_CONTEXT_MB`` more).
        gpu_mb: one GPU's memory.
        cpus_per_gpu: the cluster's CPUs per GPU (each packed trial needs its CPUs).
        cpus_per_trial: CPUs each trial reserves.

    Returns:
        ``1/n`` for ``n`` trials on a GPU (at most ``MAX_TRIALS_PER_GPU``), rounded down to
        Ray's resource precision so that ``n`` shares still fit on one GPU; 1.0 for one.
    """
    per_trial_mb = worst_mb * MEMORY_HEADROOM + CUDA_CONTEXT_MB
    by_memory = int(gpu_mb // per_trial_mb)
    by_cpus = int(cpus_per_gpu // cpus_per_trial) if cpus_per_trial > 0 else MAX_TRIALS_PER_GPU
    n = max(1, min(by_memory, by_cpus, MAX_TRIALS_PER_GPU))
    return 1.0 if n == 1 else math.floor(10_000 / n) / 10_000


def _gpu_fraction(study: Study, budget, cpus_per_trial: float) -> float:
    """GPU share per trial from the space's largest predicted trial (0 without GPUs)."""
    resources = ray.cluster_resources()
    if not resources.get("GPU"):
        return 0.0
    import torch

    gpu_mb = (
        torch.cuda.get_device_properties(0).total_memory / 2**20
        if torch.cuda.is_available()
        else 80_000
    )
    from autopeft.core.resolve import RandomSuggest

    rng = RandomSuggest(seed=0)
    worst = max(budget(study.space.sample(rng))[1] for _ in range(200))
    cpus_per_gpu = resources.get("CPU", 1.0) / resources["GPU"]
    return gpu_share(worst, gpu_mb, cpus_per_gpu, cpus_per_trial)


os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

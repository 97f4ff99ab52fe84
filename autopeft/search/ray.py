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

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, TypedDict

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from autopeft import stop, tasks
from autopeft.core.candidate import Candidate
from autopeft.core.halving import HalvingRule, rung_steps
from autopeft.core.study_config import StudyConfig
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search import samplers
from autopeft.search.local import WAIT_POLL_S, say_exhausted
from autopeft.search.proposals import DONE, EXHAUSTED, Proposer
from autopeft.search.study import Study

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

    def __getstate__(self) -> dict:
        # Pickled by Tune for `Tuner.restore` (unused, see StudySearcher.__getstate__).
        return {k: v for k, v in self.__dict__.items() if k != "study"}

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


class _Common(TypedDict):
    """The fields every result the driver builds for a trial shares, whatever its outcome."""

    candidate: Candidate
    trainable_params: int
    predicted_memory_mb: float | None
    head_params: int
    target_steps: int


class StudySearcher(Searcher):
    """Suggests candidates from the study's sampler and tells results back to the study.

    The :class:`~autopeft.search.proposals.Proposer` decides what is trained: never a
    candidate finished or running anywhere in the study, and no more than ``n_trials``
    across every driver of the study.
    """

    def __init__(self, study: Study, proposer: Proposer, rungs: list[int], budget, listener=None):
        super().__init__(metric="metric", mode="max")
        self.study, self.proposer, self.rungs = study, proposer, rungs
        self.budget = budget
        self.listener = listener
        self.numbers: dict[str, int] = {}
        self.scheduler: ParetoHalvingScheduler | None = None
        self.exhausted = False
        self._next_look = 0.0

    def __getstate__(self) -> dict:
        # Tune pickles the searcher into its experiment state for `Tuner.restore`, which
        # autopeft does not use (a rerun resumes from the study). The study, its storage
        # and the progress display do not pickle and stay out.
        return {"_metric": self._metric, "_mode": self._mode}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study's storage holds every trial."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a rerun resumes from the study (see :meth:`save`)."""

    # Ray annotates Optional[Dict] but documents (and handles) FINISHED as a return too.
    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]
        """The next candidate; None to be asked again later; FINISHED when done."""
        stop.check()  # a Ctrl-C Tune swallowed stops the driver here
        if self.exhausted or time.monotonic() < self._next_look:
            return self._finished_or_none()
        proposal = self.proposer.next()
        if proposal == EXHAUSTED:
            self.exhausted = True
            say_exhausted(self.study, self.proposer.n_trials)
        if proposal in (EXHAUSTED, DONE):
            return self._finished_or_none()
        if isinstance(proposal, str):  # WAIT: look again in a while, not at every Tune step
            self._next_look = time.monotonic() + WAIT_POLL_S
            return None
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

    def _finished_or_none(self) -> str | None:
        return Searcher.FINISHED if not self.numbers else None

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
        self.proposer.record(number, res)
        if self.listener:
            self.listener(number, res)

    def _result(self, trial_id: str, number: int, result: dict | None, error: bool) -> TrialResult:
        frozen = self.study.optuna._storage.get_trial(self.study._trial_id(number))
        candidate = Candidate.model_validate(frozen.user_attrs["candidate"])
        if result and result.get("final") and result.get("result"):
            return TrialResult.model_validate_json(result["result"])
        base = _Common(
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
    started = not ray.is_initialized()
    if started:
        _start_ray(address)
    stop.reclaim()  # ray.init's SIGTERM handler exits without handing the trials back
    display = None
    proposer = Proposer(study, n_trials)
    try:
        budget = study.driver_budget
        gpus = (
            _gpu_fraction(study, budget, cpus_per_trial)
            if gpus_per_trial is None
            else gpus_per_trial
        )
        if max_concurrent is None:
            batch = cfg.sampler.batch_size
            max_concurrent = batch if batch else samplers.get(cfg.sampler.name).default_batch_size
        display = Progress(study, n_trials) if progress else None
        searcher = StudySearcher(
            study, proposer, rungs, budget, listener=display.update if display else None
        )
        halver = ParetoHalvingScheduler(study, rule, rungs) if enabled else None
        searcher.scheduler = halver
        scheduler = FIFOScheduler() if halver is None else halver
        trainable = tune.with_parameters(
            trial_function,
            # Workers never open the study: its storage URL (and password) stays here.
            config_json=cfg.model_copy(update={"storage": None}).model_dump_json(),
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
        tuner.fit()
        stop.check()  # Tune may have swallowed a Ctrl-C and stopped early
        proposer.drain()  # trials waiting on another driver's identical candidate
    except KeyboardInterrupt:
        proposer.interrupt()  # failed as interrupted and re-queued: a rerun re-runs them
        raise
    finally:
        if display:
            display.close()
        if started:
            ray.shutdown()  # a local Ray goes with its driver; a cluster is only left
    return study


#: Ray's warnings that are noise for an autopeft user: the token-auth notice (the local
#: Ray listens on 127.0.0.1 only) and Tune's notes on checkpoints autopeft does not use.
_QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup",)


def _start_ray(address: str | None) -> None:
    """Start a local Ray (bound to 127.0.0.1) or connect to the cluster at ``address``."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    kwargs: dict[str, Any] = dict(
        include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    if address:
        ray.init(address=address, **kwargs)
        return
    # address="local", not None: plain ray.init() would join any Ray already running on this
    # machine (another study's, a test's). Ray resolves a 127.0.0.1 node address to the
    # host's routable one unless clusters are off, and its servers then listen on every
    # interface: with clusters off for the start, they listen on 127.0.0.1 only.
    with _loopback_only(), stop.children_ignore_hang_up():
        ray.init(address="local", **kwargs)


@contextlib.contextmanager
def _loopback_only():
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


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
# Ctrl-C reaches autopeft (one line, exit 130, trials marked interrupted) instead of Tune's
# handler, which stops the experiment, prints a `Tuner.restore` hint and returns normally.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

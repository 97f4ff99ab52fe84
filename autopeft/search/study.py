"""The Study: an Optuna study in a storage URL, holding every trial's full TrialResult.

One ``tell`` path serves every executor, so the Optuna study stays truthful for
optuna-dashboard: parameters have readable names (``lora.rank``, ``placement.layer_3``),
each trial carries its ``TrialResult`` JSON and status in user attributes, and the states map
as COMPLETE -> COMPLETE, PRUNED -> PRUNED, FAILED -> FAIL, INFEASIBLE -> COMPLETE with a
violated constraint (so constraint-aware samplers learn it and it never reaches the front).
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import optuna
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.study._tell import _check_values_are_feasible
from optuna.trial import TrialState

from autopeft import methods, tasks
from autopeft.core.candidate import Candidate
from autopeft.core.levers import Levers
from autopeft.core.memory_model import predict_memory
from autopeft.core.model_profile import ModelProfile, load_profile
from autopeft.core.objectives import METRICS
from autopeft.core.pareto import hypervolume, known
from autopeft.core.resolve import ResolvedSpace, candidate_params
from autopeft.core.study_config import StudyConfig, trial_training
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search import proposals
from autopeft.search.ledger import INTERRUPTED_ATTR as INTERRUPTED_ATTR
from autopeft.search.ledger import RESULT_ATTR as RESULT_ATTR
from autopeft.search.ledger import REUSABLE as REUSABLE
from autopeft.search.ledger import REUSED_ATTR as REUSED_ATTR
from autopeft.search.ledger import Ledger
from autopeft.search.pool import Oracle
from autopeft.search.samplers import make_sampler
from autopeft.search.storage import CONFIG_ATTR as CONFIG_ATTR
from autopeft.search.storage import (
    InterruptSafeStorage,
    StaleTrials,
    keep_config,
    open_storage,
)

if TYPE_CHECKING:
    import pandas as pd

    from autopeft.search.scratch import Draft

STATUS_ATTR = "status"
#: The system attribute of Optuna's constraint ``budget`` (``Trial.set_constraint``).
BUDGET_CONSTRAINT = f"{_CONSTRAINTS_KEY}:budget"
CANDIDATE_ATTR = "candidate"
RETRY_OF_ATTR = "retry_of"
#: Consecutive re-proposals of known candidates after which a search stops (the space is
#: exhausted, or nearly); each costs a sampler call but no training.
REPEAT_LIMIT = 100


def rung_attr(step: int) -> str:
    """The user attribute holding a trial's point at the halving rung at ``step``."""
    return f"rung_{step}"


optuna.logging.set_verbosity(optuna.logging.WARNING)


class TrialRecord(NamedTuple):
    """A told trial: its number and its full result."""

    number: int
    result: TrialResult


def model_profile(name: str, num_labels: int = 2, head: str = "classifier") -> ModelProfile:
    """The torch-free profile of a model (bundled, tiny, local or a cached hub id)."""
    return load_profile(name, num_labels, head)


def default_storage(folder: Path) -> str:
    """SQLite in the study folder (the embedded default)."""
    return f"sqlite:///{(folder / 'study.db').resolve()}"


class Study:
    """A search over one :class:`StudyConfig`, persisted in an Optuna storage."""

    def __init__(
        self,
        config: StudyConfig,
        root: str | Path = "studies",
        storage: str | None = None,
        num_labels: int = 2,
        heartbeat: tuple[int, int] = (5, 30),
        read_only: bool = False,
    ):
        """Open (or create) the study.

        Args:
            config: the validated study file.
            root: folder of study folders.
            storage: an Optuna storage URL (default: the config's, else SQLite in the folder).
            num_labels: classes of the task (for the model profile).
            heartbeat: (interval, grace) seconds for shared server storages: a trial whose
                driver stopped sending heartbeats for ``grace`` seconds is re-run.
            read_only: open an existing study to read it (export, report, reeval): no
                folder is made and the stored configuration is neither checked nor replaced.
        """
        self.config = config
        self.heartbeat = heartbeat
        self._owned: set[int] = set()
        self._beat: threading.Thread | None = None
        self._rlock = threading.RLock()  # see proposals.study_lock
        self._lock_depth = 0
        self.folder = Path(root) / config.name
        if not read_only:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.storage_url = storage or config.storage or default_storage(self.folder)
        self.sqlite_path = proposals.sqlite_path(self.storage_url)
        self.profile = model_profile(config.model, num_labels, tasks.get(config.task.kind).head)
        self.space = ResolvedSpace(config.search_space, self.profile, methods.registry())
        self.metrics = [o.metric for o in config.objectives]
        self.directions = [o.direction for o in config.objectives]
        #: The finished trials as this driver has read them (see :meth:`synced`).
        self.ledger = Ledger(self.directions, self.values_of)
        self._hypervolume: tuple[tuple, float] | None = None
        #: What the BO samplers know of a candidate untrained; executors with a runner set
        #: ``oracle.predict`` to its budget check (the real sequence length and device).
        self.oracle = Oracle(
            self.space, self.profile, config.search_space.budget, self.driver_budget
        )
        self.optuna = optuna.create_study(
            study_name=config.name,
            storage=InterruptSafeStorage(
                optuna.storages.get_storage(
                    open_storage(self.storage_url, self.shared, self.heartbeat)
                )
            ),
            directions=self.directions,
            sampler=optuna.samplers.RandomSampler(),  # replaced below, once seeded
            load_if_exists=True,
        )
        #: This driver's number among the drivers that opened the study (None: read-only).
        self.driver = None if read_only else proposals.new_driver(self)
        #: Finds the trials of dead drivers (a shared storage's only).
        grace = self.heartbeat[1]
        self._stale = StaleTrials(self._rdb, self.optuna._study_id, grace) if self.shared else None
        #: The seed of this driver's random stream (see proposals.driver_seed).
        self.sampler_seed = proposals.driver_seed(config.sampler.seed, self.driver or 0)
        self.optuna.sampler = make_sampler(
            config.sampler.model_copy(update={"seed": self.sampler_seed}),
            self.oracle,
            self.metrics,
            self.pruned_values,
        )
        if not read_only:
            keep_config(self.optuna, config, self.folder, self.shared)
            if self.optuna.metric_names != self.metrics:
                # optuna-dashboard then labels the objectives (exact_match, ...), not values_0.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self.optuna.set_metric_names(self.metrics)

    def driver_budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """Exact parameters and predicted memory (at the longest training rows) on the driver.

        The driver loads no model or data, so it leaves the memory budget to the trial's own
        check on the real data (``run_trial``), which is what decides INFEASIBLE.
        """
        params = candidate_params(candidate, self.profile, methods.registry())
        lev = Levers.of(
            trial_training(self.config.training, candidate), self.config.task.max_length
        )
        pred = predict_memory(
            self.profile,
            candidate,
            params,
            lev.micro_batch_size,
            lev.max_length,
            levers=lev,
            methods=methods.registry(),
        )
        return params, pred.total_mb, None

    @property
    def shared(self) -> bool:
        """Whether several drivers may share the storage (a database server, not SQLite)."""
        return self.storage_url.startswith(("postgresql", "mysql"))

    # -- ask / tell --------------------------------------------------------------------------

    def ask(self) -> tuple[optuna.Trial, Candidate]:
        """A new trial and its candidate, sampled define-by-run by the study's sampler."""
        trial = self.optuna.ask()
        if self.shared:
            self._own(trial._trial_id)
        candidate = self.space.sample(trial)
        trial.set_user_attr(CANDIDATE_ATTR, candidate.to_json())
        return trial, candidate

    def synced(self) -> Ledger:
        """The ledger of finished trials, brought up to date with one read of the storage.

        Trials finished since the last read (by any driver) are taken in; unfinished ones
        are read afresh every time (see :mod:`autopeft.search.ledger`).
        """
        self.ledger.sync(self.optuna.get_trials(deepcopy=False))
        return self.ledger

    @functools.cached_property
    def space_size(self) -> float:
        """Distinct parameter assignments of the space (computed once)."""
        return self.space.size()

    def _own(self, trial_id: int) -> None:
        # Heartbeats tell other drivers this trial is alive (shared storages only).
        self._rdb.record_heartbeat(trial_id)
        self._owned.add(trial_id)
        if self._beat is None:
            self._beat = threading.Thread(target=self._beat_loop, daemon=True)
            self._beat.start()

    @property
    def _rdb(self) -> Any:
        """The RDB storage's heartbeat API (typed as the base storage by Optuna)."""
        return self.optuna._storage

    def _beat_loop(self) -> None:
        while True:
            time.sleep(self.heartbeat[0])
            for trial_id in list(self._owned):
                try:
                    self._rdb.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 -- a transient DB error must not stop the driver
                    pass

    def tell(self, trial: optuna.Trial | int, result: TrialResult, reused: bool = False) -> None:
        """Record a finished trial (the one path for every executor).

        ``reused``: the result is that of an identical candidate trained before (marked so in
        the trial's user attributes, and not counted as compute).
        """
        number = trial if isinstance(trial, int) else trial.number
        tid = self._trial_id(number)
        storage: Any = self.optuna._storage  # an InterruptSafeStorage: finish_trial
        self._owned.discard(tid)
        attrs = self._result_attrs(result, reused)
        state, values, constraints = self._outcome(result)
        # Optuna's tell, with the trial's result and its state in one write: the checks,
        # then the sampler's post-processing of the trial as it will be stored.
        frozen = copy.copy(storage.get_trial(tid))
        if frozen.state.is_finished():  # as the storage's first write would refuse it
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{number} has already finished and can not be updated."
            )
        if values is not None and (problem := _check_values_are_feasible(self.optuna, values)):
            warnings.warn(problem, stacklevel=2)  # as Optuna: the trial fails
            state, values = TrialState.FAIL, None
        frozen.user_attrs = {**frozen.user_attrs, **attrs}
        frozen.system_attrs = {**frozen.system_attrs, **constraints}
        self.optuna._thread_local.cached_all_trials = None
        try:
            self.optuna.sampler.after_trial(self.optuna, frozen, state, values)
        finally:
            storage.finish_trial(tid, attrs, constraints, state, values)
        # Finished and so final: the ledger takes it in now, without reading it back.
        self.ledger.told(number, result, reused)

    def store_reused(self, draft: Draft, result: TrialResult, user_attrs: dict) -> int:
        """Store a drafted re-proposal of a known candidate with its result, in one write.

        The same trial as :meth:`tell` of a stored copy leaves (see :mod:`.scratch`);
        returns its number.
        """
        state, values, constraints = self._outcome(result)
        attrs = {**user_attrs, **self._result_attrs(result, reused=True)}
        trial_id = draft.stored(self.optuna, attrs, state, values, constraints)
        frozen = self.optuna._storage.get_trial(trial_id)  # optuna's cache keeps it: no read
        self.optuna.sampler.after_trial(self.optuna, frozen, state, values)
        self.ledger.told(frozen.number, result, True)
        return frozen.number

    @staticmethod
    def _result_attrs(result: TrialResult, reused: bool) -> dict[str, Any]:
        attrs: dict[str, Any] = {REUSED_ATTR: True} if reused else {}
        attrs[RESULT_ATTR] = json.loads(result.model_dump_json())
        attrs[STATUS_ATTR] = result.status.value
        if result.error:
            attrs["error"] = result.error
        return attrs

    def _outcome(self, result: TrialResult) -> tuple[TrialState, list[float] | None, dict]:
        """The Optuna state, values and constraint (as system attributes) of a result.

        The ``budget`` constraint is Optuna's own (``Trial.set_constraint``): an infeasible
        trial keeps its values, and the samplers learn it as infeasible.
        """
        values = known(self.values_of(result))
        if result.status is TrialStatus.INFEASIBLE and values is not None:
            return TrialState.COMPLETE, values, {BUDGET_CONSTRAINT: 1.0}
        if result.status is TrialStatus.COMPLETE and values is not None:
            return TrialState.COMPLETE, values, {BUDGET_CONSTRAINT: 0.0}
        if result.status is TrialStatus.PRUNED:
            return TrialState.PRUNED, None, {}
        return TrialState.FAIL, None, {}

    def values_of(self, result: TrialResult) -> list[float | None]:
        """Objective values of a result (see :meth:`TrialResult.objective_values`)."""
        return result.objective_values(self.metrics, self.directions)

    def pruned_values(self, trial: optuna.trial.FrozenTrial) -> tuple[list[float], float] | None:
        """A pruned trial's objective values where halving stopped it and its fidelity.

        The fidelity is the fraction of its training it ran. For the BO samplers; None when
        the trial recorded no result.
        """
        result = self.ledger.result(trial)  # parsed once per finished trial
        if result is None:
            return None
        values = known(self.values_of(result))
        if values is None or not result.target_steps:
            return None
        return values, result.steps / result.target_steps

    def _trial_id(self, number: int) -> int:
        return self.optuna._storage.get_trial_id_from_study_id_trial_number(
            self.optuna._study_id, number
        )

    # -- successive halving support ----------------------------------------------------------

    def record_rung(self, trial_number: int, step: int, point: list[float]) -> None:
        """Store a trial's (rung score, params, predicted memory) at a rung for its peers.

        The rung score is the rung metric signed so that higher is better
        (``StudyConfig.rung_score``), as the halving rule expects.
        """
        self.optuna._storage.set_trial_user_attr(
            self._trial_id(trial_number), rung_attr(step), point
        )

    def rung_points(self, step: int, exclude: int | None = None) -> list[list[float]]:
        """Points recorded at rung ``step`` by other trials."""
        return self.rung_evidence(step, exclude)[0]

    def rung_outcomes(self, step: int) -> list[tuple[list[float], list[float]]]:
        """(point at rung ``step``, point at the end) of the trials that finished from there.

        The end point is the trial's full-fidelity rung metric with the same exact
        costs; trials that completed without recording the rung (or were reused) are left out.
        """
        return self.rung_evidence(step, outcomes=True)[1]

    def rung_evidence(
        self, step: int, exclude: int | None = None, outcomes: bool = False
    ) -> tuple[list[list[float]], list[tuple[list[float], list[float]]]]:
        """Peers' points at rung ``step`` and, if ``outcomes``, the finished ones' outcomes.

        One storage read for both, as a rung decision needs both (see :meth:`rung_points`
        and :meth:`rung_outcomes`).
        """
        key = rung_attr(step)
        peers: list[list[float]] = []
        finished: list[tuple[list[float], list[float]]] = []
        for t in self.optuna.get_trials(deepcopy=False):
            rung = t.user_attrs.get(key)
            if rung is None or t.number == exclude:
                continue
            peers.append(rung)
            # INFEASIBLE trials are COMPLETE in Optuna too: the status attribute tells them.
            if (
                not outcomes
                or t.state != TrialState.COMPLETE
                or t.user_attrs.get(STATUS_ATTR) != TrialStatus.COMPLETE.value
            ):
                continue
            final = self.config.halving_score(t.user_attrs[RESULT_ATTR]["metrics"])
            if final is not None:
                finished.append((rung, [final, *rung[1:]]))
        return peers, finished

    # -- resume ------------------------------------------------------------------------------

    def recover_interrupted(self) -> list[int]:
        """Finish the trials of dead drivers; returns those whose parameters were re-queued.

        With SQLite (one driver at a time) every RUNNING trial at start-up is interrupted.
        With a shared server storage only trials whose driver stopped sending heartbeats for
        the grace period (or never sent one: see :class:`StaleTrials`) are; drivers call this
        before asking, so a live driver picks up the trials of a dead one. See
        :func:`proposals.recover`: a trial that recorded its result is told from it; any
        other is failed as interrupted and re-queued once.
        """
        if self.shared:  # asked before every proposal: the trials are read only if needed
            assert self._stale is not None
            stale = self._stale.find(self._owned)
            if not stale:
                return []
        running = self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if self.shared:
            running = [t for t in running if t._trial_id in stale]
        return proposals.recover(self, running) if running else []

    def fail_copy(self, number: int, reason: str) -> None:
        """Fail a waiting trial whose original ended without a result (not counted)."""
        storage, tid = self.optuna._storage, self._trial_id(number)
        self._owned.discard(tid)
        storage.set_trial_user_attr(tid, REUSED_ATTR, True)
        storage.set_trial_user_attr(tid, "error", reason)
        self.optuna.tell(number, state=TrialState.FAIL)

    def n_done(self) -> int:
        """Finished trials that count towards ``n_trials``.

        Interrupted trials (re-run) and reused ones (a re-proposed candidate that took over an
        earlier result, nothing trained) do not count.
        """
        return self.synced().counted

    # -- results -----------------------------------------------------------------------------

    def results(self, trials: list[optuna.trial.FrozenTrial] | None = None) -> list[TrialRecord]:
        """Every told trial's result (of ``trials``, default all), by trial number."""
        if trials is None:
            return [TrialRecord(n, r) for n, r in sorted(self.synced().records.items())]
        # Each finished trial is parsed once, then taken from the ledger.
        return [
            TrialRecord(t.number, r)
            for t in trials
            if t.state.is_finished() and (r := self.ledger.result(t)) is not None
        ]

    def front_points(self) -> list[TrialRecord]:
        """Non-dominated COMPLETE trials (infeasible, pruned and failed ones never appear).

        A candidate appears once: trials that reused an earlier identical result are left out.
        """
        front = self.synced().front  # kept up to date trial by trial (see the ledger)
        return [TrialRecord(n, front[n].result) for n in sorted(front)]

    def hypervolume(self, reference: list[float] | None = None, read: bool = True) -> float:
        """Hypervolume of the front (reference derived from the space when not given).

        ``read`` False: of the trials as this driver last read or told them (no storage
        read; the progress display's). Computed again only when the front or the reference
        changed since the last call.
        """
        ledger = self.synced() if read else self.ledger
        ref = reference or self._reference(ledger)
        key = (ledger.version, tuple(ref))
        if self._hypervolume is None or self._hypervolume[0] != key:
            front = [ledger.front[n].values for n in sorted(ledger.front)]
            self._hypervolume = key, hypervolume(front, ref, self.directions)
        return self._hypervolume[1]

    def reference_point(self) -> list[float]:
        """A reference point for the hypervolume, derived from the study.

        Worst task metric, the space's largest parameter count and the largest memory seen
        (both x1.1), so hypervolumes of one study compare over time.
        """
        return self._reference(self.synced())

    def _reference(self, ledger: Ledger) -> list[float]:
        _, hi = self.param_range
        ref = []
        for i, (metric, direction) in enumerate(zip(self.metrics, self.directions)):
            if direction == "maximize":
                ref.append(0.0 if metric != "mcc" else -1.0)
            elif metric == "trainable_params":
                ref.append(1.1 * max(hi, 1))
            else:
                top = ledger.largest[i]
                ref.append(1.1 * (1.0 if top is None else top))
        return ref

    @functools.cached_property
    def param_range(self) -> tuple[int, int]:
        """Smallest and largest trainable-parameter count over the space (computed once)."""
        return self.space.param_range()

    def best(self, metric: str | None = None, max_params: int | None = None) -> TrialRecord:
        """The front point best on ``metric`` (default: the first objective).

        Optionally only among points with at most ``max_params`` trainable parameters.
        """
        metric = metric or self.metrics[0]
        sign = 1.0 if self.direction_of(metric) == "maximize" else -1.0
        pool = [
            TrialRecord(n, r)
            for n, r in self.front_points()
            if max_params is None or r.trainable_params <= max_params
        ]
        if not pool:
            raise ValueError("no front point satisfies the request")

        def score(item: TrialRecord) -> float:
            value = item.result.objective(metric)
            return float("-inf") if value is None else sign * value

        return max(pool, key=score)

    def direction_of(self, metric: str) -> str:
        """Whether ``metric`` is better higher (``maximize``) or lower, as the study sees it."""
        for name, direction in zip(self.metrics, self.directions):
            if name == metric:
                return direction
        if metric == self.config.task.metric:
            return self.config.task_direction
        return METRICS.get(metric, "maximize")

    def trials(self) -> pd.DataFrame:
        """Every trial as a DataFrame: one column per objective, metric and parameter.

        See :mod:`autopeft.search.frames` for the columns.
        """
        from autopeft.search.frames import trials_frame

        return trials_frame(self)

    def front(self) -> pd.DataFrame:
        """The Pareto front as a DataFrame (the columns of :meth:`trials`)."""
        from autopeft.search.frames import front_frame

        return front_frame(self)

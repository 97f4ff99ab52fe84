"""Who trains what, when processes share a study, get killed or are interrupted.

- :func:`study_lock` serialises the few storage steps that must not interleave between
  drivers: taking a slot of ``n_trials``, claiming a candidate, recovering dead trials,
  numbering drivers. It is held for a few statements, never while sampling or training:
  a PostgreSQL advisory lock on a shared storage, a file lock beside a SQLite file.
- :class:`Proposer` hands a driver (local or Ray) the next candidate to train. A candidate
  already finished anywhere in the study takes over that result (``reused``); one that is
  RUNNING anywhere (this driver, a Ray worker, another driver) is not trained again either:
  the new trial *waits* for it and copies its result when it ends. ``n_trials`` counts the
  finished trials plus those running, so several drivers stop exactly at ``n_trials``.
  The sampler drafts a new trial in memory (:mod:`autopeft.search.scratch`); whichever of
  the three it becomes is stored in one write.
- :func:`recover` finishes a trial whose process died: one that recorded its result is told
  from it (a kill inside ``tell`` loses nothing), any other is failed as interrupted and its
  parameters are queued again exactly once (the retry is found by ``retry_of``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft import stop
from autopeft.core.candidate import Candidate
from autopeft.core.trial_result import TrialResult
from autopeft.search import scratch
from autopeft.search.samplers import repeat_patience

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

    from autopeft.search.ledger import Ledger
    from autopeft.search.study import Study

#: What :meth:`Proposer.next` returns instead of a candidate.
WAIT = "wait"  # other trials hold the remaining slots (or every new candidate is running)
DONE = "done"  # n_trials finished
EXHAUSTED = "exhausted"  # the sampler proposes only known candidates

WAITS_FOR_ATTR = "waits_for"
DRIVER_ATTR = "driver"


def _attrs():
    # Imported here: study.py imports this module.
    from autopeft.search import study

    return study


@contextlib.contextmanager
def study_lock(study: Study) -> Iterator[None]:
    """Hold the study's cross-process lock (re-entrant within a thread)."""
    with study._rlock:
        study._lock_depth += 1
        try:
            if study._lock_depth > 1:
                yield
                return
            # Held signals: an interrupt between taking the lock and its release (or inside
            # the transaction holding PostgreSQL's lock) would leave it taken.
            with stop.deferred(), _process_lock(study):
                yield
        finally:
            study._lock_depth -= 1


@contextlib.contextmanager
def _process_lock(study: Study) -> Iterator[None]:
    url = study.storage_url
    if url.startswith("postgresql"):
        from sqlalchemy import text

        key = int.from_bytes(
            hashlib.sha1(f"autopeft:{study.config.name}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        storage = study.optuna._storage
        # A PostgreSQL URL always gives an RDBStorage, wrapped in optuna's cache.
        engine = cast("RDBStorage", getattr(storage, "_backend", storage)).engine
        # A transaction-level lock: released at commit, or by the server when this
        # process dies, so a killed driver cannot leave the study locked.
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            yield
    elif url.startswith("sqlite") and study.sqlite_path is not None:
        # The kernel drops a flock with its process: a SIGKILL leaves no stale lock.
        with open(f"{study.sqlite_path}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:  # an in-memory or other storage: one process, the thread lock is enough
        yield


def new_driver(study: Study) -> int:
    """Number this driver (0, 1, ...) in the order drivers opened the study."""
    with study_lock(study):
        number = int(study.optuna.user_attrs.get("drivers", 0))
        study.optuna.set_user_attr("drivers", number + 1)
    return number


def driver_seed(seed: int | None, driver: int) -> int | None:
    """The sampler seed of driver ``driver``: the study seed for the first driver.

    Two drivers started from one file would otherwise replay the same random sequence and
    propose the same candidates.
    """
    if seed is None or driver == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, driver]).generate_state(1)[0])


def _key(trial: FrozenTrial) -> str | None:
    raw = trial.user_attrs.get(_attrs().CANDIDATE_ATTR)
    return None if raw is None else Candidate.model_validate(raw).key()


def _holding(ledger: Ledger) -> list[FrozenTrial]:
    """The running trials that hold a slot (waiting copies hold none), as last read."""
    return [
        t
        for t in ledger.unfinished
        if t.state == TrialState.RUNNING and WAITS_FOR_ATTR not in t.user_attrs
    ]


def _running_copy(ledger: Ledger, key: str, besides: int | None = None) -> int | None:
    """The number of a running trial (one holding a slot) of candidate ``key``, if any."""
    return next(
        (t.number for t in _holding(ledger) if t.number != besides and _key(t) == key), None
    )


def _pop_waiting(study: Study, ledger: Ledger) -> int | None:
    """A re-queued (WAITING) trial of the read just made, now RUNNING; None if none is left.

    Optuna's ``Study._pop_waiting_trial_id`` without its own read of the storage: taking a
    trial is the same conditional state change, which fails when another driver took it.
    The trial is marked with this driver before it turns RUNNING (see :func:`_new_trial`);
    every driver takes trials under the study lock, so no other one re-marks it meanwhile.
    """
    storage = study.optuna._storage
    for t in ledger.unfinished:
        if t.state != TrialState.WAITING:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, DRIVER_ATTR, study.driver)
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return t._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished by another driver since the read
    return None


class Proposer:
    """Hands out the candidates one driver trains (see the module doc)."""

    def __init__(self, study: Study, n_trials: int):
        """Start handing out trials of ``study``.

        Args:
            study: the study.
            n_trials: finished trials wanted in the whole study (all drivers together).
        """
        self.study, self.n_trials = study, n_trials
        #: Reusable results by candidate key: the study's ledger's, which every read of the
        #: storage and every tell brings up to date (see :class:`Ledger`).
        self.known = study.synced().known
        #: This driver's waiting trials: trial number -> the running trial it waits for.
        self.waiting: dict[int, int] = {}

    def next(self) -> tuple[optuna.Trial, Candidate] | str:
        """A new trial and the candidate to train, or :data:`WAIT`, :data:`DONE`, :data:`EXHAUSTED`.

        A re-proposed known candidate is told its known result at once (marked ``reused``);
        a running one becomes a waiting trial; either way the sampler is asked again. After a
        few re-proposals in a row a random sampler proposes instead; after
        ``REPEAT_LIMIT`` the search is exhausted.
        """
        study = self.study
        s = _attrs()
        self.resolve()
        sampler, patience = study.optuna.sampler, repeat_patience(study.config.sampler)
        try:
            for repeat in range(s.REPEAT_LIMIT):
                if repeat == patience:
                    seed = study.sampler_seed
                    study.optuna.sampler = optuna.samplers.RandomSampler(
                        # Without a deep copy of every trial (Study.trials makes one).
                        seed=None
                        if seed is None
                        else seed + len(study.optuna.get_trials(deepcopy=False))
                    )
                # A re-proposal was stored under the lock after a read (shared) or this
                # driver's own books are whole (SQLite): the next ask reads nothing more;
                # a slot is checked again under the lock before a new trial is stored.
                if study.shared and repeat == 0:
                    study.recover_interrupted()  # trials of a driver that died meanwhile
                claimed = self._claim(read=repeat == 0)
                if isinstance(claimed, str):
                    return claimed
                if claimed is None:  # a new trial: sampled first, stored with its outcome
                    study.optuna._thread_local.cached_all_trials = None  # as Study.ask does
                    placed = self._place_draft(scratch.draft(study.optuna, study.space))
                    if placed is not None:
                        return placed
                    continue
                trial = optuna.Trial(study.optuna, claimed)  # a queued retry
                candidate = study.space.sample(trial)
                if self._place(trial, candidate):
                    return trial, candidate
        finally:
            study.optuna.sampler = sampler
        return EXHAUSTED

    def _claim(self, read: bool = True) -> int | str | None:
        """A queued retry's trial id, None for a new trial, or WAIT, DONE, EXHAUSTED.

        A queued retry is taken (RUNNING, marked with this driver) here; a new trial is only
        checked for a free slot of ``n_trials``, and :meth:`_place_draft` takes the slot.
        ``read``: read the storage first (else the ledger as the last read and this
        driver's tells left it).
        """
        study = self.study
        with study_lock(study):
            # Finished trials are taken in once (other drivers' too); the running ones are
            # read afresh: the cost is the new and running trials', not the study's.
            ledger = self._read() if read else study.ledger
            running = _holding(ledger)
            outcome = self._no_slot(ledger.counted, running)
            if outcome is not None:
                return outcome
            running_keys = {k for t in running if (k := _key(t)) is not None}
            unknown_running = sum(k not in self.known for k in running_keys)
            if len(self.known) + unknown_running >= study.space_size:
                return WAIT if running_keys else EXHAUSTED
            trial_id = _pop_waiting(study, ledger)
            if trial_id is None:
                return None
            if study.shared:
                study._own(trial_id)
        study.optuna._thread_local.cached_all_trials = None
        return trial_id

    def _no_slot(self, done: int, running: list[FrozenTrial]) -> str | None:
        """DONE or WAIT when no slot of ``n_trials`` is free, else None."""
        if done >= self.n_trials:
            return DONE
        if done + len(running) >= self.n_trials:
            return WAIT
        return None

    def _place_draft(self, draft: scratch.Draft) -> tuple[optuna.Trial, Candidate] | str | None:
        """Store a drafted candidate in one write; the trial to train when it is new.

        A known candidate is stored finished with the known result (``reused``), one that
        is RUNNING gets a waiting trial: both None (ask again). A new one takes a slot of
        ``n_trials``, unless another driver took the last since the claim (WAIT or DONE).
        """
        study, s = self.study, _attrs()
        candidate = draft.candidate
        key = candidate.key()
        attrs = {DRIVER_ATTR: study.driver, s.CANDIDATE_ATTR: candidate.to_json()}
        hit = self.known.get(key)
        if hit is not None:  # known already: no slot, nothing another driver did matters
            study.store_reused(draft, hit, attrs)
            return None
        with study_lock(study):
            # Read under the lock, as in _place (one driver alone knows it all already).
            ledger = self._read() if study.shared else study.ledger
            hit = self.known.get(key)  # finished by another driver since the last read
            if hit is not None:
                study.store_reused(draft, hit, attrs)
                return None
            original = _running_copy(ledger, key)
            if original is None:
                full = self._no_slot(ledger.counted, _holding(ledger))
                if full is not None:
                    return full
            else:
                attrs[WAITS_FOR_ATTR] = original
            trial_id = draft.stored(study.optuna, attrs)
            if study.shared:
                study._own(trial_id)
        study.optuna._thread_local.cached_all_trials = None
        if original is not None:
            self.waiting[study.optuna._storage.get_trial_number_from_id(trial_id)] = original
            return None
        return optuna.Trial(study.optuna, trial_id), candidate

    def _place(self, trial: optuna.Trial, candidate: Candidate) -> bool:
        """Record the candidate; True when it is new and this driver should train it."""
        study, s = self.study, _attrs()
        key = candidate.key()
        with study_lock(study):
            trial.set_user_attr(s.CANDIDATE_ATTR, candidate.to_json())
            # Read under the lock: a trial another driver finished since the claim is known
            # now, one it runs is RUNNING, and one it starts next sees this one. One driver
            # alone (SQLite) knows it all since the claim's read: its own tells keep the
            # ledger, and its running trials are those it started.
            ledger = self._read() if study.shared else study.ledger
            hit = self.known.get(key)
            original = None
            if hit is None:
                original = _running_copy(ledger, key, besides=trial.number)
                if original is not None:
                    trial.set_user_attr(WAITS_FOR_ATTR, original)
        if original is not None:
            self.waiting[trial.number] = original
            return False
        if hit is not None:
            study.tell(trial, hit, reused=True)
            return False
        return True

    def _read(self) -> Ledger:
        """The study's ledger after one read of the storage (``known`` is its dict)."""
        return self.study.synced()

    def record(self, number: int, result: TrialResult) -> None:
        """Tell the result of a trial this driver trained; resolve the trials waiting on it."""
        self.study.tell(number, result)  # the ledger, and so ``known``, takes the result in
        self.resolve()

    def resolve(self) -> list[int]:
        """Finish the waiting trials whose original ended; returns their numbers."""
        study, s = self.study, _attrs()
        resolved = []
        for number, original in list(self.waiting.items()):
            frozen = study.optuna._storage.get_trial(study._trial_id(original))
            if frozen.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            raw = frozen.user_attrs.get(s.RESULT_ATTR)
            if raw is not None:
                study.tell(number, TrialResult.model_validate(raw), reused=True)
            else:  # interrupted: its retry trains it; this copy has nothing to take over
                study.fail_copy(number, f"trial {original}, which it waited for, was interrupted")
            del self.waiting[number]
            resolved.append(number)
        return resolved

    def drain(self, poll: float = 0.5) -> None:
        """Wait until every waiting trial of this driver is resolved."""
        while self.waiting:
            stop.check()
            if self.study.shared:
                self.study.recover_interrupted()
            if not self.resolve():
                time.sleep(poll)

    def interrupt(self) -> list[int]:
        """Mark this driver's running and waiting trials interrupted (Ctrl-C); re-queue once."""
        study = self.study
        self.waiting.clear()
        # Found in the storage, not in this driver's books: a Ctrl-C inside the storage call
        # that created or popped a trial leaves it RUNNING before the driver holds its id.
        # With SQLite (one driver at a time) every RUNNING trial is this driver's; on a
        # shared storage every one that the write making it RUNNING marked with this driver
        # (see _new_trial and _pop_waiting).
        if not study.shared:
            return study.recover_interrupted()
        running = study.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        mine = [t for t in running if t.user_attrs.get(DRIVER_ATTR) == study.driver]
        return recover(study, mine) if mine else []


def recover(study: Study, trials: list[FrozenTrial]) -> list[int]:
    """Finish ``trials`` (RUNNING, their process dead or interrupted); returns the re-queued.

    Every step may be killed and repeated: a trial holding its result is told from it, the
    retry is queued only if none exists yet, and only then is the trial failed.
    """
    s = _attrs()
    storage = study.optuna._storage
    requeued: list[int] = []
    with study_lock(study):
        everything = storage.get_all_trials(study.optuna._study_id, deepcopy=False)
        retried = {t.user_attrs.get(s.RETRY_OF_ATTR) for t in everything}
        for stale in trials:
            t = storage.get_trial(stale._trial_id)
            if t.state != TrialState.RUNNING:
                continue  # finished meanwhile (by its driver, or another recovering driver)
            raw = t.user_attrs.get(s.RESULT_ATTR)
            if raw is not None:  # killed inside tell: the result was recorded, finish it
                reused = bool(t.user_attrs.get(s.REUSED_ATTR))
                study.tell(t.number, TrialResult.model_validate(raw), reused=reused)
                continue
            params = (
                t.params
                if s.CANDIDATE_ATTR in t.user_attrs
                else t.system_attrs.get("fixed_params")  # a queued retry, killed while sampled
            )
            if params and WAITS_FOR_ATTR not in t.user_attrs and t.number not in retried:
                study.optuna.enqueue_trial(params, user_attrs={s.RETRY_OF_ATTR: t.number})
                requeued.append(t.number)
            storage.set_trial_user_attr(t._trial_id, s.INTERRUPTED_ATTR, True)
            try:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
            study._owned.discard(t._trial_id)
    return requeued


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for another storage or ``:memory:``)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None

"""Opening a study's Optuna storage and keeping its configuration there (and in study.json).

Both run once when a :class:`~autopeft.search.study.Study` opens: the storage with the
settings each backend needs (a busy timeout for SQLite, heartbeats for a shared server), the
configuration stored beside the trials so that a resumed or second driver is checked against
it and tools can read it without the study file.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from autopeft import stop
from autopeft.core.errors import ConfigError
from autopeft.core.resume import resume_conflicts
from autopeft.core.secrets import masked_config
from autopeft.core.study_config import StudyConfig

#: The study's user attribute holding its (masked) configuration.
CONFIG_ATTR = "config"


def open_storage(
    url: str, shared: bool, heartbeat: tuple[int, int]
) -> optuna.storages.BaseStorage | str:
    """The storage of ``url``: an RDB storage with the backend's settings, else the URL.

    Args:
        url: an Optuna storage URL.
        shared: whether several drivers may share it (a database server): then trials send
            heartbeats, so a dead driver's trials can be found.
        heartbeat: (interval, grace) seconds for a shared storage.
    """
    if url.startswith("sqlite"):
        # A long busy timeout: readers such as optuna-dashboard may hold the file.
        kwargs: dict = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
    elif shared:
        interval, grace = heartbeat
        kwargs = {
            "engine_kwargs": {"pool_pre_ping": True},
            "heartbeat_interval": interval,
            "grace_period": grace,
        }
    else:
        return url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    warnings.filterwarnings("ignore", "Argument ``heartbeat", optuna.exceptions.ExperimentalWarning)
    for attempt in range(5):
        try:
            return _RDBStorage(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError):
            raise  # a malformed URL or a missing driver: retrying cannot help
        except Exception:  # noqa: BLE001 -- another process creating the schema right now
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


class _RDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage; a trial created whole from a template is a few statements.

    The driver stores each proposal whole (:mod:`autopeft.search.scratch`), and a re-proposed
    candidate as a finished copy with its values and result. Optuna writes such a trial row
    by row, each row after a query for the trial and most after one for an existing row; here
    the rows of each table go in one bulk insert (the trial is new: nothing to update).

    Optuna also checks a parameter's distribution against the study's earlier ones; its cache
    hands ``set_trial_param`` the distribution it saw before, but a trial created whole from
    a template runs a query over every trial's parameters for each of its own. The
    distributions this process has seen or stored stand in, as in Optuna's cache: the first of
    each name is checked by Optuna's query.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[tuple[int, str], Any] = {}

    def _get_prepared_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None, session: Any
    ) -> Any:
        if template_trial is None:
            return super()._get_prepared_new_trial(study_id, template_trial, session)
        import sqlalchemy
        from optuna.distributions import check_distribution_compatibility, distribution_to_json
        from optuna.storages._rdb import models

        template = template_trial
        for name, distribution in template.distributions.items():
            previous = self._known_distribution(session, study_id, name)
            if previous is not None:  # raises ValueError on a clash, as Optuna's does
                check_distribution_compatibility(previous, distribution)
        trial = models.TrialModel(
            study_id=study_id,
            number=None,
            state=template.state,
            datetime_start=template.datetime_start,
            datetime_complete=template.datetime_complete,
        )
        session.add(trial)
        session.flush()  # the trial's id, for its rows
        trial_id = trial.trial_id
        values = template.values if template.values is not None else []
        rows: dict[Any, list[dict[str, Any]]] = {
            models.TrialValueModel: [
                dict(zip(("value", "value_type"), models.TrialValueModel.value_to_stored_repr(v)))
                | {"trial_id": trial_id, "objective": objective}
                for objective, v in enumerate(values)
            ],
            models.TrialParamModel: [
                {
                    "trial_id": trial_id,
                    "param_name": name,
                    "param_value": template.distributions[name].to_internal_repr(value),
                    "distribution_json": distribution_to_json(template.distributions[name]),
                }
                for name, value in template.params.items()
            ],
            models.TrialUserAttributeModel: [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in template.user_attrs.items()
            ],
            models.TrialSystemAttributeModel: [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in template.system_attrs.items()
            ],
            models.TrialIntermediateValueModel: [
                dict(
                    zip(
                        ("intermediate_value", "intermediate_value_type"),
                        models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(v),
                    )
                )
                | {"trial_id": trial_id, "step": step}
                for step, v in template.intermediate_values.items()
            ],
        }
        for model, table_rows in rows.items():
            if table_rows:
                # render_nulls: one statement even where some values are NULL (infinities)
                insert = sqlalchemy.insert(model).execution_options(render_nulls=True)
                session.execute(insert, table_rows)
        for name, distribution in template.distributions.items():
            self._seen.setdefault((study_id, name), distribution)
        trial.number = trial.count_past_trials(session)
        return trial

    def finish_trial(
        self,
        trial_id: int,
        user_attrs: dict[str, Any],
        system_attrs: dict[str, Any],
        state: TrialState,
        values: list[float] | None,
    ) -> None:
        """A running trial's attributes, values and finished state, in one transaction.

        What ``set_trial_user_attr``, ``set_trial_system_attr`` and
        ``set_trial_state_values`` write one transaction each (Optuna's own helpers write
        the rows); a kill leaves the trial RUNNING with none of it or finished with all.
        """
        from datetime import datetime

        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(self.scoped_session) as session:
            trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
            self.check_trial_is_updatable(trial_id, cast(TrialState, trial.state))
            for model, attrs in (
                (models.TrialUserAttributeModel, user_attrs),
                (models.TrialSystemAttributeModel, system_attrs),
            ):
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(session, model, trial_id, key, value)
            for objective, value in enumerate(values or []):
                self._set_trial_value_without_commit(session, trial, objective, value)
            trial.state = state
            trial.datetime_complete = datetime.now()

    def _known_distribution(self, session: Any, study_id: int, param_name: str) -> Any:
        """The distribution ``param_name`` had before in the study (None: it never had one)."""
        key = (study_id, param_name)
        if key not in self._seen:
            from optuna.distributions import json_to_distribution
            from optuna.storages._rdb import models

            first = (  # Optuna's query, once per name and process
                session.query(models.TrialParamModel.distribution_json)
                .join(models.TrialModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialParamModel.param_name == param_name)
                .first()
            )
            if first is None:
                return None
            self._seen[key] = json_to_distribution(first[0])
        return self._seen[key]

    def _set_trial_param_without_commit(
        self,
        session: Any,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: Any,
        previous_distribution: Any = None,
    ) -> None:
        from optuna.storages._rdb import models

        study_id = int(models.TrialModel.find_or_raise_by_id(trial_id, session).study_id)
        super()._set_trial_param_without_commit(
            session,
            trial_id,
            param_name,
            param_value_internal,
            distribution,
            previous_distribution or self._known_distribution(session, study_id, param_name),
        )
        self._seen.setdefault((study_id, param_name), distribution)


def _holding_signals(name: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        with stop.deferred():
            return getattr(self._inner, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"The wrapped storage's ``{name}``, stop signals held until it returns."
    return call


class _Wrapper:
    def __init__(self, inner: BaseStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        # The rest (optuna's cache's _backend, the engine) is the wrapped storage's.
        if name == "_inner":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self._inner, name)

    def finish_trial(
        self,
        trial_id: int,
        user_attrs: dict[str, Any],
        system_attrs: dict[str, Any],
        state: TrialState,
        values: list[float] | None,
    ) -> None:
        """Finish a running trial with its attributes: one write on an RDB storage.

        See :meth:`_RDBStorage.finish_trial`; another storage gets the writes one by one,
        the state last (a trial killed before it is RUNNING, its result recorded).
        """
        with stop.deferred():
            backend = getattr(self._inner, "_backend", self._inner)  # under Optuna's cache
            if isinstance(backend, _RDBStorage):
                backend.finish_trial(trial_id, user_attrs, system_attrs, state, values)
                return
            for key, value in user_attrs.items():
                self._inner.set_trial_user_attr(trial_id, key, value)
            for key, value in system_attrs.items():
                self._inner.set_trial_system_attr(trial_id, key, value)
            self._inner.set_trial_state_values(trial_id, state, values)


#: An Optuna storage whose every call completes before a stop signal interrupts the driver
#: (see :func:`autopeft.stop.deferred`): Ctrl-C inside a transaction would leave it open, and
#: a SQLite study locked, so the hand-back of the stopped trials could not write.
InterruptSafeStorage = type(
    "InterruptSafeStorage",
    (_Wrapper, BaseStorage, BaseHeartbeat),
    {
        name: _holding_signals(name)
        for base in (BaseStorage, BaseHeartbeat)
        for name, member in vars(base).items()
        if callable(member) and not name.startswith("__")
    },
)


class StaleTrials:
    """The RUNNING trials of dead drivers on a shared storage, found with one query.

    A trial is stale when its last heartbeat is older than the grace period (by the
    database's clock, as Optuna's own check) or when it never sent one for longer than the
    grace period as this driver saw it (by this driver's clock: no other clock is compared).
    A driver gives a trial its first heartbeat within the same study lock that made it
    RUNNING, so one that never beats is a driver killed inside that window: Optuna's check
    skips such a trial, and it would stay RUNNING forever.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int, grace: float):
        """Watch the running trials of ``study_id`` in ``storage`` (an RDB storage)."""
        # Optuna wraps an RDB storage in a cache; the query goes to the database itself.
        self.storage: Any = getattr(storage, "_backend", storage)
        self.study_id, self.grace = study_id, grace
        #: Trial id -> when this driver first saw it RUNNING without a heartbeat (monotonic).
        self._unbeaten: dict[int, float] = {}

    def find(self, own: set[int]) -> set[int]:
        """Trial ids of the stale trials; ``own``: this driver's (never stale to it)."""
        import sqlalchemy
        from optuna.storages._rdb import models

        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        with stop.deferred():  # a read left open would hold the database (see InterruptSafeStorage)
            session = self.storage.scoped_session()
            try:
                rows = (
                    session.query(trial.trial_id, beat.heartbeat, sqlalchemy.func.now())
                    .outerjoin(beat, beat.trial_id == trial.trial_id)
                    .filter(trial.study_id == self.study_id, trial.state == TrialState.RUNNING)
                    .all()
                )
                session.commit()
            finally:
                self.storage.scoped_session.remove()
        seen, stale = time.monotonic(), set()
        unbeaten: dict[int, float] = {}
        for trial_id, heartbeat, now in rows:
            if trial_id in own:
                continue
            if heartbeat is None:
                unbeaten[trial_id] = first = self._unbeaten.get(trial_id, seen)
                if seen - first > self.grace:
                    stale.add(trial_id)
            # Naive on both sides: PostgreSQL's now() carries a time zone (as in Optuna's).
            elif (now.replace(tzinfo=None) - heartbeat).total_seconds() > self.grace:
                stale.add(trial_id)
        self._unbeaten = unbeaten
        return stale


def keep_config(study: optuna.Study, config: StudyConfig, folder: Path, shared: bool) -> None:
    """Store the configuration; refuse one whose trials would not compare with the study's.

    A study without trials takes the new configuration (its first run may have failed on a
    typo before any trial); one with trials may change only what leaves trials comparable
    (n_trials, sampler, halving, executor, storage), else a ConfigError. The configuration
    is also written to ``folder``/study.json (owner-only when ``shared``: it names a
    database's user and host).
    """
    # Kept and shown (study.json, the report, optuna-dashboard) without a password.
    snapshot = masked_config(json.loads(config.model_dump_json()))
    stored = study.user_attrs.get(CONFIG_ATTR)
    if stored is not None:
        try:  # through today's model, so fields added since read as their defaults
            stored = json.loads(StudyConfig.model_validate(stored).model_dump_json())
        except ValueError:
            pass  # unreadable today: compared as stored
    if stored is not None and stored != snapshot and study.get_trials(deepcopy=False):
        conflicts = resume_conflicts(stored, snapshot, str(folder / "study.json"))
        if conflicts:
            raise ConfigError(conflicts, source=f"study {config.name!r}")
    if stored != snapshot or not (folder / "study.json").is_file():
        study.set_user_attr(CONFIG_ATTR, snapshot)
        # Written aside and renamed: a kill never leaves a half-written file.
        partial = folder / f".study.json.{os.getpid()}"
        mode = 0o600 if shared else 0o644
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(snapshot))
        partial.replace(folder / "study.json")

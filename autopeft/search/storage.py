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
from pathlib import Path

import optuna

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
            return optuna.storages.RDBStorage(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError):
            raise  # a malformed URL or a missing driver: retrying cannot help
        except Exception:  # noqa: BLE001 -- another process creating the schema right now
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


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

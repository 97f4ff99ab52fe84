"""The Python API. Heavy libraries are imported inside the functions that need them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft import methods, tasks
from autopeft.core.candidate import Candidate
from autopeft.core.config import load_config, parse_space, parse_study
from autopeft.core.errors import ConfigError, Problem
from autopeft.core.model_profile import ModelProfile, load_profile
from autopeft.core.resolve import ResolvedSpace, candidate_params
from autopeft.core.space import SearchSpace
from autopeft.core.study_config import StudyConfig
from autopeft.core.summary import summarize
from autopeft.search import samplers

if TYPE_CHECKING:
    from autopeft.search.study import Study


def load(path: str | Path) -> SearchSpace | StudyConfig:
    """Load and validate a study file or a bare search-space file.

    Raises:
        ConfigError: with one paragraph per problem (field path, rule, value, hint).
    """
    return load_config(path, methods.registry(), tasks.registry(), samplers.registry())


def space_from_dict(raw: dict) -> SearchSpace:
    """Validate a search space given as a Python dict (the same schema as the YAML)."""
    return parse_space(raw, methods.registry())


def study_from_dict(raw: dict) -> StudyConfig:
    """Validate a study given as a Python dict (the same schema as the YAML)."""
    return parse_study(
        raw, methods.registry(), kinds=tasks.registry(), samplers=samplers.registry()
    )


def resolve(
    space: SearchSpace, model: str | ModelProfile = "minilm", head: str = "classifier"
) -> ResolvedSpace:
    """Resolve a space on a model (a bundled name, a local folder, or a profile).

    ``head`` is the task kind's model head (``classifier``, or ``lm`` for causal LMs).
    """
    profile = model if isinstance(model, ModelProfile) else load_profile(model, head=head)
    return ResolvedSpace(space, profile, methods.registry())


def validate(path: str | Path, model: str | None = None) -> str:
    """Validate a file and return the summary ``autopeft validate`` prints.

    Raises:
        ConfigError: for an invalid file, or a budget no candidate of the space fits
            (see :func:`check`).
    """
    text, problems = check(path, model)
    if problems:
        raise ConfigError(problems, source=str(path))
    return text


def check(path: str | Path, model: str | None = None) -> tuple[str, list[Problem]]:
    """Validate a file; return its summary and the problems only the model or data reveal.

    The summary ends with a ``warning:`` line when the budget is tight enough that no
    randomly drawn candidate fitted it (the search may find the few that do). The problems
    are about a space whose every candidate is over the parameter budget, and about a
    study's task file as a run would read it (:meth:`TaskKind.check`: the file exists,
    parses, has the named columns, valid labels and enough examples): the summary is still
    worth reading, so the caller prints it before the error.

    Raises:
        ConfigError: for a file that does not validate.
    """
    config = load(path)
    head = "classifier"
    problems: list[Problem] = []
    if isinstance(config, StudyConfig):
        space, model = config.search_space, model or config.model
        kind = f"study {config.name!r}"
        task_kind = tasks.get(config.task.kind)
        head = task_kind.head
        problems += task_kind.check(config.task)
    else:
        space, model, kind = config, model or "minilm", "search space"
    resolved = resolve(space, model, head)
    summary = summarize(resolved, methods.registry(), model)
    problems += [over] if (over := budget_problem(resolved, model)) else []
    # "valid" only when it is: a budget nothing fits is an error printed after the summary.
    head = f"{path}: {kind}, not runnable as it is" if problems else f"{path}: valid {kind}"
    return f"{head}\n{summary}", problems


def budget_problem(resolved: ResolvedSpace, model: str) -> Problem | None:
    """The problem of a parameter budget below the space's smallest candidate, or None.

    Exact: every trial of a run would be INFEASIBLE and nothing would train. That is an error
    in the file, like low > high, not a matter of luck (``validate`` and ``run`` both refuse).
    """
    limit = resolved.space.budget.param_limit(resolved.profile.base_params)
    lo = resolved.param_range()[0] if limit is not None else 0
    if limit is None or lo <= limit:
        return None
    return Problem(
        "search_space.budget.max_trainable_params",
        f"no candidate of the space fits this budget on {model}: the smallest has "
        f"{lo:,} trainable parameters",
        limit,
        hint=f"raise the budget to at least {lo:,}, or let the space be smaller "
        "(lower ranks/sizes, fewer layers, a size of 0 to switch a module off)",
    )


def candidate_trainable_params(candidate: Candidate, model: str | ModelProfile = "minilm") -> int:
    """Exact trainable parameters of a candidate on a model (head excluded), without torch."""
    profile = model if isinstance(model, ModelProfile) else load_profile(model)
    return candidate_params(candidate, profile, methods.registry())


def run(
    config: StudyConfig | dict[str, Any] | str | Path,
    *,
    n_trials: int | None = None,
    executor: str | None = None,
    storage: str | None = None,
    root: str | Path = "studies",
    progress: bool = False,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    max_concurrent: int | None = None,
) -> Study:
    """Run (or resume) a study and return it; see :class:`autopeft.search.study.Study`.

    Args:
        config: the study: the path of a study file, a dict with the same schema as the
            YAML, or a :class:`StudyConfig`.
        n_trials: total finished trials wanted (default: the study's ``n_trials``).
        executor: ``local`` or ``ray`` (default: the study's ``executor``).
        storage: an Optuna storage URL (default: SQLite in ``<root>/<name>/study.db``).
        root: the folder holding study folders.
        progress: show a live progress line.
        address: Ray cluster address (``auto``, ``ray://host:port``); None: a local Ray.
        cpus_per_trial: Ray executor: CPUs per trial.
        gpus_per_trial: Ray executor: GPU share per trial (None: from predicted memory).
        max_concurrent: Ray executor: at most this many trials at once.

    Raises:
        ConfigError: for an invalid study file, ``n_trials < 1``, or a storage URL that is
            malformed or cannot be opened.
    """
    from autopeft.search.local import run_local

    if isinstance(config, dict):
        config = study_from_dict(config)
    elif not isinstance(config, StudyConfig):
        loaded = load(config)
        if not isinstance(loaded, StudyConfig):
            raise ConfigError(
                Problem(
                    "search_space",
                    "`run` needs a study file, not a bare search space",
                    hint="wrap it: name: ..., search_space: FILE",
                ),
                source=str(config),
            )
        config = loaded
    # Only None means "the file's": 0 used to fall back to it through `or`, and a negative
    # count ran nothing without a word. The file itself rejects n_trials < 1 the same way.
    if n_trials is not None and n_trials < 1:
        raise ConfigError(
            Problem(
                "n_trials",
                "n_trials >= 1 must hold (total finished trials wanted)",
                n_trials,
                hint=f"leave it out to run the study file's n_trials ({config.n_trials})",
            )
        )
    executor = executor or config.executor
    folder = Path(root) / config.name
    new, root_is_new = not folder.exists(), not Path(root).exists()
    study = open_study_storage(config, root=root, storage=storage, create=True)
    try:
        if over := budget_problem(study.space, config.model):
            raise ConfigError(over, source=str(config.name))
        n = config.n_trials if n_trials is None else n_trials
        if executor == "ray":
            from autopeft.search.ray import run_ray

            return run_ray(
                study,
                n,
                address=address,
                cpus_per_trial=cpus_per_trial,
                gpus_per_trial=gpus_per_trial,
                max_concurrent=max_concurrent,
                progress=progress,
            )
        return run_local(study, n, progress=progress)
    except BaseException:
        if new:
            _forget_if_empty(study, root_is_new)
        raise


def _forget_if_empty(study, root_is_new: bool) -> None:
    """Remove the study folder this run created when no trial was told (it failed first).

    An empty study folder would pass for a study to resume or report; the next run
    creates it again. Anything with a trial is kept, and so is a study in a database
    (another driver may be joining it).
    """
    import shutil

    try:
        if study.optuna.get_trials(deepcopy=False):
            return
    except Exception:  # noqa: BLE001 -- the original error is the one to report
        return
    shutil.rmtree(study.folder, ignore_errors=True)
    if root_is_new:
        with contextlib.suppress(OSError):
            study.folder.parent.rmdir()  # only when empty


#: The storage URL forms a hint shows (any SQLAlchemy URL whose driver is installed works).
STORAGE_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql+psycopg2://USER@HOST/DB"
)


def open_study_storage(
    config: StudyConfig,
    *,
    root: str | Path = "studies",
    storage: str | None = None,
    create: bool = True,
):
    """Open the :class:`~autopeft.search.study.Study` of ``config`` in its storage.

    Storage problems become a :class:`ConfigError` at ``--storage`` (the argument), at
    ``storage`` (the study file's field) or at ``--root`` (the default SQLite file in the
    study folder), instead of a SQLAlchemy traceback.

    Args:
        config: the validated study.
        root: the folder holding study folders (for the default SQLite storage).
        storage: a storage URL; default: the study file's ``storage``, else SQLite in
            ``<root>/<name>/study.db``.
        create: create the study when it does not exist (``run``). False for commands that
            only read a study: a missing study is then an error and nothing is written (an
            empty ``study.db`` left behind would pass for a study with no trials).

    Raises:
        ConfigError: for a malformed or unreachable storage, or (``create=False``) a study
            that does not exist there.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from autopeft.search.study import Study, default_storage

    folder = Path(root) / config.name
    if storage:
        url, field = storage, "--storage"
    elif config.storage:
        url, field = config.storage, "storage"
    else:
        url, field = default_storage(folder), "--root"
    database = check_storage(url, field)
    if not create:
        _check_exists(config.name, url, field, folder, database)
    try:
        return Study(config, root=root, storage=storage, read_only=not create)
    except SQLAlchemyError as err:
        raise storage_error(field, url, _first_line(err), _reach_hint(url)) from None
    except OSError as err:  # the study folder (cache, weights, study.json) cannot be written
        raise ConfigError(
            Problem(
                "--root",
                f"the study folder {folder} cannot be created or written: "
                f"{err.strerror or err} ({err.filename or folder})",
                str(root),
                hint="give --root a folder you can write (default: studies)",
            )
        ) from None


def check_storage(url: str, field: str) -> Path | None:
    """Check a storage URL without connecting; return the SQLite database file, if any.

    ``field`` is where the URL came from (``--storage``, ``storage`` or ``--root``), for the
    error.

    Catches what would otherwise surface as a traceback only after the study's retries: a
    string that is no URL, an unknown database, a driver that is not installed, a SQLite file
    in a folder that does not exist.
    """
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = sqlalchemy.engine.make_url(url)
        sqlalchemy.create_engine(parsed).dispose()  # loads the dialect and driver, no connect
    except ArgumentError as err:
        raise storage_error(field, url, f"not a usable storage URL ({_first_line(err)})") from None
    except ImportError as err:
        raise storage_error(
            field,
            url,
            f"the database driver is not installed ({_first_line(err)})",
            "install it (e.g. pip install psycopg2-binary for PostgreSQL), or use " + STORAGE_FORMS,
        ) from None
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or "mode=memory" in url:
        raise storage_error(
            field,
            url,
            "an in-memory SQLite database keeps nothing once the command ends",
            "give a file: sqlite:///relative/path.db or sqlite:////absolute/path.db",
        )
    database = Path(parsed.database)
    why = not_an_optuna_database(database)
    if why:
        raise storage_error(
            field,
            url,
            f"{database} {why}, so autopeft will not write Optuna's tables into it",
            "give the study's own database (studies/<name>/study.db), or a new file name",
        )
    if field != "--root" and not database.parent.is_dir():
        # The default file's folder is created with the study; a given one is not.
        raise storage_error(
            field,
            url,
            f"the SQLite file's folder {database.parent} does not exist",
            "create the folder first, or give a path in an existing one",
        )
    return database


def _check_exists(name: str, url: str, field: str, folder: Path, database: Path | None) -> None:
    """Raise unless the study ``name`` exists in the storage ``url`` (writes nothing)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    where = f"under {folder.parent}" if field == "--root" else f"in the storage {url}"
    hint = (
        "give --root FOLDER, the folder holding the study folders (as for `autopeft run`), "
        "or --storage URL for a study kept in a database"
    )
    # Opening a missing or empty SQLite file would create Optuna's tables: look first.
    if database is not None and not database.is_file():
        missing = f"no study {name!r} {where}: {database} does not exist"
        raise ConfigError(Problem("STUDY", missing, hint=hint))
    if database is not None and database.stat().st_size == 0:
        missing = f"no study {name!r} {where}: {database} is empty"
        raise ConfigError(Problem("STUDY", missing, hint=hint))
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except SQLAlchemyError as err:
        raise storage_error(field, url, _first_line(err), _reach_hint(url)) from None
    if name not in names:
        known = f"; it holds: {', '.join(sorted(names))}" if names else " (it holds none)"
        raise ConfigError(Problem("STUDY", f"no study {name!r} {where}{known}", hint=hint))


def not_an_optuna_database(database: Path) -> str | None:
    """Why an existing SQLite file is not an Optuna storage (None: it is one, or is new).

    Read without writing (SQLite's read-only mode): opening it through Optuna would create
    Optuna's tables in it. A missing or empty file is a new database.
    """
    import sqlite3

    if not database.is_file() or database.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as err:
        return f"is not a SQLite database ({err})"
    if not {"studies", "trials"} <= tables:
        return "is a SQLite database without Optuna's tables"
    return None


def storage_error(field: str, url: str, rule: str, hint: str | None = None) -> ConfigError:
    """The error for a storage URL at ``field`` (the URL forms are the default hint)."""
    return ConfigError(
        Problem(field, rule, url, hint or f"a storage is a database URL: {STORAGE_FORMS}")
    )


def _reach_hint(url: str) -> str:
    if url.startswith("sqlite"):
        return "check that the file is an Optuna study database and can be written"
    return "check that the database server is running and reachable, and the URL's user/database"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

"""Working with finished studies: open, export, re-evaluate with seeds, optuna-dashboard.

Heavy libraries load inside the functions that need them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError, Problem
from autopeft.core.secrets import masked
from autopeft.core.study_config import StudyConfig
from autopeft.core.trial_result import TrialResult, TrialStatus

REEVAL_ATTR = "reeval"  # study user attributes reeval.<trial>, read by autopeft.report.tables


def open_study(ref: str | Path, storage: str | None = None, root: str | Path | None = None):
    """Open an existing study for reading: from its study file, its folder, or its name.

    Nothing is created: a study that does not exist is an error naming where it was looked
    for (``run`` is what creates studies).

    Args:
        ref: the study YAML, the study folder (``<root>/<name>``, with ``study.json``), or
            the study's name (its folder is looked up under ``root``; with ``storage`` and no
            local folder, the configuration the storage keeps is used).
        storage: a storage URL (default: the study file's, else SQLite in the study folder).
        root: the folder of study folders, as for ``autopeft run`` (default ``studies``;
            a study folder given as ``ref`` is its own location).

    Raises:
        ConfigError: when ``ref`` is none of these, the study does not exist in its storage,
            the storage URL is bad, or the study has no trials yet.
    """
    from autopeft import api

    path = Path(ref)
    if path.is_dir() and (path / "study.json").is_file():
        config = _read_snapshot(path / "study.json")
        if root is not None and Path(root).resolve() != path.resolve().parent:
            raise ConfigError(
                Problem(
                    "--root",
                    f"the study folder {path} is not in this folder",
                    str(root),
                    hint="give the folder alone (it says where the study is), or the study "
                    "YAML or name with --root",
                )
            )
        root = path.parent
    elif path.is_file():
        config = api.load(path)
        if not isinstance(config, StudyConfig):
            raise ConfigError(Problem("STUDY", "a study file or folder is needed", str(ref)))
        root = "studies" if root is None else root
    elif _is_name(str(ref)):
        root = "studies" if root is None else root
        config = _config_by_name(str(ref), Path(root), storage)
    else:
        raise ConfigError(
            Problem(
                "STUDY",
                "no study file or study folder (with study.json) at this path",
                str(ref),
                hint="give the study YAML, its folder studies/<name>, or its name",
            )
        )
    study = api.open_study_storage(config, root=root, storage=storage, create=False)
    if not study.optuna.trials:
        raise ConfigError(
            Problem(
                "STUDY",
                f"the study {config.name!r} has no trials yet",
                hint="run it first: autopeft run FILE",
            )
        )
    return study


def _is_name(ref: str) -> bool:
    """Whether ``ref`` reads as a bare study name rather than a path."""
    return bool(ref) and "/" not in ref and "\\" not in ref and not ref.endswith((".yaml", ".yml"))


def _config_by_name(name: str, root: Path, storage: str | None) -> StudyConfig:
    """The configuration of the study ``name``: its folder's snapshot, else the storage's."""
    snapshot = root / name / "study.json"
    if snapshot.is_file():
        return _read_snapshot(snapshot)
    if storage and (stored := _stored_config(name, storage)) is not None:
        return stored
    raise ConfigError(
        Problem(
            "STUDY",
            f"no study folder {root / name} (with study.json)"
            + (" and no such study in the storage" if storage else ""),
            name,
            hint="give --root FOLDER, the folder holding the study folders (as for "
            "`autopeft run`), --storage URL for a study kept in a database, or the study YAML",
        )
    )


def _stored_config(name: str, storage: str) -> StudyConfig | None:
    """The configuration a storage keeps for the study ``name``, or None if it has none.

    For a study run elsewhere (a cluster's database) with no folder here.
    """
    import optuna
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from autopeft import api
    from autopeft.search.study import CONFIG_ATTR

    database = api.check_storage(storage, "--storage")
    if database is not None and (not database.is_file() or database.stat().st_size == 0):
        return None  # opening it would create the file, or Optuna's tables in it
    try:
        if name not in optuna.study.get_all_study_names(storage=storage):
            return None
        raw = optuna.load_study(study_name=name, storage=storage).user_attrs.get(CONFIG_ATTR)
    except SQLAlchemyError as err:
        raise api.storage_error("--storage", storage, str(err).splitlines()[0]) from None
    try:
        return None if raw is None else StudyConfig.model_validate(raw)
    except ValidationError:
        return None  # an older snapshot: the error below asks for the study YAML


def _read_snapshot(path: Path) -> StudyConfig:
    """The study configuration a study folder keeps (``study.json``), or a clear error."""
    from pydantic import ValidationError

    from autopeft.core.errors import from_pydantic

    try:
        return StudyConfig.model_validate_json(path.read_text())
    except ValidationError as exc:
        problems = from_pydantic(exc, prefix=path.name)
        problems.append(
            Problem(
                "STUDY",
                "this study folder's configuration snapshot does not validate (written by "
                "another autopeft version?)",
                str(path),
                hint="give the study YAML instead of the folder: autopeft COMMAND study.yaml",
            )
        )
        raise ConfigError(problems) from None


def _trials(study) -> dict[int, Any]:
    """The study's Optuna trials by number (frozen, no copies)."""
    return {t.number: t for t in study.optuna.get_trials(deepcopy=False)}


def retries(trials: Iterable[Any]) -> dict[int, int]:
    """``{interrupted trial: the trial that re-ran it}`` (from the re-run's ``retry_of``)."""
    from autopeft.search.study import RETRY_OF_ATTR

    return {t.user_attrs[RETRY_OF_ATTR]: t.number for t in trials if RETRY_OF_ATTR in t.user_attrs}


def untold_note(trial: Any, retried: dict[int, int]) -> str:
    """Why a trial has no result: ``interrupted (re-run as trial N)``, or ``""`` if running."""
    from autopeft.search.study import CANDIDATE_ATTR, INTERRUPTED_ATTR

    if not trial.user_attrs.get(INTERRUPTED_ATTR):
        return ""
    if trial.number in retried:
        return f"interrupted (re-run as trial {retried[trial.number]})"
    if CANDIDATE_ATTR not in trial.user_attrs:
        return "interrupted while its parameters were sampled (not re-run)"
    return "interrupted (not re-run)"


def _front_hint(study) -> str:
    """Which trials can be exported: a few front trial numbers, or why there are none."""
    numbers = sorted(n for n, _ in study.front())
    if not numbers:
        return "the study has no COMPLETE trial yet"
    more = f" (and {len(numbers) - 8} more)" if len(numbers) > 8 else ""
    return f"export a COMPLETE trial, e.g. a front trial: {', '.join(map(str, numbers[:8]))}{more}"


def _trial_result(study, number: int, retrain: bool) -> TrialResult:
    """Trial ``number``'s result, or an error saying why it cannot be exported as it is.

    A trial that did not complete has no trained adapter worth exporting: its tensors (if
    any) are those of a stopped or broken training. Retraining it is the user's choice
    (``retrain``), never a silent fallback.
    """
    trials = _trials(study)
    trial = trials.get(number)
    if trial is None:
        raise ConfigError(
            Problem(
                "--trial",
                "no finished trial with this number: the study has no such trial",
                number,
                hint=f"{_front_hint(study)}; the study's trials are 0..{len(trials) - 1}",
            )
        )
    result = dict(study.results()).get(number)
    if result is None:
        note = untold_note(trial, retries(trials.values()))
        what = f"was {note}" if note else f"has not finished (state {trial.state.name})"
        raise ConfigError(
            Problem("--trial", f"trial {number} {what}: it has no result", hint=_front_hint(study))
        )
    if result.status is not TrialStatus.COMPLETE and not retrain:
        reason = f" ({_reason(result)})" if result.error else ""
        # An over-budget candidate is over budget again when retrained: no --retrain hint.
        again = (
            ""
            if result.status is TrialStatus.INFEASIBLE
            else "; or add --retrain to train this candidate again at full fidelity"
        )
        raise ConfigError(
            Problem(
                "--trial",
                f"trial {number} did not complete: its status is {result.status.value}{reason}",
                hint=_front_hint(study) + again,
            )
        )
    return result


def _reason(result: TrialResult) -> str:
    at = f" at step {result.error_step}" if result.error_step is not None else ""
    return f"{result.error}{at}"


def export_trial(study, number: int, out_dir: str | Path, retrain: bool = False) -> Path:
    """Export trial ``number`` as a loadable folder (see :mod:`autopeft.train.export`).

    The trial's own trained tensors are used when the study kept them; ``retrain`` (or a
    COMPLETE trial whose tensors were not kept) trains it at full fidelity first.

    Raises:
        ConfigError: for a trial that does not exist, has no result (running,
            interrupted), or did not complete (FAILED, INFEASIBLE, PRUNED) while
            ``retrain`` is False; for an output folder that is a file or holds something
            other than an earlier export; and when retraining fails.
    """
    from autopeft.train.export import check_export_folder, export_adapted, rebuild
    from autopeft.train.trial import TrialContext, run_trial, weights_path

    result = _trial_result(study, number, retrain)
    check_export_folder(Path(out_dir))  # before any model is loaded or trained
    ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
    ctx.weights_dir = study.folder / "weights"
    path = weights_path(ctx.weights_dir, result.candidate, study.config.training.seed)
    metrics = result.metrics
    if retrain or not path.is_file():
        fresh = run_trial(ctx, result.candidate)
        if fresh.status is not TrialStatus.COMPLETE:
            raise ConfigError(
                Problem(
                    "--trial",
                    f"retraining trial {number} did not complete: {fresh.status.value} "
                    f"({_reason(fresh)})",
                    hint=_front_hint(study),
                )
            )
        metrics = fresh.metrics
    adapted = rebuild(ctx, result.candidate, path)
    info = ctx.kind.describe(ctx.task)
    return export_adapted(adapted, Path(out_dir), study.config, info, metrics, number)


def trials_table(study) -> Any:
    """Every trial as a pandas DataFrame: :meth:`Study.to_pandas` plus what it leaves out.

    - ``reused``: for a re-proposed candidate that took over an earlier result (nothing
      trained), the number of the trial that trained it; else empty.
    - ``retry_of``: for a trial that re-ran an interrupted one, that trial's number.
    - a trial without a result gets a status and an error: an interrupted one is FAILED with
      ``interrupted (re-run as trial N)``; a running or queued one shows its state.
    - integer columns (trial numbers, parameters, steps, integer search parameters) stay
      integers where a row has no value (pandas ``Int64``), instead of turning into floats.
    """
    from autopeft.search.study import INTERRUPTED_ATTR, RETRY_OF_ATTR, REUSABLE, REUSED_ATTR

    frame = study.to_pandas()
    trials = _trials(study)
    results = dict(study.results())
    retried = retries(trials.values())

    # The trial whose result a reused one took over: the latest earlier trial that trained
    # the same candidate (Study.propose keeps the latest one per candidate).
    trained: dict[str, int] = {}
    reused_from: dict[int, int] = {}
    for number in sorted(results):
        key = results[number].candidate.key()
        if trials[number].user_attrs.get(REUSED_ATTR):
            if key in trained:
                reused_from[number] = trained[key]
        elif results[number].status in REUSABLE:
            trained[key] = number

    status, error = [], []
    for number, st, err in zip(
        frame["number"], frame["status"], frame.get("error", [None] * len(frame))
    ):
        trial = trials[int(number)]
        if isinstance(st, str):  # a told trial: its own status and error
            status.append(st)
            error.append(err if isinstance(err, str) else None)
        elif trial.user_attrs.get(INTERRUPTED_ATTR):
            status.append(TrialStatus.FAILED.value)
            error.append(untold_note(trial, retried))
        else:  # running or queued: no status of its own yet
            status.append(trial.state.name)
            error.append(None)
    frame["status"] = status
    frame["error"] = error
    at = list(frame.columns).index("status") + 1
    frame.insert(at, "reused", [reused_from.get(int(n)) for n in frame["number"]])
    frame.insert(
        at + 1, "retry_of", [trials[int(n)].user_attrs.get(RETRY_OF_ATTR) for n in frame["number"]]
    )

    ints = ["number", "reused", "retry_of", "trainable_params", "steps"]
    for column in frame.columns:
        if column.startswith("param."):
            name = column.removeprefix("param.")
            raw = [t.params[name] for t in trials.values() if name in t.params]
            if raw and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
                ints.append(column)
    for column in ints:
        if column in frame.columns:
            frame[column] = frame[column].astype("Int64")
    return frame


def export_trials(study, path: str | Path) -> Path:
    """Write every trial (see :func:`trials_table`) to a table file.

    The format follows the extension: ``.csv``, ``.json`` (records) or ``.parquet``.
    """
    path = Path(path)
    if path.suffix not in (".csv", ".json", ".parquet"):
        raise ConfigError(
            Problem(
                "--trials",
                "the table format follows the extension: .csv, .json or .parquet",
                path.suffix,
            )
        )
    frame = trials_table(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".json":
        frame.to_json(path, orient="records", indent=2)
    else:
        frame.to_parquet(path, index=False)
    return path


def at_least_one(name: str, value: int, hint: str | None = None) -> None:
    """Raise a :class:`ConfigError` at ``name`` unless ``value >= 1`` (a count of things)."""
    if value < 1:
        raise ConfigError(Problem(name, f"{name.lstrip('-')} >= 1 must hold", value, hint))


def status_counts(study) -> str:
    """The study's results by status: ``3 trials with a result: 2 INFEASIBLE, 1 FAILED``."""
    from collections import Counter

    results = study.results()
    counts = Counter(r.status.value for _, r in results)
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{len(results)} trial{'s' if len(results) != 1 else ''} with a result" + (
        f": {parts}" if parts else ""
    )


SeedRunner = Callable[[Candidate, int], TrialResult]


def reeval(
    study, top: int = 5, seeds: int = 5, run: SeedRunner | None = None
) -> list[dict[str, Any]]:
    """Retrain the ``top`` front points (best task metric first) with ``seeds`` training seeds.

    The study gets a ``reeval.<trial>`` user attribute per trial: per-seed metrics and their
    mean/std, so a report can draw error bars. The data split and the base model stay fixed;
    only the training seed (adapter init, batch order, dropout) changes.

    Args:
        study: an open :class:`~autopeft.search.study.Study`.
        top: front points to re-evaluate.
        seeds: training seeds ``0..seeds-1``.
        run: ``(candidate, seed) -> TrialResult``; default: real training at full fidelity
            (a synthetic runner in tests and benchmarks).

    Returns:
        One row per re-evaluated trial: ``trial``, ``metric``, ``seeds`` (per-seed status,
        metrics and the error of a failed seed), ``mean`` (None when every seed failed) and
        ``std``.

    Raises:
        ConfigError: for ``top < 1`` or ``seeds < 1`` (checked before anything is trained or
            written), or a study with no front (no COMPLETE trial).
    """
    for name, value in (("top", top), ("seeds", seeds)):
        at_least_one(name, value)
    metric = study.config.task.metric
    everything = study.front()
    if not everything:
        raise ConfigError(
            Problem(
                "STUDY",
                f"the study {study.config.name!r} has no Pareto front to re-evaluate: "
                f"{status_counts(study)}",
                hint="only COMPLETE trials form the front; run more trials, or relax the "
                "budget if every trial is INFEASIBLE",
            )
        )
    # Best task metric first, in its direction (the lowest eval_loss, the highest accuracy).
    scores = {n: study.config.task_score(r.metrics) for n, r in everything}
    front = sorted(
        everything, key=lambda nr: float("inf") if scores[nr[0]] is None else -scores[nr[0]]
    )[:top]
    run = run or _training_seed_runner(study)
    out = []
    for number, result in front:
        runs = []
        for seed in range(seeds):
            res = run(result.candidate, seed)
            runs.append({"seed": seed, "status": res.status.value, **res.metrics})
            if res.error:
                runs[-1]["error"] = res.error
        values = [r[metric] for r in runs if metric in r]
        summary = {
            "metric": metric,
            "seeds": runs,
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
        # Finished trials are immutable in Optuna: the study keeps it, per trial number.
        study.optuna.set_user_attr(f"{REEVAL_ATTR}.{number}", summary)
        out.append({"trial": number, **summary})
    return out


def _training_seed_runner(study) -> SeedRunner:
    """Real training of a candidate under a given training seed (model loaded once)."""
    from autopeft.train.trial import TrialContext, run_trial

    ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
    base_config = ctx.config

    def run(candidate: Candidate, seed: int) -> TrialResult:
        training = base_config.training.model_copy(update={"seed": seed})
        ctx.config = base_config.model_copy(update={"training": training})
        try:
            return run_trial(ctx, candidate)
        finally:
            ctx.config = base_config

    return run


def dashboard(study, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for the study's storage (blocks until interrupted)."""
    import optuna
    from optuna_dashboard import run_server

    print(
        f"optuna-dashboard for {study.config.name!r}: http://{host}:{port}/ "
        f"(storage {masked(study.storage_url)}); Ctrl-C stops it",
        flush=True,
    )
    run_server(optuna.storages.RDBStorage(study.storage_url), host=host, port=port)


def dumps(data: Any) -> str:
    """Pretty JSON for the CLI."""
    return json.dumps(data, indent=2, default=str)

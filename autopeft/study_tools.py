"""Working with finished studies: open, export, re-evaluate with seeds, optuna-dashboard.

Heavy libraries load inside the functions that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autopeft.core.errors import ConfigError, Problem
from autopeft.core.study_config import StudyConfig
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search.frames import retries, untold_note


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
        loaded = api.load(path)
        if not isinstance(loaded, StudyConfig):
            raise ConfigError(Problem("STUDY", "a study file or folder is needed", str(ref)))
        config = loaded
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


def _front_hint(study) -> str:
    """Which trials can be exported: a few front trial numbers, or why there are none."""
    numbers = sorted(n for n, _ in study.front_points())
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
    trained = result
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
        trained = fresh
    adapted = rebuild(ctx, result.candidate, path)
    info = ctx.kind.describe(ctx.task)
    return export_adapted(
        adapted, Path(out_dir), study.config, info, trained.metrics, number, result=trained
    )


def best_trial(study: Any) -> int:
    """The number of the front point best on the study's first objective (``--best``).

    Raises:
        ConfigError: when the study has no front (no COMPLETE trial).
    """
    if not study.front_points():
        raise ConfigError(
            Problem(
                "--best",
                f"the study {study.config.name!r} has no Pareto front: {status_counts(study)}",
                hint="only COMPLETE trials form the front; run more trials, or export a "
                "trial with --trial N --retrain",
            )
        )
    return int(study.best()[0])


def export_statement(folder: str | Path) -> str:
    """What loads an export (its manifest's ``loading.statement``), for the CLI to print.

    For a candidate that mixes a peft module with autopeft's own, it says that
    ``PeftModel.from_pretrained`` alone loads a partial model.
    """
    manifest = json.loads((Path(folder) / "autopeft.json").read_text())
    return str(manifest["loading"]["statement"])


def export_trials(study, path: str | Path) -> Path:
    """Write every trial (the columns of :meth:`Study.trials`) to a table file.

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
    frame = study.trials()
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


def dumps(data: Any) -> str:
    """Pretty JSON for the CLI."""
    return json.dumps(data, indent=2, default=str)

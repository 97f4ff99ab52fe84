"""Working with finished studies: open, export, re-evaluate with seeds, optuna-dashboard.

Heavy libraries load inside the functions that need them.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError, Problem
from autopeft.core.result import TrialResult, TrialStatus
from autopeft.core.study_config import StudyConfig

REEVAL_ATTR = "reeval"  # study user attributes reeval.<trial>, read by autopeft.report.tables


def open_study(ref: str | Path, storage: str | None = None, root: str | Path | None = None):
    """Open an existing study from its study file or its folder (``studies/<name>``).

    Raises:
        ConfigError: when ``ref`` is neither, or the storage holds no such study.
    """
    from autopeft import api
    from autopeft.search.study import Study

    ref = Path(ref)
    if ref.is_dir() and (ref / "study.json").is_file():
        config = _read_snapshot(ref / "study.json")
        root = root or ref.parent
    elif ref.is_file():
        config = api.load(ref)
        if not isinstance(config, StudyConfig):
            raise ConfigError(Problem("STUDY", "a study file or folder is needed", str(ref)))
        root = root or "studies"
    else:
        raise ConfigError(
            Problem(
                "STUDY",
                "no study file or study folder (with study.json) at this path",
                str(ref),
                hint="give the study YAML or studies/<name>",
            )
        )
    study = Study(config, root=root, storage=storage)
    if not study.optuna.trials:
        raise ConfigError(
            Problem(
                "STUDY",
                f"the study {config.name!r} has no trials yet",
                hint="run it first: autopeft run FILE",
            )
        )
    return study


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


def _trial_result(study, number: int):
    results = dict(study.results())
    if number not in results:
        raise ConfigError(
            Problem(
                "--trial",
                "no finished trial with this number",
                number,
                hint=f"trials: 0..{len(study.optuna.trials) - 1}",
            )
        )
    return results[number]


def export_trial(study, number: int, out_dir: str | Path, retrain: bool = False) -> Path:
    """Export trial ``number`` as a loadable folder (see :mod:`autopeft.train.export`).

    The trial's own trained tensors are used when the study kept them; ``retrain`` (or a
    trial without kept weights, e.g. a pruned one) trains it at full fidelity first.
    """
    from autopeft.train.export import export_adapted, rebuild
    from autopeft.train.trial import TrialContext, run_trial, weights_path

    result = _trial_result(study, number)
    ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
    ctx.weights_dir = study.folder / "weights"
    path = weights_path(ctx.weights_dir, result.candidate, study.config.training.seed)
    metrics = result.metrics
    if retrain or not path.is_file():
        fresh = run_trial(ctx, result.candidate)
        if fresh.status is not TrialStatus.COMPLETE:
            raise ConfigError(Problem("--trial", f"retraining failed: {fresh.error}", number))
        metrics = fresh.metrics
    adapted = rebuild(ctx, result.candidate, path)
    return export_adapted(
        adapted, Path(out_dir), study.config, ctx.task.num_labels, metrics, number
    )


def export_trials(study, path: str | Path) -> Path:
    """All trials as a table: ``.csv``, ``.json`` (records) or ``.parquet`` by extension."""
    path = Path(path)
    frame = study.to_pandas()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".json":
        frame.to_json(path, orient="records", indent=2)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ConfigError(
            Problem(
                "--trials",
                "the table format follows the extension: .csv, .json or .parquet",
                path.suffix,
            )
        )
    return path


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
    """
    metric = study.config.task.metric
    front = sorted(study.front(), key=lambda nr: -(nr[1].metrics.get(metric) or 0.0))[:top]
    run = run or _training_seed_runner(study)
    out = []
    for number, result in front:
        runs = []
        for seed in range(seeds):
            res = run(result.candidate, seed)
            runs.append({"seed": seed, "status": res.status.value, **res.metrics})
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
        f"(storage {study.storage_url}); Ctrl-C stops it",
        flush=True,
    )
    run_server(optuna.storages.RDBStorage(study.storage_url), host=host, port=port)


def dumps(data: Any) -> str:
    """Pretty JSON for the CLI."""
    return json.dumps(data, indent=2, default=str)

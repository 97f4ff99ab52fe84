"""The Python API. Heavy libraries are imported inside the functions that need them."""

from __future__ import annotations

from pathlib import Path

from autopeft import methods
from autopeft.core.candidate import Candidate
from autopeft.core.config import load_config, parse_space, parse_study
from autopeft.core.profile import ModelProfile, load_profile
from autopeft.core.resolve import ResolvedSpace, candidate_params
from autopeft.core.space import SearchSpace
from autopeft.core.study_config import StudyConfig
from autopeft.core.summary import summarize


def load(path: str | Path) -> SearchSpace | StudyConfig:
    """Load and validate a study file or a bare search-space file.

    Raises:
        ConfigError: with one paragraph per problem (field path, rule, value, hint).
    """
    return load_config(path, methods.registry())


def space_from_dict(raw: dict) -> SearchSpace:
    """Validate a search space given as a Python dict (the same schema as the YAML)."""
    return parse_space(raw, methods.registry())


def study_from_dict(raw: dict) -> StudyConfig:
    """Validate a study given as a Python dict (the same schema as the YAML)."""
    return parse_study(raw, methods.registry())


def resolve(space: SearchSpace, model: str | ModelProfile = "minilm") -> ResolvedSpace:
    """Resolve a space on a model (a bundled name, a local folder, or a profile)."""
    profile = model if isinstance(model, ModelProfile) else load_profile(model)
    return ResolvedSpace(space, profile, methods.registry())


def validate(path: str | Path, model: str | None = None) -> str:
    """Validate a file and return the summary ``autopeft validate`` prints."""
    config = load(path)
    if isinstance(config, StudyConfig):
        space, model = config.search_space, model or config.model
        kind = f"study {config.name!r}"
    else:
        space, model, kind = config, model or "minilm", "search space"
    resolved = resolve(space, model)
    return f"{path}: valid {kind}\n" + summarize(resolved, methods.registry(), model)


def candidate_trainable_params(candidate: Candidate, model: str | ModelProfile = "minilm") -> int:
    """Exact trainable parameters of a candidate on a model (head excluded), without torch."""
    profile = model if isinstance(model, ModelProfile) else load_profile(model)
    return candidate_params(candidate, profile, methods.registry())


def run(
    config: StudyConfig | str | Path,
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
):
    """Run (or resume) a study and return it; see :class:`autopeft.search.study.Study`.

    Args:
        config: a :class:`StudyConfig` or the path of a study file.
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
        ConfigError: for an invalid study file.
    """
    from autopeft.core.errors import ConfigError, Problem
    from autopeft.search.local import run_local
    from autopeft.search.study import Study

    if not isinstance(config, StudyConfig):
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
    executor = executor or config.executor
    study = Study(config, root=root, storage=storage)
    n = n_trials or config.n_trials
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

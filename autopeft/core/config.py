"""Load and validate search-space and study files (YAML) into typed configs.

Every problem becomes a :class:`ConfigError` paragraph with the field path; nothing here
raises a traceback at a user for bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autopeft.core import yaml_strict
from autopeft.core.errors import ConfigError, Problem, did_you_mean, from_pydantic
from autopeft.core.space import SearchSpace
from autopeft.core.study_config import StudyConfig


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors name the line and column.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 text, or not valid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Problem("file", "no such file", str(path), "check the path"))
    try:
        # Decode explicitly: YAML files are UTF-8, whatever the locale says, and a binary file
        # given by mistake (a model, an archive) must not surface as a UnicodeDecodeError.
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            Problem(
                "file",
                f"the file is not UTF-8 text (byte {err.object[err.start]:#04x} "
                f"at offset {err.start} is not UTF-8)",
                hint="give a YAML text file saved as UTF-8; is this the right file?",
            ),
            source=str(path),
        ) from None
    except OSError as err:
        raise ConfigError(
            Problem("file", f"cannot read the file: {err.strerror or err}", str(path)),
            source=str(path),
        ) from None
    try:
        return yaml_strict.load(text)
    except yaml_strict.YamlProblem as err:
        where = f" at line {err.line}" if err.line else ""
        raise ConfigError(
            Problem("file", f"not accepted YAML{where}: {err}"), source=str(path)
        ) from None
    except RecursionError:
        raise ConfigError(
            Problem("file", f"nesting deeper than {yaml_strict.MAX_DEPTH} levels"),
            source=str(path),
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(
            Problem("file", f"invalid YAML at {where}: {getattr(err, 'problem', err)}"),
            source=str(path),
        ) from None


#: Top-level keys only a study has: a file with one of them is a study even when its
#: ``search_space`` key is misspelt (then that is the error, not twenty unknown fields).
_STUDY_ONLY = set(StudyConfig.model_fields) - set(SearchSpace.model_fields)


def is_study(raw: Any) -> bool:
    """Whether a parsed file is a whole study (else a bare search space)."""
    return isinstance(raw, dict) and bool(_STUDY_ONLY & set(map(str, raw)))


def _unknown_top_level(raw: dict, source: str | None) -> None:
    """One paragraph per unknown top-level key of a study, with the closest known one."""
    known = list(StudyConfig.model_fields)
    problems = [
        Problem(
            str(key),
            f"unknown top-level field {str(key)!r} of a study",
            hint=did_you_mean(str(key), known),
        )
        for key in raw
        if str(key) not in known
    ]
    if problems:
        raise ConfigError(problems, source=source)


def parse_space(raw: Any, methods: dict[str, Any], source: str | None = None) -> SearchSpace:
    """Validate a bare search space (errors are reported under ``search_space.``)."""
    if not isinstance(raw, dict):
        raise ConfigError(
            Problem("search_space", "a search space is a mapping with `modules`", raw),
            source=source,
        )
    try:
        return SearchSpace.model_validate(raw, context={"methods": methods})
    except ValidationError as err:
        raise ConfigError(from_pydantic(err, "search_space"), source=source) from None


def parse_study(
    raw: Any,
    methods: dict[str, Any],
    source: str | None = None,
    base_dir: Path | None = None,
    kinds: dict[str, Any] | None = None,
    samplers: dict[str, Any] | None = None,
) -> StudyConfig:
    """Validate a study; ``search_space`` may be inline or a path relative to the file.

    Args:
        raw: the parsed study (a mapping).
        methods: the module registry, to check module parameters.
        kinds: the task-kind registry (``autopeft.tasks``), for the task's fields, metrics
            and defaults; None leaves them unchecked.
        samplers: the sampler registry (``autopeft.search.samplers``), for the sampler's
            name and traits; None checks against the built-in samplers.
        source: the file name errors are reported under.
        base_dir: the study file's folder, or None for a study built in Python: relative
            paths (``search_space``, ``task.path``, a local ``task.hf_dataset``) are then
            read from the current working directory.

    Raises:
        ConfigError: one paragraph per problem.
    """
    if not isinstance(raw, dict):
        raise ConfigError(Problem("(top level)", "a study file is a mapping", raw), source=source)
    raw = dict(raw)
    _unknown_top_level(raw, source)
    if base_dir is not None and "task" in raw:
        raw["task"] = task_paths_from(raw["task"], base_dir)
    space = raw.get("search_space")
    if isinstance(space, str):
        space_path = (base_dir or Path.cwd()) / space
        if not space_path.is_file():
            space_path = Path(space)
        raw["search_space"] = read_yaml(space_path)
    try:
        context = {"methods": methods, "tasks": kinds, "samplers": samplers}
        return StudyConfig.model_validate(raw, context=context)
    except ValidationError as err:
        raise ConfigError(from_pydantic(err), source=source) from None


def task_paths_from(task: Any, base_dir: Path) -> Any:
    """The ``task`` section with its relative file paths made absolute from ``base_dir``.

    A study file names its data the way it names its search space: relative to itself, so
    the study runs from any working directory (and on Ray workers, whose working directory
    is not the user's). As for ``search_space``, a ``task.path`` that exists only relative to
    the working directory is still read from there, so study files written for that older
    rule keep working. ``hf_dataset`` is a hub id unless a folder of that name exists, so it
    changes only when the folder is next to the study file. Anything else (absolute paths, a
    missing or mistyped section) is returned unchanged, for the schema to judge.
    """
    if not isinstance(task, dict):
        return task
    task = dict(task)
    path = task.get("path")
    if isinstance(path, str) and path and not Path(path).expanduser().is_absolute():
        here = _absolute(base_dir / path)
        # The study's folder wins, also when the file is missing, so that "no such file"
        # names the place it was looked for; absolute, as a trial may run in another folder.
        # A file only the working directory has keeps the path as written (the old rule),
        # so the configuration of a study begun that way is unchanged when it is resumed.
        if here.is_file() or not Path(path).is_file():
            task["path"] = str(here)
    ref = task.get("hf_dataset")
    if isinstance(ref, str) and ref and not Path(ref).expanduser().is_absolute():
        here = _absolute(base_dir / ref)
        if here.is_dir():
            task["hf_dataset"] = str(here)
    return task


def _absolute(path: Path) -> Path:
    # Absolute, with `..` folded, but symlinks kept as the user wrote them.
    return Path(os.path.abspath(path))


def load_config(
    path: str | Path,
    methods: dict[str, Any],
    kinds: dict[str, Any] | None = None,
    samplers: dict[str, Any] | None = None,
) -> SearchSpace | StudyConfig:
    """Load a study file or a bare search-space file (registries as for :func:`parse_study`)."""
    raw = read_yaml(path)
    if is_study(raw):
        return parse_study(raw, methods, str(path), Path(path).parent, kinds, samplers)
    return parse_space(raw, methods, str(path))

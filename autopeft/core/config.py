"""Load and validate search-space and study files (YAML) into typed configs.

Every problem becomes a :class:`ConfigError` paragraph with the field path; nothing here
raises a traceback at a user for bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autopeft.core.errors import ConfigError, Problem, from_pydantic
from autopeft.core.space import SearchSpace
from autopeft.core.study_config import StudyConfig


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors name the line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(Problem("file", "no such file", str(path), "check the path"))
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(
            Problem("file", f"invalid YAML at {where}: {getattr(err, 'problem', err)}"),
            source=str(path),
        ) from None


def is_study(raw: Any) -> bool:
    """Whether a parsed file is a whole study (else a bare search space)."""
    return isinstance(raw, dict) and "search_space" in raw


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
    raw: Any, methods: dict[str, Any], source: str | None = None, base_dir: Path | None = None
) -> StudyConfig:
    """Validate a study; ``search_space`` may be inline or a path relative to the file."""
    if not isinstance(raw, dict):
        raise ConfigError(Problem("(top level)", "a study file is a mapping", raw), source=source)
    raw = dict(raw)
    space = raw.get("search_space")
    if isinstance(space, str):
        space_path = (base_dir or Path.cwd()) / space
        if not space_path.is_file():
            space_path = Path(space)
        raw["search_space"] = read_yaml(space_path)
    try:
        return StudyConfig.model_validate(raw, context={"methods": methods})
    except ValidationError as err:
        raise ConfigError(from_pydantic(err), source=source) from None


def load_config(path: str | Path, methods: dict[str, Any]) -> SearchSpace | StudyConfig:
    """Load a study file or a bare search-space file."""
    raw = read_yaml(path)
    if is_study(raw):
        return parse_study(raw, methods, str(path), Path(path).parent)
    return parse_space(raw, methods, str(path))

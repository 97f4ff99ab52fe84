"""Whether a stored study may continue under a changed study file (``resume_conflicts``)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from autopeft.core.errors import Problem, show_json
from autopeft.core.study_config import TrainingConfig

#: Sections every trial of a study shares: a change makes old and new trials incomparable.
#: The rest (n_trials, sampler, halving, executor, storage) may change when a study resumes,
#: but for the settings below.
TRIAL_DEFINING = ("model", "task", "training", "search_space", "objectives")
#: Settings of the other sections that old and new trials must share: the metric a rung
#: ranks by (the rung points stored by earlier trials are in its units).
TRIAL_DEFINING_SETTINGS = (("halving", "metric"),)


def resume_conflicts(stored: dict[str, Any], current: dict[str, Any], where: str) -> list[Problem]:
    """Why a study stored as ``stored`` cannot continue under ``current`` (both JSON dumps).

    Args:
        stored: the configuration the study's trials were run with.
        current: the configuration it is resumed with.
        where: where the stored configuration can be read (for the hint).

    Returns:
        One problem per changed setting of :data:`TRIAL_DEFINING` (at most 8), else [].
    """
    changed: list[tuple[str, Any, Any]] = []
    for section in TRIAL_DEFINING:
        old, new = stored.get(section), current.get(section)
        if section == "task":
            new = _as_stored(old, new)
        if section == "training" and isinstance(old, dict):
            # Settings added since the study was stored ran at their defaults.
            old = {**TrainingConfig().model_dump(mode="json"), **old}
        _differences(old, new, section, changed)
    for section, key in TRIAL_DEFINING_SETTINGS:
        old, new = (_effective(c, section, key) for c in (stored, current))
        _differences(old, new, f"{section}.{key}", changed)
    return [
        Problem(
            path,
            f"the study's trials were run with {_setting(old)}, and a study keeps the "
            f"{_what(path)} its trials were run with, but got {_setting(new)}",
            hint=f"give the changed study a new name, or set this back ({where} holds the "
            "study's configuration)",
        )
        for path, old, new in changed[:8]
    ]


def _differences(old: Any, new: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    """Append ``(path, old, new)`` for each changed setting, in the file's own paths."""
    if _is_section(old) and _is_section(new):
        for key in sorted(set(old) | set(new), key=str):
            # A parameter's domain dumps under "domains" (searched) or "fixed" (a value); the
            # file names it without either, and a move between them is one change, not two.
            inner = path if key in _DUMP_ONLY else f"{path}.{key}"
            _differences(old.get(key), new.get(key), inner, out)
    elif old != new and all(p != path for p, _, _ in out):
        out.append((path, old, new))


def _as_stored(old: Any, new: Any) -> Any:
    """``new`` task with a data path written as ``old`` wrote it, when both name one file.

    Studies from before data paths were read from the study file's folder stored them
    relative (to the working directory of that run); the same file now arrives absolute and
    ending in that relative path. Any other difference is a different file.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    same = {}
    for key in ("path", "hf_dataset"):
        was, now = old.get(key), new.get(key)
        if was and now and not PurePath(was).is_absolute() and PurePath(now).is_absolute():
            tail = PurePath(was).parts
            if PurePath(now).parts[-len(tail) :] == tail:
                same[key] = was
    return {**new, **same}


def _effective(config: dict[str, Any], section: str, key: str) -> Any:
    """A setting's value, with what its default stands for.

    A rung metric left out is the task metric, so naming the task metric is no change.
    """
    value = dict(config.get(section) or {}).get(key)
    if (section, key) == ("halving", "metric") and value is None:
        return dict(config.get("task") or {}).get("metric")
    return value


def _what(path: str) -> str:
    """What a study keeps: the section of ``path``, or the setting itself (``halving metric``)."""
    if tuple(path.split(".")) in TRIAL_DEFINING_SETTINGS:
        return path.replace(".", " ")
    return path.split(".")[0].replace("_", " ")


def _setting(value: Any) -> str:
    # JSON, as the study's study.json shows it, and long enough to tell two values apart.
    return "the default" if value is None else show_json(value, limit=240)


#: Keys of the dumped configuration that a study file does not write.
_DUMP_ONLY = ("domains", "fixed")


def _is_section(value: Any) -> bool:
    # A domain ({type: int, low: ...}) is one setting: compared whole, not field by field.
    return isinstance(value, dict) and "type" not in value

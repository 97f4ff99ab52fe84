"""Task kinds: what a study trains for, as a registry of :class:`TaskKind` types.

Built-in kinds live one per file in this package and register with :func:`register`
(``classification``, ``causal_lm``). Adding a kind is adding a file: the contract test runs
every registered kind. Importing this package imports no torch.
"""

from __future__ import annotations

import importlib
import pkgutil

from autopeft.tasks.base import TaskKind

_REGISTRY: dict[str, TaskKind] = {}
#: Files of this package that are infrastructure, not task kinds.
_NOT_KINDS = {"base"}
_loaded = False


def register(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: register a task kind under ``cls.name``."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"task kind {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_KINDS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def registry() -> dict[str, TaskKind]:
    """All registered task kinds by name."""
    _load()
    return dict(_REGISTRY)


def get(name: str) -> TaskKind:
    """The task kind ``name`` (KeyError if unknown)."""
    _load()
    return _REGISTRY[name]


__all__ = ["TaskKind", "register", "registry", "get"]

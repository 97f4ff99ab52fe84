"""The PEFT module library: a registry of :class:`MethodSpec` types.

Built-in types live one per file in this package and register with :func:`register`.
Third-party packages add types through the ``autopeft.methods`` entry-point group, each entry
pointing at a ``MethodSpec`` subclass. Importing this package imports no torch or peft.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

from autopeft.methods.base import MethodSpec

_REGISTRY: dict[str, MethodSpec] = {}

#: Files of this package that are infrastructure, not module types.
_NOT_METHODS = {"base", "nn"}
_loaded = False


def register(cls: type[MethodSpec]) -> type[MethodSpec]:
    """Class decorator: register a module type under ``cls.name``."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"module type {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Every other file in this package is one built-in type: adding a type is adding a file.
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_METHODS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for entry in metadata.entry_points(group="autopeft.methods"):
        register(entry.load())


def registry() -> dict[str, MethodSpec]:
    """All registered module types by name."""
    _load()
    return dict(_REGISTRY)


def get(name: str) -> MethodSpec:
    """The module type ``name`` (KeyError if unknown)."""
    _load()
    return _REGISTRY[name]


__all__ = ["MethodSpec", "register", "registry", "get"]

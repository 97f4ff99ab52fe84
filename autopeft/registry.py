"""A registry of plugin types: one file per type in a package, plus an entry-point group.

``autopeft.methods`` (PEFT module types) and ``autopeft.tasks`` (task kinds) are such
packages: every file in them that is not infrastructure defines a type and registers it with
the package's ``register`` decorator, so adding a type is adding a file. Third-party packages
add types through the entry-point group. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Types of one kind by name, instantiated once, discovered on first use."""

    def __init__(self, what: str, package: str, paths: Iterable[str], infrastructure: set[str]):
        """Describe where the types live.

        Args:
            what: what a type is, for error messages (``module type``, ``task kind``).
            package: the package whose files define the built-in types.
            paths: that package's ``__path__``.
            infrastructure: the package's files that define no type.
        """
        self.what, self.package, self.paths = what, package, list(paths)
        self.infrastructure = infrastructure
        self.entry_points = f"autopeft.{package.rsplit('.', 1)[-1]}"
        self._types: dict[str, Any] = {}
        self._loaded = False

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under ``cls.name`` (one instance)."""
        name = cls.name  # type: ignore[attr-defined]
        if name in self._types and type(self._types[name]) is not cls:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._types[name] = cls()
        return cls

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for info in pkgutil.iter_modules(self.paths):
            if info.name not in self.infrastructure and not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        for entry in metadata.entry_points(group=self.entry_points):
            self.register(entry.load())

    def all(self) -> dict[str, T]:
        """Every registered type by name."""
        self._load()
        return dict(self._types)

    def get(self, name: str) -> T:
        """The type ``name`` (KeyError if unknown)."""
        self._load()
        return self._types[name]

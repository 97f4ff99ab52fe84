"""Task kinds: what a study trains for, as a registry of :class:`TaskKind` types.

Built-in kinds live one per file in this package and register with :func:`register`
(``classification``, ``causal_lm``); third-party packages add kinds through the
``autopeft.tasks`` entry-point group. Adding a kind is adding a file: the contract test runs
every registered kind. Importing this package imports no torch.
"""

from __future__ import annotations

from autopeft.registry import Registry
from autopeft.tasks.base import TaskKind

_REGISTRY: Registry[TaskKind] = Registry("task kind", __name__, __path__, {"base"})
register = _REGISTRY.register


def registry() -> dict[str, TaskKind]:
    """All registered task kinds by name."""
    return _REGISTRY.all()


def get(name: str) -> TaskKind:
    """The task kind ``name`` (KeyError if unknown)."""
    return _REGISTRY.get(name)


__all__ = ["TaskKind", "register", "registry", "get"]

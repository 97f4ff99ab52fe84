"""The PEFT module library: a registry of :class:`MethodSpec` types.

Built-in types live one per file in this package and register with :func:`register`.
Third-party packages add types through the ``autopeft.methods`` entry-point group, each entry
pointing at a ``MethodSpec`` subclass. Importing this package imports no torch or peft.
"""

from __future__ import annotations

from autopeft.methods.base import MethodSpec
from autopeft.registry import Registry

_REGISTRY: Registry[MethodSpec] = Registry("module type", __name__, __path__, {"base", "nn"})
register = _REGISTRY.register


def registry() -> dict[str, MethodSpec]:
    """All registered module types by name."""
    return _REGISTRY.all()


def get(name: str) -> MethodSpec:
    """The module type ``name`` (KeyError if unknown)."""
    return _REGISTRY.get(name)


__all__ = ["MethodSpec", "register", "registry", "get"]

"""A concrete PEFT configuration: what one trial builds and trains."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Scalar = int | float | str | bool


class ModuleConfig(BaseModel):
    """One module type switched on in a candidate, with resolved values.

    Attributes:
        method: registered module type (``lora``, ``serial_adapter``, ...).
        params: the method's scalar parameters, resolved (sizes already scaled to the model).
        layers: transformer block indices the module is placed in (sorted, non-empty).
        targets: canonical sub-layers it targets (empty for methods without targets).
        sizes: optional per-layer size/rank overriding the method's size parameter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    params: dict[str, Scalar] = Field(default_factory=dict)
    layers: tuple[int, ...] = ()
    targets: tuple[str, ...] = ()
    sizes: dict[int, int] | None = None

    def size_at(self, layer: int, size_param: str | None) -> int:
        """The size/rank this module has in block ``layer``."""
        if self.sizes is not None:
            return int(self.sizes.get(layer, 0))
        if size_param is None:
            return 1
        return int(self.params[size_param])


class Candidate(BaseModel):
    """A full configuration: the set of modules switched on (order-free).

    Attributes:
        modules: the module types switched on, sorted by name.
        training: the training settings this candidate searched (``lr``, ``weight_decay``,
            ``warmup`` and the memory levers of :mod:`autopeft.core.levers`), overriding the
            study's recipe for its trials; empty when the search space searches none.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    modules: tuple[ModuleConfig, ...] = ()
    training: dict[str, Scalar] = Field(default_factory=dict)

    def module(self, method: str) -> ModuleConfig | None:
        """The config of ``method`` if it is switched on."""
        return next((m for m in self.modules if m.method == method), None)

    @property
    def methods(self) -> tuple[str, ...]:
        """Names of the module types switched on."""
        return tuple(m.method for m in self.modules)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (canonical order).

        ``training`` is left out when empty, so a candidate without searched training
        settings has the same JSON and key as before the field existed (studies and weights
        written then stay valid).
        """
        data = json.loads(self.model_dump_json())
        if not self.training:
            del data["training"]
        return data

    def key(self) -> str:
        """A stable hash for de-duplication and caching."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """A short human-readable description."""
        tail = "".join(f" | {k}={_short(v)}" for k, v in sorted(self.training.items()))
        if not self.modules:
            return "head only" + tail
        parts = []
        for m in self.modules:
            params = ",".join(f"{k}={v}" for k, v in sorted(m.params.items()))
            where = f"L{_ranges(m.layers)}" if m.layers else ""
            tgt = "+".join(m.targets)
            parts.append(" ".join(x for x in (m.method, params, tgt, where) if x))
        return " | ".join(parts) + tail


def _short(value: Scalar) -> str:
    # Rates in three digits; levers (bool, int, str) as written.
    return f"{value:.3g}" if isinstance(value, float) else str(value).lower()


def _ranges(idx: tuple[int, ...]) -> str:
    out: list[str] = []
    start: int | None = None
    prev = 0  # set with start
    for i in idx:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return "[" + ",".join(out) + "]"

"""Building blocks of the search-space DSL: parameter domains, layer and target selections.

Every model here validates on its own and raises :class:`RuleError` with a hint, so the loader
can report ``path: rule, but got VALUE. Hint: ...`` (see :mod:`autopeft.core.errors`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from autopeft.core.errors import RuleError, did_you_mean
from autopeft.core.model_profile import KNOWN_TARGET_NAMES


class Suggest(Protocol):
    """The subset of ``optuna.Trial`` that sampling uses."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """An integer in ``[low, high]``."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """A real in ``[low, high]``."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """One of ``choices``."""


Scalar = StrictBool | StrictInt | StrictFloat | str


class _Strict(BaseModel):
    # Dump by alias so a config round-trips through JSON (`values`, not `values_`); accept
    # the field name too, as snapshots of studies written before did.
    model_config = ConfigDict(
        extra="forbid", frozen=True, serialize_by_alias=True, validate_by_name=True
    )


class IntParam(_Strict):
    """An integer range ``low..high`` (inclusive), optionally log-scaled or stepped."""

    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    log: bool = False
    step: StrictInt = 1
    relative_to_hidden: StrictInt | None = None

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        if self.step < 1:
            raise RuleError(f"step >= 1 must hold, but got step={self.step}")
        if self.log and self.step != 1:
            raise RuleError("log scale and step != 1 cannot be combined", "drop one of them")
        _check_reference(self.relative_to_hidden)
        return self

    def values(self) -> list[int] | None:
        """All values (None when there are more than 10,000)."""
        n = (self.high - self.low) // self.step + 1
        return list(range(self.low, self.high + 1, self.step)) if n <= 10_000 else None

    def count(self) -> float:
        """Number of distinct values."""
        return (self.high - self.low) // self.step + 1

    def extremes(self) -> list[int]:
        """The values a monotone formula takes its minimum and maximum at."""
        return sorted({self.low, self.high - (self.high - self.low) % self.step})


class FloatParam(_Strict):
    """A real range ``low..high``, optionally log-scaled."""

    type: Literal["float"]
    low: StrictFloat | StrictInt
    high: StrictFloat | StrictInt
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        return self

    def values(self) -> None:
        """A continuous domain has no finite value list."""
        return None

    def count(self) -> float:
        """Infinite, unless the range is a single point."""
        return 1 if self.low == self.high else math.inf

    def extremes(self) -> list[float]:
        """Both ends."""
        return sorted({float(self.low), float(self.high)})


class ChoiceParam(_Strict):
    """A categorical choice among listed values."""

    type: Literal["choice"]
    values_: list[Scalar] = Field(alias="values")
    relative_to_hidden: StrictInt | None = None

    @model_validator(mode="after")
    def _check(self) -> ChoiceParam:
        if not self.values_:
            raise RuleError("a choice needs at least one value", "list the values, e.g. [8, 16]")
        if len(set(map(repr, self.values_))) != len(self.values_):
            raise RuleError(f"choice values must be distinct, but got {self.values_}")
        _check_reference(self.relative_to_hidden)
        return self

    def values(self) -> list[Any]:
        """The listed values."""
        return list(self.values_)

    def count(self) -> float:
        """Number of values."""
        return len(self.values_)

    def extremes(self) -> list[Any]:
        """All values (a formula is evaluated on each)."""
        return list(self.values_)


ParamSpec = Annotated[IntParam | FloatParam | ChoiceParam, Field(discriminator="type")]


def _check_bounds(low: float, high: float, log: bool) -> None:
    if low > high:
        raise RuleError(
            f"low <= high must hold, but got low={low}, high={high}",
            f"swap the bounds: low: {high}, high: {low}",
        )
    if log and low <= 0:
        raise RuleError(
            f"a log scale needs low > 0, but got low={low}",
            "use a choice list that includes 0 for 'off', or set log: false",
        )


def _check_reference(ref: int | None) -> None:
    """Reject a ``relative_to_hidden`` reference size below 1.

    Values are scaled to ``max(1, round(v * hidden / ref))`` (``autopeft.core.resolve``):
    0 would divide by zero and a negative size would make every size 1; both are typos.

    Raises:
        RuleError: at the sub-path ``relative_to_hidden``.
    """
    if ref is not None and ref < 1:
        raise RuleError(
            f"relative_to_hidden >= 1 must hold, but got relative_to_hidden={ref}",
            "give the hidden size the values were chosen for, e.g. 768, or drop the key",
            path="relative_to_hidden",
        )


def as_mapping(raw: Any, rule: str, hint: str) -> dict:
    """A section's raw YAML as a dict: ``{}`` when left empty; a RuleError when not a mapping."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RuleError(rule, hint, raw)
    return raw


def normalise_param(raw: Any) -> Any:
    """Shorthands: a list is a choice; a dict without ``type`` is rejected by the union."""
    if isinstance(raw, list):
        return {"type": "choice", "values": raw}
    return raw


class LayerPattern(_Strict):
    """A fixed layer pattern: ``{top: k}``, ``{bottom: k}``, ``{every: n, offset}``, ``{mask}``."""

    top: StrictInt | None = None
    bottom: StrictInt | None = None
    every: StrictInt | None = None
    offset: StrictInt = 0
    mask: list[Literal[0, 1] | StrictBool] | None = None

    @model_validator(mode="after")
    def _check(self) -> LayerPattern:
        given = [k for k in ("top", "bottom", "every", "mask") if getattr(self, k) is not None]
        if len(given) != 1:
            raise RuleError(
                f"a layer pattern needs exactly one of top, bottom, every, mask, but got {given}",
                "e.g. {top: 4} or {every: 2} or {mask: [1, 0, 1, 1]}",
            )
        for key in ("top", "bottom", "every"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise RuleError(f"{key} >= 1 must hold, but got {key}={value}")
        if self.mask is not None and not any(self.mask):
            raise RuleError(
                "an empty layer mask places the module nowhere",
                "switch at least one layer on, or make the module optional",
            )
        if self.offset < 0:
            raise RuleError(f"offset >= 0 must hold, but got offset={self.offset}")
        return self

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """Layer indices on a model with ``num_layers`` blocks (RuleError if it does not fit)."""
        if self.mask is not None:
            if len(self.mask) != num_layers:
                raise RuleError(
                    f"the mask needs one entry per layer ({num_layers}), "
                    f"but got {len(self.mask)} entries"
                )
            return tuple(i for i, on in enumerate(self.mask) if on)
        if self.top is not None:
            return tuple(range(max(0, num_layers - self.top), num_layers))
        if self.bottom is not None:
            return tuple(range(min(self.bottom, num_layers)))
        if self.offset >= num_layers:
            raise RuleError(f"offset < {num_layers} layers must hold, but got {self.offset}")
        return tuple(range(self.offset, num_layers, self.every or 1))


def parse_layer_spec(value: Any) -> Any:
    """``all`` / ``shared`` / ``search``, a list of layer indices, or a :class:`LayerPattern`."""
    if isinstance(value, str):
        if value not in ("all", "shared", "search"):
            raise RuleError(
                f"unknown layer selection {value!r}",
                "use all, shared, search, a list of indices, or {top: k} / {every: n} / {mask}",
            )
        return value
    if isinstance(value, list):
        if not value:
            raise RuleError(
                "an empty layer list places the module nowhere",
                "list at least one layer index, or use 'all'",
                value,
            )
        bad = [i for i in value if not isinstance(i, int) or isinstance(i, bool) or i < 0]
        if bad:
            raise RuleError(f"layer indices must be integers >= 0, but got {bad}")
        if len(set(value)) != len(value):
            raise RuleError(f"layer indices must be distinct, but got {value}")
        return value
    if isinstance(value, dict):
        return _validate_nested(LayerPattern, value)
    raise RuleError(
        "layers must be a name, a list of indices or a pattern mapping",
        "e.g. all, search, [0, 2], {top: 4}",
        value,
    )


def parse_target_spec(value: Any) -> Any:
    """A list of target names, or ``{choice: [[...], ...]}``; names are checked."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = _validate_nested(TargetChoice, value)
        groups = value.choice
    elif isinstance(value, list):
        groups = [value]
    else:
        raise RuleError("targets must be a list of names", "e.g. [q, v] or [attn, ffn]", value)
    known = KNOWN_TARGET_NAMES
    for group in groups:
        if not group:
            raise RuleError("targets must not be empty", "e.g. [q, v] or [attn]", group)
        if not isinstance(group, list):
            raise RuleError("a target choice is a list of names", "e.g. [q, v]", group)
        for name in group:
            if not isinstance(name, str):
                raise RuleError("a target is a name", "e.g. [q, v] or [attn, ffn]", name)
            if name not in known:
                raise RuleError("unknown target", did_you_mean(name, known), name)
    return value


def _validate_nested(model: type[BaseModel], value: dict[str, Any]) -> Any:
    # Turn a nested model's ValidationError into one RuleError with its sub-path.
    try:
        return model.model_validate(value)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        cause = (first.get("ctx") or {}).get("error")
        sub = ".".join(str(p) for p in first.get("loc", ()))
        if isinstance(cause, RuleError):
            raise (cause.under(sub) if sub else cause) from None
        raise RuleError(first["msg"], None, first.get("input"), path=sub or None) from None


def resolve_layers(spec: Any, num_layers: int) -> tuple[int, ...] | None:
    """Fixed layer indices of ``spec``; None when the layers are searched."""
    if spec == "search":
        return None
    if spec in ("all", "shared"):
        return tuple(range(num_layers))
    if isinstance(spec, LayerPattern):
        return spec.resolve(num_layers)
    too_big = [i for i in spec if i >= num_layers]
    if too_big:
        raise RuleError(
            f"layer indices must be < {num_layers} (the model's layer count), but got {too_big}"
        )
    return tuple(sorted(spec))


class TargetChoice(_Strict):
    """A searched choice among target sets: ``{choice: [[q, v], [q, k, v, o]]}``."""

    choice: list[list[str]]

    @model_validator(mode="after")
    def _check(self) -> TargetChoice:
        if not self.choice:
            raise RuleError("a target choice needs at least one list", "e.g. [[q, v], [attn]]")
        return self

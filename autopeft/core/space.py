"""The search space: which module types, their parameters, placement, and a budget.

YAML and Python build the same :class:`SearchSpace`. Module-level keys other than the reserved
placement keys (``targets``, ``layers``, ``per_layer``, ``optional``) are the method's own
parameters, each a fixed value, a list (a choice) or a ``{type: int|float|choice, ...}`` domain.
Validation needs the module library, passed as pydantic context (``{"methods": registry}``) so
the core never imports it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autopeft.core.errors import RuleError, did_you_mean
from autopeft.core.params import (
    ChoiceParam,
    FloatParam,
    IntParam,
    ParamSpec,
    as_mapping,
    normalise_param,
    parse_layer_spec,
    parse_target_spec,
)
from autopeft.core.training_space import TrainingSpace

RESERVED = ("targets", "layers", "per_layer", "optional")


class MethodInfo(Protocol):
    """What the DSL needs to know of a module type (satisfied by ``MethodSpec``)."""

    name: str
    backend: str
    default_space: dict[str, Any]
    size_param: str | None
    default_targets: tuple[str, ...]
    uses_layers: bool
    supports_per_layer: bool
    #: ``{flag: (other type, what both train)}`` (see ``MethodSpec.overlaps``).
    overlaps: dict[str, tuple[str, str]]


class ModuleSpace(BaseModel):
    """The sub-space of one module type.

    Method parameters given as domains (``{type: ...}`` or a list) land in ``domains``, fixed
    values in ``fixed``; keeping them apart avoids ambiguous unions and vague errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    domains: dict[str, ParamSpec] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    targets: Any = None
    layers: Any = "shared"
    per_layer: StrictBool = False
    optional: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _split(cls, raw: Any) -> Any:
        # Method parameters sit beside the reserved keys in YAML; sort them by kind.
        raw = as_mapping(raw, "a module's settings are a mapping", "e.g. lora: {rank: [4, 8]}")
        if not raw:
            return {}
        if "domains" in raw or "fixed" in raw:
            return raw  # already split: a serialised ModuleSpace (JSON round trip)
        out: dict[str, Any] = {k: v for k, v in raw.items() if k in RESERVED}
        out["domains"], out["fixed"] = {}, {}
        for key, value in raw.items():
            if key in RESERVED:
                continue
            value = normalise_param(value)
            out["domains" if isinstance(value, dict) else "fixed"][key] = value
        return out

    @property
    def params(self) -> dict[str, Any]:
        """Domains and fixed values together, by parameter name."""
        return {**self.fixed, **self.domains}

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        return parse_layer_spec(value)

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        return parse_target_spec(value)


def parse_budget_params(value: Any) -> Any:
    """Accept ``1e6``, ``1000000`` or a percentage string ``"0.5%"`` of the base model."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(-?[0-9.]+)\s*%\s*", value)
        if not match:
            raise RuleError(
                f"a parameter budget is a count or a percentage, but got {value!r}",
                "e.g. 200000 or '0.5%'",
            )
        value = float(match.group(1)) / 100.0
        if not 0 < value <= 1:
            raise RuleError(f"a percentage budget must be in (0%, 100%], but got {value * 100:g}%")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleError(f"a parameter budget is a number or '0.5%', but got {value!r}")
    if value < 0:
        raise RuleError(
            f"budget >= 0 must hold, but got {value}", "use a positive count or a percentage"
        )
    if isinstance(value, float) and 0 < value < 1:
        return value  # a fraction of the base model (how a percentage is stored)
    if isinstance(value, float) and not value.is_integer():
        raise RuleError(
            f"a parameter count is a whole number, but got {value:g}",
            f"write {math.floor(value):d} or {math.ceil(value):d}, or a fraction of the base model "
            "as a percentage such as '0.5%'",
        )
    return int(value)


class Budget(BaseModel):
    """Hard limits; a candidate over budget is INFEASIBLE and never trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: int: absolute count; float in (0, 1): fraction of the base model's parameters.
    max_trainable_params: int | float | None = None
    max_memory_mb: StrictFloat | StrictInt | None = None

    @field_validator("max_trainable_params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        return None if value is None else parse_budget_params(value)

    @field_validator("max_memory_mb")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is not None and value <= 0:
            raise RuleError(f"budget > 0 must hold, but got {value}", "give megabytes, e.g. 8000")
        return value

    def violation(self, params: int, predicted_mb: float, base_params: int) -> str | None:
        """Why a candidate with ``params`` and ``predicted_mb`` is over budget, or None."""
        limit = self.param_limit(base_params)
        if limit is not None and params > limit:
            return f"{params:,} trainable parameters exceed the budget of {limit:,}"
        if self.max_memory_mb is not None and predicted_mb > self.max_memory_mb:
            return (
                f"predicted memory {predicted_mb:,.0f} MiB exceeds the budget "
                f"{self.max_memory_mb:,.0f}"
            )
        return None

    def param_limit(self, base_params: int) -> int | None:
        """The absolute trainable-parameter limit for a base model of ``base_params``."""
        limit = self.max_trainable_params
        if limit is None:
            return None
        return int(limit * base_params) if isinstance(limit, float) else limit


class SearchSpace(BaseModel):
    """Module types to search, a shared layer placement, training settings, and a budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modules: dict[str, ModuleSpace]
    layers: Any = "all"
    #: Training settings searched per trial (learning rate, ...); none by default.
    training: TrainingSpace = TrainingSpace()
    budget: Budget = Budget()

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        if value == "shared":
            raise RuleError(
                "'shared' refers to this setting itself", "use all, search or a pattern", value
            )
        return parse_layer_spec(value)

    @field_validator("modules", mode="before")
    @classmethod
    def _modules_known(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        if not value:
            raise RuleError("at least one module type is needed", "e.g. modules: {lora: {}}")
        methods = (info.context or {}).get("methods")
        if methods is not None:
            for name in value:
                if name not in methods:
                    raise RuleError(
                        f"unknown module type {name!r}",
                        did_you_mean(name, methods) + "; `autopeft methods` lists them",
                        name,
                        path=name,
                    )
        return value

    @field_validator("modules")
    @classmethod
    def _modules_fit(cls, value: dict[str, ModuleSpace], info: ValidationInfo) -> Any:
        methods = (info.context or {}).get("methods")
        if methods is None:
            return value
        for name, module in value.items():
            try:
                check_module(name, module, methods[name])
            except RuleError as err:
                raise err.under(name) from None
        _check_overlaps(value, methods)
        return value


def _check_overlaps(modules: dict[str, ModuleSpace], methods: dict[str, Any]) -> None:
    # A type's flag that, when it can be true, trains another type's tensors
    # (MethodSpec.overlaps): the exact parameter count of a candidate would count them twice.
    for name in modules:
        for flag, (other, what) in methods[name].overlaps.items():
            if other not in modules:
                continue
            value = modules[name].params.get(flag, methods[name].default_space.get(flag))
            values = value.values() if isinstance(value, ChoiceParam) else [value]
            if True in values:
                raise RuleError(
                    f"{name} with {flag}: true and {other} both train {what}",
                    f"set {name}: {{{flag}: false}} when {other} is searched",
                    value,
                    path=f"{name}.{flag}",
                )


def check_module(name: str, module: ModuleSpace, spec: MethodInfo) -> None:
    """Check a module's sub-space against what its type accepts."""
    for key, param in module.params.items():
        if key not in spec.default_space:
            raise RuleError(
                f"{name} has no parameter {key!r}",
                did_you_mean(key, list(spec.default_space) + list(RESERVED)),
                key,
                path=key,
            )
        try:
            _check_param_type(name, key, param, spec.default_space[key])
        except RuleError as err:
            raise err.under(key) from None
    if module.targets is not None and not spec.default_targets:
        raise RuleError(f"{name} has no targets to choose", "remove `targets`", path="targets")
    if module.layers not in ("shared", "all") and not spec.uses_layers:
        raise RuleError(f"{name} is not placed per layer", "remove `layers`", path="layers")
    if module.per_layer and (not spec.supports_per_layer or spec.size_param is None):
        raise RuleError(
            f"{name} does not support per-layer sizes", "remove `per_layer`", path="per_layer"
        )


def _kind(value: Any) -> type:
    return bool if isinstance(value, bool) else float if isinstance(value, float) else type(value)


def _check_param_type(name: str, key: str, param: Any, default: Any) -> None:
    # The default's type is the parameter's type; ints are accepted where floats are expected.
    if isinstance(default, dict):
        if default["type"] == "choice":
            want = _kind(next(v for v in default["values"]))
        else:
            want = int if default["type"] == "int" else float
    else:
        want = _kind(default)
    values: list[Any]
    if isinstance(param, (IntParam, FloatParam)):
        values = [param.low, param.high]
        if want is int and isinstance(param, FloatParam):
            raise RuleError(f"{name}.{key} takes integers, but got a float range", "type: int")
        if want in (str, bool):
            raise RuleError(f"{name}.{key} takes {want.__name__} values, not a numeric range")
    elif isinstance(param, ChoiceParam):
        values = param.values()
    else:
        if not isinstance(param, (bool, int, float, str)):
            raise RuleError(
                f"{name}.{key} takes a value, a list of choices or a {{type: ...}} domain",
                f"the default is {default!r}",
                param,
            )
        values = [param]
    for v in values:
        ok = _kind(v) is want or (want is float and _kind(v) is int)
        if not ok:
            raise RuleError(
                f"{name}.{key} takes {want.__name__} values, but got {v!r}",
                f"the default is {default!r}",
            )

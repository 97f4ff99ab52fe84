"""Training settings searched per trial beside the modules: learning rate, weight decay, warmup.

A search space's ``training`` section gives each searched setting a domain, in the same DSL as
a module parameter (a list is a choice; ``{type: float, low, high, log}`` a range)::

    training:
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      warmup: [0.0, 0.06]

The memory levers (:mod:`autopeft.core.levers`: ``gradient_checkpointing``,
``micro_batch_size``, ``max_length``, ``dtype``, ``quantization``) are searched the same way,
as lists of choices::

    training:
      quantization: [none, nf4]
      gradient_checkpointing: [false, true]

A trial's values override the study's ``training`` recipe for that trial only
(:meth:`autopeft.core.candidate.Candidate.training`) and are part of its candidate: two
candidates that differ only in a lever are different candidates. A setting that is not
searched keeps the study's value. A fixed value belongs in the study's ``training`` section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopeft.core.candidate import Scalar
from autopeft.core.errors import RuleError, did_you_mean
from autopeft.core.levers import QUANTIZATIONS
from autopeft.core.params import (
    ChoiceParam,
    FloatParam,
    ParamSpec,
    Suggest,
    as_mapping,
    normalise_param,
)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: Searchable settings: the rule every value must obey, and its test.
SEARCHABLE: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "lr": ("lr > 0", lambda v: _number(v) and v > 0),
    "weight_decay": ("weight_decay >= 0", lambda v: _number(v) and v >= 0),
    "warmup": ("0 <= warmup <= 1", lambda v: _number(v) and 0 <= v <= 1),
    "gradient_checkpointing": (
        "gradient_checkpointing is true or false",
        lambda v: isinstance(v, bool),
    ),
    "micro_batch_size": ("micro_batch_size is an integer >= 1", lambda v: _integer(v) and v >= 1),
    "max_length": (
        "max_length is an integer in [8, 32768]",
        lambda v: _integer(v) and 8 <= v <= 32768,
    ),
    "dtype": ("dtype is one of fp32, bf16, fp16", lambda v: v in ("fp32", "bf16", "fp16")),
    "quantization": (
        f"quantization is one of {', '.join(QUANTIZATIONS)}",
        lambda v: isinstance(v, str) and v in QUANTIZATIONS,
    ),
}
#: Settings searched only as a list of choices (no ranges), and how a value is stored.
CHOICE_ONLY = ("gradient_checkpointing", "micro_batch_size", "max_length", "dtype", "quantization")
_EXAMPLE = "e.g. training: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}"


class TrainingSpace(BaseModel):
    """The training settings a search space searches (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domains: dict[str, ParamSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, raw: Any) -> Any:
        raw = as_mapping(raw, "the training section maps settings to domains", _EXAMPLE)
        if set(raw) == {"domains"}:
            return raw  # already split: a serialised TrainingSpace (JSON round trip)
        domains = {}
        for key, value in raw.items():
            if key not in SEARCHABLE:
                raise RuleError(
                    f"{key!r} is not a searchable training setting",
                    did_you_mean(key, SEARCHABLE) + "; other settings are fixed in the study's "
                    "training section",
                    path=key,
                )
            value = normalise_param(value)
            if not isinstance(value, dict):
                raise RuleError(
                    f"a searched {key} takes a list of choices or a {{type: float, ...}} domain",
                    f"a fixed {key} belongs in the study's training section",
                    value,
                    path=key,
                )
            if key in CHOICE_ONLY and value.get("type") != "choice":
                raise RuleError(
                    f"a searched {key} takes a list of choices",
                    f"e.g. {key}: {_CHOICE_EXAMPLES[key]}",
                    path=key,
                )
            domains[key] = value
        return {"domains": domains}

    @model_validator(mode="after")
    def _bounds(self) -> TrainingSpace:
        for key, param in self.domains.items():
            rule, holds = SEARCHABLE[key]
            values = param.values() if isinstance(param, ChoiceParam) else [param.low, param.high]
            for value in values:
                if not holds(value):
                    raise RuleError(
                        f"{rule} must hold for every value, but got {value!r}",
                        f"the study's default is {_DEFAULTS[key]}",
                        path=key,
                    )
        return self

    def sample(self, suggest: Suggest) -> dict[str, Scalar]:
        """One value per searched setting, suggested as ``training.<setting>``.

        Rates are floats (so a candidate's key does not depend on how a number was
        written); the levers keep their type (bool, int, str).
        """
        out: dict[str, Scalar] = {}
        for key, p in self.domains.items():
            name = f"training.{key}"
            if isinstance(p, ChoiceParam):
                value = suggest.suggest_categorical(name, p.values())
            elif isinstance(p, FloatParam):
                value = suggest.suggest_float(name, float(p.low), float(p.high), log=p.log)
            else:  # an int range
                value = suggest.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            out[key] = value if key in CHOICE_ONLY else float(value)
        return out

    def values(self, key: str) -> list[Any] | None:
        """The choices of a searched setting (None when it is not searched or a range)."""
        p = self.domains.get(key)
        return list(p.values()) if isinstance(p, ChoiceParam) else None

    def count(self) -> float:
        """Distinct assignments (``inf`` with a continuous range)."""
        total = 1.0
        for p in self.domains.values():
            total *= p.count()
        return total


#: The study's defaults, quoted in hints (kept equal to TrainingConfig's by a test).
_DEFAULTS = {
    "lr": 5e-3,
    "weight_decay": 0.0,
    "warmup": 0.06,
    "gradient_checkpointing": False,
    "micro_batch_size": None,
    "max_length": None,
    "dtype": "fp32",
    "quantization": "none",
}
_CHOICE_EXAMPLES = {
    "gradient_checkpointing": "[false, true]",
    "micro_batch_size": "[4, 8]",
    "max_length": "[128, 256]",
    "dtype": "[fp32, bf16]",
    "quantization": "[none, nf4]",
}

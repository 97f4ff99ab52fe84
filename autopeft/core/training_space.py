"""Training settings searched per trial beside the modules: learning rate, weight decay, warmup.

A search space's ``training`` section gives each searched setting a domain, in the same DSL as
a module parameter (a list is a choice; ``{type: float, low, high, log}`` a range)::

    training:
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      warmup: [0.0, 0.06]

A trial's values override the study's ``training`` recipe for that trial only
(:meth:`autopeft.core.candidate.Candidate.training`); a setting that is not searched keeps the
study's value. A fixed value belongs in the study's ``training`` section, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autopeft.core.errors import RuleError, did_you_mean
from autopeft.core.params import ChoiceParam, FloatParam, ParamSpec, as_mapping, normalise_param

if TYPE_CHECKING:
    from autopeft.core.resolve import Suggest

#: Searchable settings: the rule every value must obey, and its test.
SEARCHABLE: dict[str, tuple[str, Callable[[float], bool]]] = {
    "lr": ("lr > 0", lambda v: v > 0),
    "weight_decay": ("weight_decay >= 0", lambda v: v >= 0),
    "warmup": ("0 <= warmup <= 1", lambda v: 0 <= v <= 1),
}
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
            domains[key] = value
        return {"domains": domains}

    @model_validator(mode="after")
    def _bounds(self) -> TrainingSpace:
        for key, param in self.domains.items():
            rule, holds = SEARCHABLE[key]
            values = param.values() if isinstance(param, ChoiceParam) else [param.low, param.high]
            for value in values:
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if not number or not holds(value):
                    raise RuleError(
                        f"{rule} must hold for every value, but got {value!r}",
                        f"the study's default is {_DEFAULTS[key]}",
                        path=key,
                    )
        return self

    def sample(self, suggest: Suggest) -> dict[str, float]:
        """One value per searched setting, suggested as ``training.<setting>``."""
        out: dict[str, float] = {}
        for key, p in self.domains.items():
            name = f"training.{key}"
            if isinstance(p, ChoiceParam):
                value = suggest.suggest_categorical(name, p.values())
            elif isinstance(p, FloatParam):
                value = suggest.suggest_float(name, float(p.low), float(p.high), log=p.log)
            else:  # an int range
                value = suggest.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            out[key] = float(value)
        return out

    def count(self) -> float:
        """Distinct assignments (``inf`` with a continuous range)."""
        total = 1.0
        for p in self.domains.values():
            total *= p.count()
        return total


#: The study's defaults, quoted in hints (kept equal to TrainingConfig's by a test).
_DEFAULTS = {"lr": 5e-3, "weight_decay": 0.0, "warmup": 0.06}

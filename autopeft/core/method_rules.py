"""What values a method accepts, checked when a space is read (torch-free).

Two kinds of rule: a parameter's own values (``ValueRule``s a method declares, checked for
every value a domain can take) and rules between a candidate's parameters
(``MethodSpec.check``, per candidate: such a candidate is recorded INFEASIBLE).
"""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError, Problem
from autopeft.core.model_profile import ModelProfile
from autopeft.core.params import ChoiceParam, FloatParam, IntParam


def _reachable(param: Any) -> list[Any]:
    """The values of a domain worth checking: every choice, a range's two ends, a value."""
    if isinstance(param, ChoiceParam):
        return list(param.values())
    if isinstance(param, (IntParam, FloatParam)):
        return [param.low, param.high]
    return [param]


def check_values(name: str, spec: Any, given: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Refuse values a method cannot train with now, instead of failing every trial later.

    Args:
        name: the module type (for the field path).
        spec: its ``MethodSpec``, whose ``value_rule(key)`` says what ``key`` accepts.
        given: the parameters the space sets.
        defaults: the method's own default space (for the rest, and named in the hint).

    Raises:
        ConfigError: one paragraph per parameter with a value its rule refuses.
    """
    rule_of = getattr(spec, "value_rule", None)
    problems = []
    for key, param in {**defaults, **given}.items():
        rule = rule_of(key) if rule_of else None
        if rule is None:
            continue
        for value in _reachable(param):
            why = rule.why(key, value)
            if why:
                source = "" if key in given else " (the method's default space)"
                problems.append(
                    Problem(
                        f"search_space.modules.{name}.{key}",
                        f"{why} for every value{source}, but got {value!r}",
                        hint=f"the default is {_domain_text(defaults.get(key))}",
                    )
                )
                break
    if problems:
        raise ConfigError(problems)


def _domain_text(param: Any) -> str:
    if isinstance(param, ChoiceParam):
        return f"a choice of {param.values()}"
    return repr(param)


def method_violation(
    candidate: Candidate, profile: ModelProfile, methods: dict[str, Any]
) -> str | None:
    """The first method rule ``candidate`` breaks on ``profile`` (``method: rule``), or None.

    Rules between a module's parameters (``MethodSpec.check``): such a candidate cannot be
    built, so a trial records it INFEASIBLE and ``validate`` counts the share it stops.
    """
    for m in candidate.modules:
        why = methods[m.method].check(profile, m)
        if why:
            return f"{m.method}: {why}"
    return None

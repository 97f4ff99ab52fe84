"""The text ``autopeft validate`` prints: what a space contains and spans on a model."""

from __future__ import annotations

import math
from typing import Any

from autopeft.core.errors import ConfigError, Problem
from autopeft.core.method_rules import method_violation
from autopeft.core.resolve import (
    RandomSuggest,
    ResolvedSpace,
    candidate_params,
    parameter_domains,
)


def _layers_text(resolved: ResolvedSpace) -> str:
    spec = resolved.space.layers
    if resolved.shared_layers is None:
        n = resolved.profile.num_layers
        return f"searched per-layer on/off mask shared by the modules ({n} parameters)"
    if hasattr(spec, "model_dump"):  # a pattern: shown as written, e.g. {bottom: 3}
        given = spec.model_dump(exclude_none=True, exclude_defaults=True)
        spec = "{" + ", ".join(f"{k}: {v}" for k, v in given.items()) + "}"
    return f"{spec} -> layers {list(resolved.shared_layers)}"


def _pct(n: float, base: int) -> str:
    return f"{100.0 * n / base:.3g}%"


def summarize(
    resolved: ResolvedSpace, methods: dict[str, Any], model_name: str, samples: int = 1000
) -> str:
    """A multi-line summary: modules, parameters, size, parameter range, budget fit."""
    prof = resolved.profile
    lines = [f"model: {model_name} ({prof.summary()})"]
    mods = ", ".join(f"{p.name} ({p.spec.backend})" for p in resolved.plans)
    lines.append(f"modules: {mods}")
    peft = [p.name for p in resolved.plans if p.spec.backend == "peft"]
    if len(peft) > 1:
        lines.append(f"  one peft-backed module per candidate, chosen by `peft_method`: {peft}")
    lines.append(f"layers: {_layers_text(resolved)}")
    domains = parameter_domains(resolved)
    lines.append(f"searched parameters ({len(domains)}):")
    width = max((len(k) for k in domains), default=0)
    lines += [f"  {name:<{width}}  {dom}" for name, dom in domains.items()]
    refs = sorted(
        {
            ref
            for plan in resolved.plans
            for p in plan.params.values()
            if (ref := getattr(p, "relative_to_hidden", None))
        }
    )
    for ref in refs:
        lines.append(
            f"  (values marked relative_to_hidden: {ref} are scaled to hidden "
            f"{prof.hidden_size}: x{prof.hidden_size / ref:g}, rounded, at least 1)"
        )
    size = resolved.size()
    size_text = (
        "infinitely many (a parameter is continuous)" if math.isinf(size) else f"{size:,.0f}"
    )
    lines.append(f"distinct configurations: {size_text}")
    lo, hi = resolved.param_range()
    head = f", plus the classifier head ({prof.head_params:,})" if prof.has_head else ""
    lines.append(
        f"trainable parameters: {lo:,} .. {hi:,} ({_pct(lo, prof.base_params)} .. "
        f"{_pct(hi, prof.base_params)} of {prof.base_params:,}){head}"
    )
    rng = RandomSuggest(seed=0)
    drawn = [resolved.sample(rng) for _ in range(samples)]
    broken = [why for c in drawn if (why := method_violation(c, prof, methods))]
    if len(broken) == samples:
        raise ConfigError(
            Problem(
                "search_space.modules",
                f"no candidate can be built: all {samples} random candidates break a method's "
                f"rule on this model, e.g. {broken[0]}",
                hint="change the values that rule names",
            )
        )
    if broken:
        lines.append(
            f"buildable: {_pct(samples - len(broken), samples)} of {samples} random candidates; "
            f"the rest are recorded INFEASIBLE, e.g. {broken[0]}"
        )
    budget = resolved.space.budget
    limit = budget.param_limit(prof.base_params)
    warning = ""
    if limit is None and budget.max_memory_mb is None:
        lines.append("budget: none")
    else:
        parts = []
        if limit is not None:
            fits = sum(candidate_params(c, prof, methods) <= limit for c in drawn)
            parts.append(
                f"max {limit:,} trainable parameters ({_pct(limit, prof.base_params)}); "
                f"{100.0 * fits / samples:.1f}% of {samples} random candidates fit"
            )
            if fits == 0 and lo <= limit:  # (lo > limit: the caller's error says it exactly)
                warning = (
                    f"warning: none of {samples} random candidates fits the budget of "
                    f"{limit:,} trainable parameters (the smallest candidate has {lo:,}): most "
                    "trials will be INFEASIBLE; consider raising "
                    "search_space.budget.max_trainable_params"
                )
        if budget.max_memory_mb is not None:
            parts.append(f"max {budget.max_memory_mb:g} MB peak memory (checked per trial)")
        lines.append("budget: " + "; ".join(parts))
    return "\n".join(lines + ([warning] if warning else []))

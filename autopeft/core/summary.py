"""The text ``autopeft validate`` prints: what a space contains and spans on a model."""

from __future__ import annotations

import math
from typing import Any

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
    size_text = "infinite (continuous parameters)" if math.isinf(size) else f"{size:,.0f}"
    lines.append(f"configurations: {size_text} (distinct candidates)")
    lo, hi = resolved.param_range()
    lines.append(
        f"trainable parameters: {lo:,} .. {hi:,} ({_pct(lo, prof.base_params)} .. "
        f"{_pct(hi, prof.base_params)} of {prof.base_params:,}), plus the classifier head "
        f"({prof.head_params:,})"
    )
    budget = resolved.space.budget
    limit = budget.param_limit(prof.base_params)
    if limit is None and budget.max_memory_mb is None:
        lines.append("budget: none")
    else:
        parts = []
        if limit is not None:
            rng = RandomSuggest(seed=0)
            fits = sum(
                candidate_params(resolved.sample(rng), prof, methods) <= limit
                for _ in range(samples)
            )
            parts.append(
                f"max {limit:,} trainable parameters ({_pct(limit, prof.base_params)}); "
                f"{100.0 * fits / samples:.1f}% of {samples} random candidates fit"
            )
        if budget.max_memory_mb is not None:
            parts.append(f"max {budget.max_memory_mb:g} MB peak memory (checked per trial)")
        lines.append("budget: " + "; ".join(parts))
    return "\n".join(lines)

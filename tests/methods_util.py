"""Example module configs derived from each method's default sub-space (for contract tests)."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import FUSED_TARGETS, ModelProfile
from autopeft.methods.base import MethodSpec

PLACEMENTS = ("default", "sparse", "per_layer")


def _pick(spec: Any, big: bool) -> Any:
    """A representative non-zero value of a DSL parameter spec."""
    if not isinstance(spec, dict):
        return spec
    if spec["type"] == "choice":
        values = [v for v in spec["values"] if v not in (0, 0.0)] or spec["values"]
        return values[-1 if big else 0]
    low = spec["low"] if spec["low"] != 0 else (1 if spec["type"] == "int" else 0.1)
    return spec["high"] if big else low


def example_config(spec: MethodSpec, profile: ModelProfile, placement: str) -> ModuleConfig:
    """A buildable config of ``spec`` in one of :data:`PLACEMENTS`."""
    big = placement == "sparse"
    params = {name: _pick(p, big) for name, p in spec.default_space.items()}
    targets: tuple[str, ...] = ()
    if spec.default_targets:
        available = profile.available_targets
        # q, k and v name a fused q/k/v projection on models that have one (GPT-2).
        wanted = {
            FUSED_TARGETS.get(t, t) if t not in available else t for t in spec.default_targets
        }
        targets = (
            tuple(t for t in available if t in wanted) if placement == "default" else available
        )
    layers: tuple[int, ...] = ()
    sizes = None
    if spec.uses_layers:
        n = profile.num_layers
        layers = tuple(range(n)) if placement == "default" else tuple(range(0, n, 2))
        if placement == "per_layer":
            layers = tuple(range(n))
            base = int(params[spec.size_param])
            sizes = {i: base * (1 + i % 2) for i in layers}
    return ModuleConfig(
        method=spec.name, params=params, layers=layers, targets=targets, sizes=sizes
    )

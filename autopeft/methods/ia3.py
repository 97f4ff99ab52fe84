"""(IA)^3 (Liu et al., 2022): learned rescaling vectors on linear sub-layers, through ``peft``."""

from __future__ import annotations

from typing import Any, ClassVar

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec

#: Targets treated as feed-forward: their *input* is rescaled instead of their output.
FEEDFORWARD = ("ffn_up", "ffn_gate", "ffn_down")


@register
class IA3(MethodSpec):
    """Element-wise scaling ``l * h``: outputs of attention targets, inputs of FFN targets."""

    name = "ia3"
    summary = "(IA)^3 learned scaling vectors on key/value outputs and FFN inputs (no size)"
    backend = "peft"
    default_space: ClassVar[dict[str, Any]] = {}
    size_param = None
    default_targets = ("k", "v", "ffn_down")
    supports_per_layer = False

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``in`` per feed-forward target, ``out`` per other target (peft ``ia3_l`` shapes)."""
        total = 0
        for target in cfg.targets:
            for layer in cfg.layers:
                lin = profile.linear(layer, target)
                total += lin.in_features if target in FEEDFORWARD else lin.out_features
        return total

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """An ``IA3Config`` over the exact module paths; FFN targets are ``feedforward_modules``."""
        from peft import IA3Config

        feedforward = [
            profile.linear(layer, t).path
            for layer in cfg.layers
            for t in cfg.targets
            if t in FEEDFORWARD
        ]
        return IA3Config(
            task_type=profile.task_type,
            target_modules=self.target_paths(profile, cfg),
            feedforward_modules=feedforward,
        )

"""LoRA (Hu et al., 2021), optionally DoRA (Liu et al., 2024), through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class LoRA(MethodSpec):
    """Low-rank update ``B @ A`` beside each targeted linear layer."""

    name = "lora"
    summary = "LoRA low-rank updates on linear sub-layers (rank, alpha, dropout; DoRA option)"
    backend = "peft"
    default_space = {
        "rank": {"type": "choice", "values": [0, 2, 4, 8, 16, 32]},
        "alpha": 16.0,
        "dropout": 0.0,
        "use_dora": False,
    }
    size_param = "rank"
    default_targets = ("q", "v")
    supports_per_layer = True

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``r * (in + out)`` per targeted layer, plus ``out`` magnitudes with DoRA."""
        total = 0
        for layer, lin in self.linears(profile, cfg):
            r = self.size(cfg, layer)
            if r > 0:
                total += r * (lin.in_features + lin.out_features)
                total += lin.out_features if cfg.params.get("use_dora") else 0
        return total

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``LoraConfig`` over the exact module paths; per-layer ranks via ``rank_pattern``."""
        from peft import LoraConfig

        return LoraConfig(
            task_type=profile.task_type,
            lora_alpha=float(cfg.params["alpha"]),
            lora_dropout=float(cfg.params["dropout"]),
            use_dora=bool(cfg.params.get("use_dora", False)),
            **self.ranked_targets(profile, cfg),
        )

"""LoHa (Hyeon-Woo et al., 2022): low-rank Hadamard-product updates, through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class LoHa(MethodSpec):
    """Update ``(W1a @ W1b) * (W2a @ W2b)`` beside each targeted linear layer."""

    name = "loha"
    summary = "LoHa Hadamard product of two low-rank updates on linear sub-layers (rank, alpha)"
    backend = "peft"
    supports_conv1d = False  # peft adapts only nn.Linear with it
    default_space = {
        "rank": {"type": "choice", "values": [0, 2, 4, 8, 16, 32]},
        "alpha": 8.0,
    }
    size_param = "rank"
    default_targets = ("q", "v")
    supports_per_layer = True

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``2 * r * (in + out)`` per targeted layer (``hada_w1_a/b``, ``hada_w2_a/b``)."""
        total = 0
        for layer, lin in self.linears(profile, cfg):
            r = self.size(cfg, layer)
            if r > 0:
                total += 2 * r * (lin.in_features + lin.out_features)
        return total

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``LoHaConfig`` over the exact module paths; per-layer ranks via ``rank_pattern``."""
        from peft import LoHaConfig

        return LoHaConfig(
            task_type=profile.task_type,
            alpha=float(cfg.params["alpha"]),  # type: ignore[arg-type]  # peft: int; a float scales
            **self.ranked_targets(profile, cfg),
        )

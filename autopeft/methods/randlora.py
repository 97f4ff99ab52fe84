"""RandLoRA (Albert et al., 2025): full-rank updates from shared random bases, through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec, ValueRule


@register
class RandLoRA(MethodSpec):
    """Sum of ``ceil(min(in, out) / r)`` frozen random rank-``r`` bases with learned scalings.

    A smaller ``rank`` means more bases, hence more trainable parameters.
    """

    name = "randlora"
    summary = "RandLoRA: learned scalings of shared frozen random bases, full rank (rank, alpha)"
    backend = "peft"
    default_space = {
        "rank": {"type": "choice", "values": [0, 8, 16, 32, 64]},
        "alpha_ratio": 20,
        "dropout": 0.0,
    }
    size_param = "rank"
    value_rules = {"alpha_ratio": ValueRule(low=0, low_open=True)}
    default_targets = ("q", "v")
    supports_per_layer = False

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``r * n + n * min(in, out)`` per layer with ``n = ceil(min(in, out) / r)`` bases.

        ``randlora_lambda`` is ``r x n`` and ``randlora_gamma`` is ``n x min(in, out)``, both sized
        by the layer itself; the shared ``randlora_A``/``randlora_B`` (sized by the largest
        targeted dimensions) are buffers.
        """
        r = int(cfg.params["rank"])
        if r <= 0:
            return 0
        total = 0
        for _, lin in self.linears(profile, cfg):
            small = min(lin.in_features, lin.out_features)
            bases = -(-small // r)
            total += r * bases + bases * small
        return total

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``RandLoraConfig`` over the exact module paths, ``randlora_alpha = ratio * rank``."""
        from peft import RandLoraConfig

        r = int(cfg.params["rank"])
        return RandLoraConfig(
            task_type=profile.task_type,
            r=r,
            randlora_alpha=int(cfg.params["alpha_ratio"]) * r,
            randlora_dropout=float(cfg.params["dropout"]),
            target_modules=self.target_paths(profile, cfg),
        )

"""VeRA (Kopiczko et al., 2024): scaling vectors around shared random matrices, via ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec, ValueRule


@register
class VeRA(MethodSpec):
    """Update ``diag(b) @ B @ diag(d) @ A`` with ``A``, ``B`` random, frozen and shared."""

    name = "vera"
    summary = "VeRA: trainable scaling vectors around shared frozen random projections (rank)"
    backend = "peft"
    default_space = {
        "rank": {"type": "choice", "values": [0, 64, 128, 256, 512]},
        "d_initial": 0.1,
        "dropout": 0.0,
    }
    size_param = "rank"
    value_rules = {"d_initial": ValueRule(low=0, low_open=True)}
    default_targets = ("q", "v")
    supports_per_layer = False

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``out + r`` per targeted layer (``vera_lambda_b`` and ``vera_lambda_d``).

        The shared ``vera_A`` (``r x max in``) and ``vera_B`` (``max out x r``) are buffers sized
        by the largest targeted dimensions and sliced per layer, so targets of mixed shapes
        (Llama's narrower k/v) build and add nothing trainable.
        """
        r = int(cfg.params["rank"])
        if r <= 0:
            return 0
        return sum(lin.out_features + r for _, lin in self.linears(profile, cfg))

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``VeraConfig`` over the exact module paths."""
        from peft import VeraConfig

        return VeraConfig(
            task_type=profile.task_type,
            r=int(cfg.params["rank"]),
            d_initial=float(cfg.params["d_initial"]),
            vera_dropout=float(cfg.params["dropout"]),
            target_modules=self.target_paths(profile, cfg),
        )

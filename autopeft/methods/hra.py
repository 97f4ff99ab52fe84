"""HRA (Yuan et al., 2024): a chain of Householder reflections on each weight, through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class HRA(MethodSpec):
    """``W @ H_1 ... H_r``, ``H_i = I - 2 u_i u_i^T / |u_i|^2``, on each targeted linear layer."""

    name = "hra"
    summary = "HRA: r Householder reflections multiplying each linear sub-layer (rank, even)"
    backend = "peft"
    supports_conv1d = False  # peft adapts only nn.Linear with it
    default_space = {
        "rank": {"type": "choice", "values": [0, 2, 4, 8, 16]},
        "apply_gs": False,
    }
    size_param = "rank"
    default_targets = ("q", "v")
    supports_per_layer = False

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``in * r`` per targeted layer (``hra_u``)."""
        r = int(cfg.params["rank"])
        if r <= 0:
            return 0
        return sum(lin.in_features * r for _, lin in self.linears(profile, cfg))

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """``rank`` must be even: peft's identity-at-start init pairs equal reflections."""
        r = int(cfg.params["rank"])
        if r % 2:
            return f"hra needs an even rank (paired reflections start as identity), but got {r}"
        return None

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """An ``HRAConfig`` over the exact module paths."""
        from peft import HRAConfig

        return HRAConfig(
            task_type=profile.task_type,
            r=int(cfg.params["rank"]),
            apply_GS=bool(cfg.params["apply_gs"]),
            target_modules=self.target_paths(profile, cfg),
        )

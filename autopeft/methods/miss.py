"""MiSS (Kang & Yin, 2024): a shared shard matrix updating each linear layer, through ``peft``."""

from __future__ import annotations

from typing import Any, Literal

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec, ValueRule

#: ``mode`` value -> peft ``init_weights``: the default efficient form, or block-affine ("bat").
MODES: dict[str, bool | Literal["bat"]] = {"miss": True, "bat": "bat"}


@register
class MiSS(MethodSpec):
    """Update from one ``r x out`` block: the input is summed over ``r``-wide shards, times it."""

    name = "miss"
    summary = "MiSS: one shared r x out shard matrix updates each linear sub-layer (rank, mode)"
    backend = "peft"
    supports_conv1d = False  # peft adapts only nn.Linear with it
    default_space = {
        "rank": {"type": "choice", "values": [0, 8, 16, 32]},
        "mode": "miss",
        "dropout": 0.0,
    }
    size_param = "rank"
    value_rules = {"mode": ValueRule(kind=str, choices=tuple(MODES))}
    default_targets = ("q", "v")
    supports_per_layer = False

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``r * out`` per targeted layer (``miss_block``; in "bat" mode ``out/r x r x r``)."""
        r = int(cfg.params["rank"])
        if r <= 0:
            return 0
        return sum(r * lin.out_features for _, lin in self.linears(profile, cfg))

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """``rank <= in`` of every target; "bat" mode also needs ``rank`` to divide in and out."""
        r, mode = int(cfg.params["rank"]), str(cfg.params["mode"])
        if mode not in MODES:
            return f"miss mode must be one of {', '.join(MODES)}, but got {mode!r}"
        if r <= 0:
            return None
        for _, lin in self.linears(profile, cfg):
            if r > lin.in_features:
                return f"miss needs rank <= in_features ({lin.in_features}), but got rank={r}"
            if mode == "bat" and (lin.in_features % r or lin.out_features % r):
                return (
                    f"miss mode 'bat' needs rank to divide {lin.in_features} and "
                    f"{lin.out_features}, but got rank={r}"
                )
        return None

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``MissConfig`` over the exact module paths."""
        from peft import MissConfig

        return MissConfig(
            task_type=profile.task_type,
            r=int(cfg.params["rank"]),
            miss_dropout=float(cfg.params["dropout"]),
            init_weights=MODES[str(cfg.params["mode"])],
            target_modules=self.target_paths(profile, cfg),
        )

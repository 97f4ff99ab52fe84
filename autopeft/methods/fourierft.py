"""FourierFT (Gao et al., 2024): sparse learned spectral coefficients per weight, via ``peft``."""

from __future__ import annotations

import re
from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class FourierFT(MethodSpec):
    """Update ``scaling * Re(IDFT2(S))`` with ``S`` zero except ``n`` learned random entries."""

    name = "fourierft"
    summary = "FourierFT: n learned Fourier coefficients per linear sub-layer (n_frequency)"
    backend = "peft"
    default_space = {
        "n_frequency": {"type": "choice", "values": [0, 64, 128, 256, 512]},
        "scaling": 150.0,
    }
    size_param = "n_frequency"
    default_targets = ("q", "v")
    supports_per_layer = True

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``n_frequency`` per targeted layer (``fourierft_spectrum``)."""
        return sum(max(0, self.size(cfg, layer)) for layer, _ in self.linears(profile, cfg))

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """``n_frequency`` may not exceed ``in * out`` of any targeted layer."""
        for layer, lin in self.linears(profile, cfg):
            n = self.size(cfg, layer)
            if n > lin.in_features * lin.out_features:
                return (
                    f"fourierft needs n_frequency <= in * out "
                    f"({lin.in_features * lin.out_features}), but got {n}"
                )
        return None

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``FourierFTConfig`` over the exact module paths; per-layer sizes via a pattern."""
        from peft import FourierFTConfig

        targets, sizes = [], {}
        for layer, lin in self.linears(profile, cfg):
            n = self.size(cfg, layer)
            if n > 0:
                targets.append(lin.path)
                sizes[lin.path] = n
        base = int(cfg.params.get("n_frequency", max(sizes.values())))
        # peft matches pattern keys with ".*\.{key}$": a key must be a proper dotted suffix, so
        # the first path component is dropped (the rest still names exactly one layer).
        pattern = {re.escape(p.split(".", 1)[1]): n for p, n in sizes.items()}
        return FourierFTConfig(
            task_type=profile.task_type,
            n_frequency=base,
            scaling=float(cfg.params["scaling"]),
            target_modules=targets,
            n_frequency_pattern=pattern if cfg.sizes is not None else {},
        )

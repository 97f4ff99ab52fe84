"""LoKr (Yeh et al., 2024): Kronecker-product updates, through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec, ValueRule


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """``(m, n)`` with ``m * n == dimension`` and ``m <= n``, as ``peft.tuners.lokr`` splits it.

    With ``factor > 0`` dividing ``dimension`` the split is ``(factor, dimension // factor)``
    (unordered); otherwise the most balanced split whose smaller part is at most ``factor``
    (``-1``: no limit, i.e. near the square root).
    """
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


@register
class LoKr(MethodSpec):
    """Update ``W1 (x) W2`` beside each targeted linear layer; ``W2`` (maybe ``W1``) low-rank."""

    name = "lokr"
    summary = "LoKr Kronecker-product updates on linear sub-layers (rank, alpha, factor)"
    backend = "peft"
    supports_conv1d = False  # peft adapts only nn.Linear with it
    default_space = {
        "rank": {"type": "choice", "values": [0, 2, 4, 8, 16, 32]},
        "alpha": 8.0,
        "decompose_factor": -1,
        "decompose_both": False,
    }
    size_param = "rank"
    value_rules = {"decompose_factor": ValueRule(kind=int, low=-1)}  # -1: peft's own choice
    default_targets = ("q", "v")
    supports_per_layer = True

    def layer_params(self, in_dim: int, out_dim: int, r: int, cfg: ModuleConfig) -> int:
        """Trainable parameters of one linear layer, following peft's ``LoKrLayer.update_layer``.

        ``out = a * b`` and ``in = c * d`` are factorised; ``w1`` is ``a x c`` (low-rank only with
        ``decompose_both`` and ``r < max(a, c) / 2``), ``w2`` is ``b x d``, low-rank exactly when
        ``r < max(b, d) / 2``.
        """
        factor = int(cfg.params["decompose_factor"])
        a, b = factorization(out_dim, factor)
        c, d = factorization(in_dim, factor)
        if bool(cfg.params["decompose_both"]) and r < max(a, c) / 2:
            w1 = r * (a + c)
        else:
            w1 = a * c
        w2 = r * (b + d) if r < max(b, d) / 2 else b * d
        return w1 + w2

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """Sum of :meth:`layer_params` over the targeted layers with a non-zero rank."""
        total = 0
        for layer, lin in self.linears(profile, cfg):
            r = self.size(cfg, layer)
            if r > 0:
                total += self.layer_params(lin.in_features, lin.out_features, r, cfg)
        return total

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """``decompose_factor`` is ``-1`` or a positive integer."""
        factor = int(cfg.params["decompose_factor"])
        if factor != -1 and factor <= 0:
            return f"lokr needs decompose_factor = -1 or > 0, but got {factor}"
        return None

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``LoKrConfig`` over the exact module paths; per-layer ranks via ``rank_pattern``."""
        from peft import LoKrConfig

        return LoKrConfig(
            task_type=profile.task_type,
            alpha=float(cfg.params["alpha"]),  # type: ignore[arg-type]  # peft: int; a float scales
            decompose_factor=int(cfg.params["decompose_factor"]),
            decompose_both=bool(cfg.params["decompose_both"]),
            **self.ranked_targets(profile, cfg),
        )

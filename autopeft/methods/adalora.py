"""AdaLoRA (Zhang et al., 2023): SVD-shaped LoRA with adaptive rank allocation, through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec, ValueRule


@register
class AdaLoRA(MethodSpec):
    """``P @ diag(E) @ Q`` beside each targeted linear layer; ranks pruned towards ``target_r``.

    Rank allocation runs in :meth:`on_step`, which must see the gradients of the step: the
    training loop has to call it after ``backward`` and before ``zero_grad``.
    """

    name = "adalora"
    summary = "AdaLoRA: SVD-form LoRA whose ranks are pruned to a budget while training"
    backend = "peft"
    default_space = {
        "rank": {"type": "choice", "values": [0, 4, 8, 12, 16]},
        "target_r": {"type": "choice", "values": [2, 4, 8]},
        "alpha": 32.0,
        "dropout": 0.0,
        "tinit_frac": 0.1,
        "tfinal_frac": 0.3,
    }
    size_param = "rank"
    value_rules = {
        "target_r": ValueRule(kind=int, low=1),
        "tinit_frac": ValueRule(low=0, high=1, high_open=True),
        "tfinal_frac": ValueRule(low=0, high=1, high_open=True),
    }
    default_targets = ("q", "v")
    supports_per_layer = False

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``r * (in + out + 1)`` per targeted layer (``lora_A``, ``lora_B``, ``lora_E``).

        Pruned ranks are masked, not removed, so the count stays fixed while training; the
        per-layer ``ranknum`` is a frozen tensor and is not counted.
        """
        total = 0
        for layer, lin in self.linears(profile, cfg):
            r = self.size(cfg, layer)
            if r > 0:
                total += r * (lin.in_features + lin.out_features + 1)
        return total

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """``target_r`` must be below ``rank``; the schedule fractions must leave a budget phase."""
        rank, target = int(cfg.params["rank"]), int(cfg.params["target_r"])
        if rank > 0 and not 0 < target < rank:
            return f"adalora needs 0 < target_r < rank, but got target_r={target}, rank={rank}"
        tinit, tfinal = float(cfg.params["tinit_frac"]), float(cfg.params["tfinal_frac"])
        if tinit < 0 or tfinal < 0 or tinit + tfinal >= 1:
            return (
                "adalora needs tinit_frac >= 0, tfinal_frac >= 0 and tinit_frac + tfinal_frac < 1, "
                f"but got tinit_frac={tinit}, tfinal_frac={tfinal}"
            )
        return None

    def schedule(self, cfg: ModuleConfig, total_steps: int) -> tuple[int, int, int]:
        """``(total_step, tinit, tfinal)`` for peft, from the fractions of ``total_steps``.

        peft needs ``tinit < total_step - tfinal`` and, to finalise the budget at step
        ``total_step - tfinal``, at least one earlier step that scored importance; so
        ``total_step >= 2`` and ``tfinal <= total_step - 2`` (steps count from 1).
        """
        total = max(2, int(total_steps))
        tfinal = min(int(total * float(cfg.params["tfinal_frac"])), total - 2)
        tinit = min(int(total * float(cfg.params["tinit_frac"])), total - tfinal - 1)
        return total, tinit, tfinal

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """An ``AdaLoraConfig`` over the exact module paths, scheduled over ``total_steps``."""
        from peft import AdaLoraConfig

        total, tinit, tfinal = self.schedule(cfg, total_steps)
        return AdaLoraConfig(
            task_type=profile.task_type,
            init_r=int(cfg.params["rank"]),
            target_r=int(cfg.params["target_r"]),
            lora_alpha=float(cfg.params["alpha"]),  # type: ignore[arg-type]  # peft: int; a float scales
            lora_dropout=float(cfg.params["dropout"]),
            tinit=tinit,
            tfinal=tfinal,
            total_step=total,
            target_modules=self.target_paths(profile, cfg),
        )

    def on_step(self, model: Any, step: int) -> None:
        """Update importance scores and mask ranks (``update_and_allocate``) after step ``step``.

        Raises:
            RuntimeError: if the adapter gradients are already cleared (hook called too late).
        """
        grads = [p.grad for n, p in model.named_parameters() if "lora_E" in n and p.requires_grad]
        if any(g is None for g in grads):
            raise RuntimeError(
                "adalora's on_step needs the step's gradients: call it after backward() and "
                "before optimizer.zero_grad()"
            )
        model.base_model.update_and_allocate(step)

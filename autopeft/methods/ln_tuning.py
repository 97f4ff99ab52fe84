"""LN tuning: train only the normalisation layers (Zhao et al., 2023; Qi et al., 2022)."""

from __future__ import annotations

from typing import Any, ClassVar

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class LNTuning(MethodSpec):
    """Unfreeze the LayerNorm/RMSNorm weights (and biases) of the placed blocks.

    Nothing is added to the model: the block norms listed in the profile become trainable.
    Do not combine with ``bitfit`` (``norms`` on) in the same blocks: the norm biases would be
    counted by both formulas but exist once.
    """

    name = "ln_tuning"
    summary = "LN tuning: train the LayerNorm/RMSNorm weights and biases of placed blocks"
    backend = "native"
    default_space: ClassVar[dict[str, Any]] = {}
    saves_input = False  # the norm's own saved tensors (counted with the block) serve it

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """The parameters of every norm of every placed block (weight, plus bias if any)."""
        return sum(n.params for i in cfg.layers for n in profile.layers[i].norms)

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Set ``requires_grad`` on the norms' own parameters."""
        from autopeft.methods.nn import unwrap

        for i in cfg.layers:
            for norm in profile.layers[i].norms:
                for p in unwrap(model.get_submodule(norm.path)).parameters(recurse=False):
                    p.requires_grad_(True)

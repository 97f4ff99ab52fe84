"""SSF: scale and shift deep features (Lian et al., 2022)."""

from __future__ import annotations

from typing import Any, ClassVar

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import TARGETS, ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class SSF(MethodSpec):
    """``y <- y * gamma + beta`` after each targeted linear sub-layer of the placed blocks.

    ``gamma`` starts at 1 and ``beta`` at 0 (an identity at initialisation). The hook sits on
    the module at the sub-layer's path, so with a peft wrapper (LoRA) the whole adapted output
    is scaled and shifted.
    """

    name = "ssf"
    summary = "SSF: learned per-feature scale and shift after linear sub-layers (Lian et al.)"
    backend = "native"
    default_space: ClassVar[dict[str, Any]] = {}
    default_targets = tuple(TARGETS)

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``2 * out_features`` per targeted linear of every placed block."""
        return sum(2 * lin.out_features for _, lin in self.linears(profile, cfg))

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Add ``autopeft_ssf_scale``/``autopeft_ssf_shift`` and an output hook per linear."""
        import torch

        from autopeft.methods.nn import add_param, cast_like, output_hook

        for _, lin in self.linears(profile, cfg):
            scale = add_param(model, lin.path, "ssf_scale", torch.ones(lin.out_features))
            shift = add_param(model, lin.path, "ssf_shift", torch.zeros(lin.out_features))
            model.get_submodule(lin.path).register_forward_hook(
                output_hook(cast_like(lambda y, a=scale, b=shift: y * a + b))
            )

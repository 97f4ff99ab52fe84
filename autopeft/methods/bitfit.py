"""BitFit: train only bias terms (Ben Zaken et al., 2022)."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import TARGETS, ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class BitFit(MethodSpec):
    """The biases of the targeted linear sub-layers (and optionally norms) of placed blocks.

    A targeted linear without a bias (Llama) gets a zero-initialised trainable
    ``autopeft_bias`` added by a forward hook, so BitFit works on bias-free families too. When
    peft wrapped the linear, the wrapped ``base_layer``'s bias is the one trained.
    ``norms`` also trains the LayerNorm biases of the placed blocks, as the paper's "all bias
    terms" does (RMSNorm has none: it contributes 0).
    """

    name = "bitfit"
    summary = "BitFit: train bias terms of linear sub-layers (+ norm biases); adds missing ones"
    backend = "native"
    default_space = {"norms": True}
    default_targets = tuple(TARGETS)
    saves_input = False  # a bias gradient is the output gradient summed
    overlaps = {"norms": ("ln_tuning", "the LayerNorm biases")}

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``out_features`` per targeted linear, plus each biased norm's size with ``norms``."""
        total = sum(lin.out_features for _, lin in self.linears(profile, cfg))
        if cfg.params.get("norms", True):
            total += sum(n.size for i in cfg.layers for n in profile.layers[i].norms if n.bias)
        return total

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Unfreeze existing biases; add hooked zero biases where a linear has none."""
        import torch

        from autopeft.methods.nn import add_param, cast_like, output_hook, unwrap

        for _, lin in self.linears(profile, cfg):
            module = model.get_submodule(lin.path)
            base = unwrap(module)
            if base.bias is not None:
                base.bias.requires_grad_(True)
                continue
            path = lin.path if base is module else f"{lin.path}.base_layer"
            bias = add_param(model, path, "bias", torch.zeros(lin.out_features))
            base.register_forward_hook(output_hook(cast_like(lambda out, bias=bias: out + bias)))
        if cfg.params.get("norms", True):
            for i in cfg.layers:
                for norm in profile.layers[i].norms:
                    bias = getattr(unwrap(model.get_submodule(norm.path)), "bias", None)
                    if norm.bias and bias is not None:
                        bias.requires_grad_(True)

"""Parallel bottleneck adapter beside the FFN (He et al., 2022, "Towards a Unified View")."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class ParallelAdapter(MethodSpec):
    """``ffn(x) <- ffn(x) + scale * up(act(down(x)))`` with ``x`` the FFN input of each block.

    The scale defaults to 4.0, the "scaled parallel adapter" He et al. found best at the FFN
    (and use in their MAM adapter); with the zero-initialised up-projection the adapter starts
    as a no-op either way, the scale only sets how fast it grows.
    """

    name = "parallel_adapter"
    summary = "parallel bottleneck adapter beside the FFN (He et al. 2022; size, scale, act.)"
    backend = "native"
    default_space = {
        "size": {"type": "choice", "values": [0, 8, 16, 32, 64]},
        "scale": 4.0,
        "activation": "relu",
    }
    size_param = "size"
    supports_per_layer = True
    input_source = "ffn_in"

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``2 * hidden * size + size + hidden`` per placed block with a non-zero size."""
        return self.bottleneck_params(profile, cfg)

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Add a bottleneck per block; capture the FFN input, add to the FFN output.

        A forward-pre-hook on ``ffn_up`` keeps the FFN input (the tensor ``ffn_up`` and, on
        Llama, ``ffn_gate`` read); a forward hook on ``ffn_down`` adds the scaled adapter
        output to the FFN output, before BERT's dropout/residual/LayerNorm and before Llama's
        residual.
        """
        from autopeft.methods.nn import Bottleneck, add_child, output_hook

        scale = float(cfg.params.get("scale", 4.0))
        for i in cfg.layers:
            size = self.size(cfg, i)
            if size <= 0:
                continue
            layer = profile.layers[i]
            adapter = add_child(
                model,
                layer.path,
                "parallel_adapter",
                Bottleneck(profile.hidden_size, size, str(cfg.params["activation"])),
            )
            slot: dict[str, Any] = {}

            def keep(module, args, slot=slot):
                slot["x"] = args[0]

            def add(out, slot=slot, adapter=adapter):
                # fp32 adapter, possibly bf16 model or autocast: back in the output's dtype.
                return out + (scale * adapter(slot.pop("x").float())).to(out.dtype)

            model.get_submodule(layer.sublayers["ffn_up"].path).register_forward_pre_hook(keep)
            model.get_submodule(layer.sublayers["ffn_down"].path).register_forward_hook(
                output_hook(add)
            )

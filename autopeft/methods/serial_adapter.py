"""Serial bottleneck adapter after the FFN (Houlsby et al., 2019; Pfeiffer et al., 2021)."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class SerialAdapter(MethodSpec):
    """``h <- h + up(act(down(h)))`` applied to the FFN output of each placed block."""

    name = "serial_adapter"
    summary = "serial bottleneck adapter after the FFN output (Pfeiffer placement; size, act.)"
    backend = "native"
    default_space = {
        "size": {"type": "choice", "values": [0, 8, 16, 32, 64]},
        "activation": "relu",
    }
    size_param = "size"
    supports_per_layer = True
    input_source = "ffn_out"

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``2 * hidden * size + size + hidden`` per placed block with a non-zero size."""
        return self.bottleneck_params(profile, cfg)

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Add a bottleneck per block and a forward hook on the FFN output projection."""
        from autopeft.methods.nn import Bottleneck, add_child, cast_like, output_hook

        for i in cfg.layers:
            size = self.size(cfg, i)
            if size <= 0:
                continue
            layer = profile.layers[i]
            adapter = add_child(
                model,
                layer.path,
                "serial_adapter",
                Bottleneck(profile.hidden_size, size, str(cfg.params["activation"])),
            )
            run = cast_like(adapter)
            model.get_submodule(layer.sublayers["ffn_down"].path).register_forward_hook(
                output_hook(lambda out, run=run: out + run(out))
            )

"""Prefix tuning (Li & Liang, 2021), native so it combines with a peft method such as LoRA."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class Prefix(MethodSpec):
    """Learned key/value vectors put in front of each placed block's self-attention keys.

    Each placed attention module gets ``autopeft_prefix_key`` and ``autopeft_prefix_value`` of
    shape ``[kv_heads, length, head_dim]`` (direct parametrisation, no reparametrising MLP).
    The model switches to the ``autopeft_prefix`` attention implementation registered with
    transformers' attention interface: sdpa with the prefix concatenated along the key axis
    and the mask extended so every query (padding and causality notwithstanding) sees every
    prefix position. Prefix keys get no rotary embedding on Llama (as with peft's prefix
    tuning, where they enter as an already-rotated cache).
    """

    name = "prefix"
    summary = "prefix tuning: learned attention keys/values per block (Li & Liang 2021; length)"
    backend = "native"
    default_space = {"length": {"type": "choice", "values": [0, 5, 10, 20, 30]}}
    size_param = "length"
    supports_per_layer = True
    saves_input = False  # its gradient comes through the attention's own saved tensors

    #: Standard deviation of the normal initialisation of prefix keys and values.
    init_std = 0.02

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``2 * length * kv_heads * head_dim`` per placed block with a non-zero length."""
        per_position = 2 * profile.num_kv_heads * profile.head_dim
        return sum(per_position * n for n in (self.size(cfg, i) for i in cfg.layers) if n > 0)

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Register the prefix parameters on each attention module and switch attention."""
        import torch

        from autopeft.methods.nn import add_param, use_prefix_attention

        paths = []
        for i in cfg.layers:
            length = self.size(cfg, i)
            if length <= 0:
                continue
            path = profile.layers[i].attention_path
            shape = (profile.num_kv_heads, length, profile.head_dim)
            for part in ("key", "value"):
                add_param(model, path, f"prefix_{part}", torch.randn(shape) * self.init_std)
            paths.append(path)
        if paths:
            use_prefix_attention(model, paths)

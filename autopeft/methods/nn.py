"""Torch building blocks of the native module types (imported lazily by ``attach``).

Native modules are attached with forward hooks on the sub-layers they wrap instead of replacing
those sub-layers, so peft can still target the same ``nn.Linear`` (LoRA on ``ffn_down`` plus a
serial adapter after it) and the attach order does not change module paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Prefix of every attribute autopeft adds to a model; trainable state is found by it.
PREFIX = "autopeft_"


class Bottleneck(nn.Module):
    """Down-project, non-linearity, up-project; zero-initialised up so it starts as a no-op."""

    def __init__(self, hidden: int, size: int, activation: str = "relu"):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "silu": nn.SiLU()}[activation]
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck transform of ``x`` (no residual)."""
        return self.up(self.act(self.down(x)))


def add_child(model: nn.Module, owner_path: str, name: str, child: nn.Module) -> nn.Module:
    """Register ``child`` as ``<owner>.autopeft_<name>`` so it is saved, moved and counted."""
    owner = model.get_submodule(owner_path)
    ref = next(model.parameters())
    child.to(device=ref.device, dtype=torch.float32)
    owner.add_module(PREFIX + name, child)
    return child


def output_hook(fn):
    """Wrap ``fn(output) -> output`` as a forward hook that also handles tuple outputs."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0]),) + output[1:]
        return fn(output)

    return hook


def cast_like(fn):
    """Run ``fn`` on ``x`` in fp32 and return in ``x``'s dtype.

    Adapters are fp32; the model may be bf16, with or without autocast.
    """

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        return fn(x.float()).to(x.dtype)

    return wrapped


def add_param(model: nn.Module, owner_path: str, name: str, data: torch.Tensor) -> nn.Parameter:
    """Register ``data`` as the fp32 parameter ``<owner>.autopeft_<name>`` and return it."""
    owner = model.get_submodule(owner_path)
    ref = next(owner.parameters(), None)
    ref = next(model.parameters()) if ref is None else ref
    param = nn.Parameter(data.to(device=ref.device, dtype=torch.float32))
    owner.register_parameter(PREFIX + name, param)
    return param


def unwrap(module: nn.Module) -> nn.Module:
    """The layer a peft tuner wraps (``base_layer``), or ``module`` itself when not wrapped."""
    return getattr(module, "base_layer", module)


# Prefix attention ---------------------------------------------------------------------------

#: Name of the attention implementation (and mask builder) registered with transformers.
PREFIX_ATTENTION = "autopeft_prefix"


def extend_mask(
    mask: torch.Tensor | None, length: int, q_len: int, kv_len: int, causal: bool, device
) -> torch.Tensor | None:
    """Prepend ``length`` always-visible key positions to a 4-D attention mask.

    Args:
        mask: ``None``, a boolean mask (True = attend) or an additive float mask (0 = attend),
            broadcastable to ``[batch, heads, q_len, kv_len]``.
        length: number of prefix positions put in front of the keys.
        q_len: query length.
        kv_len: key length before the prefix.
        causal: whether a missing mask means causal attention (bottom-right aligned, as when
            queries are the last ``q_len`` of the ``kv_len`` keys).
        device: device of a mask built from scratch.

    Returns:
        The mask over ``length + kv_len`` keys; ``None`` when no mask is needed (non-causal).
    """
    if mask is None:
        if not causal:
            return None
        rows = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
        mask = rows >= torch.arange(kv_len, device=device)[None, :]
        mask = mask[None, None]
    if mask.dtype == torch.bool:
        front = torch.ones(*mask.shape[:-1], length, dtype=torch.bool, device=mask.device)
    else:
        front = torch.zeros(*mask.shape[:-1], length, dtype=mask.dtype, device=mask.device)
    return torch.cat([front, mask], dim=-1)


def prefix_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention with the module's learned prefix keys/values in front of its own keys.

    Modules without ``autopeft_prefix_key`` run plain sdpa. Prefix tensors have shape
    ``[kv_heads, length, head_dim]``; they are expanded over the batch and concatenated before
    sdpa repeats kv heads for grouped-query attention, and every query may attend to them.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix_key = getattr(module, PREFIX + "prefix_key", None)
    if prefix_key is not None:
        batch, length = key.shape[0], prefix_key.shape[1]
        prefix_value = getattr(module, PREFIX + "prefix_value")
        q_len, kv_len = query.shape[2], key.shape[2]
        key = torch.cat([prefix_key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix_value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else causal
        attention_mask = extend_mask(
            attention_mask, length, q_len, kv_len, bool(causal) and q_len > 1, query.device
        )
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def use_prefix_attention(model: PreTrainedModel, attention_paths: list[str]) -> None:
    """Register :func:`prefix_attention` with transformers and switch ``model`` to it.

    sdpa's mask builder is registered under the same name: transformers builds no padding
    mask at all for an implementation its mask interface does not know.

    Args:
        model: the Hugging Face model.
        attention_paths: attention modules that must end up calling :func:`prefix_attention`.

    Raises:
        RuntimeError: when the model cannot switch (it does not use the attention interface).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)
    if model.config._attn_implementation != PREFIX_ATTENTION:
        model.set_attn_implementation(PREFIX_ATTENTION)
    for path in attention_paths:
        config = getattr(model.get_submodule(path), "config", None)
        if getattr(config, "_attn_implementation", None) != PREFIX_ATTENTION:
            raise RuntimeError(f"{path} did not switch to the {PREFIX_ATTENTION!r} attention")

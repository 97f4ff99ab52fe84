"""Torch building blocks of the native module types (imported lazily by ``attach``).

Native modules are attached with forward hooks on the sub-layers they wrap instead of replacing
those sub-layers, so peft can still target the same ``nn.Linear`` (LoRA on ``ffn_down`` plus a
serial adapter after it) and the attach order does not change module paths.
"""

from __future__ import annotations

import torch
from torch import nn

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
    """Run ``fn`` in the dtype of its input (adapters are fp32; the model may be bf16)."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        return fn(x).to(x.dtype)

    return wrapped

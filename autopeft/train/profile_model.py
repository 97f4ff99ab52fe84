"""Profile a built model: the torch route to a :class:`ModelProfile`."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from autopeft.core.model_profile import ModelProfile, profile_from_config

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def profile_model(model: nn.Module) -> ModelProfile:
    """Profile ``model`` (an unadapted HF classifier or causal LM); check it against its config.

    The profile comes from the config (the same code ``autopeft validate`` runs), then every
    listed sub-layer is checked against the real module so a formula can never silently use a
    wrong shape.

    Raises:
        ValueError: when the config-derived profile disagrees with the built model.
    """
    # nn.Module types unknown attributes as Tensor | Module; an HF model's is its config.
    config = cast("PretrainedConfig", model.config)
    # A causal LM's head predicts the next token (frozen); a classifier's is trained.
    kind = "lm" if getattr(model, "lm_head", None) is not None else "classifier"
    # num_labels is None without an id2label, as a causal LM may have; its head ignores it.
    num_labels = config.num_labels or 0
    profile = profile_from_config(config.to_dict(), num_labels=num_labels, head=kind)
    for layer in profile.layers:
        for lin in layer.sublayers.values():
            mod = model.get_submodule(lin.path)
            shape = (*linear_shape(mod), mod.bias is not None)
            if shape != (lin.in_features, lin.out_features, lin.bias):
                raise ValueError(f"profile mismatch at {lin.path}: {shape} vs {lin}")
        for norm in layer.norms:
            mod = model.get_submodule(norm.path)
            if cast(torch.Tensor, mod.weight).numel() != norm.size:
                raise ValueError(f"profile mismatch at {norm.path}")
    head = 0
    if profile.has_head:
        head = sum(p.numel() for p in model.get_submodule(profile.head_path).parameters())
    base = sum(p.numel() for p in model.parameters()) - head
    if (base, head) != (profile.base_params, profile.head_params):
        raise ValueError(
            f"profile parameter totals {profile.base_params}+{profile.head_params} differ from "
            f"the model's {base}+{head}"
        )
    return profile


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of an ``nn.Linear`` or a GPT-2 ``Conv1D``."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    rows, cols = cast(torch.Tensor, module.weight).shape
    return int(rows), int(cols)  # transformers' Conv1D stores its weight transposed

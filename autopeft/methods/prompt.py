"""Prompt tuning (Lester et al., 2021): trainable soft tokens before the input, through ``peft``."""

from __future__ import annotations

from typing import Any

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec


@register
class PromptTuning(MethodSpec):
    """``length`` virtual token embeddings prepended to the input embeddings (random init)."""

    name = "prompt"
    summary = "prompt tuning: soft virtual tokens prepended to the input embeddings (length)"
    backend = "peft"
    default_space = {
        "length": {"type": "choice", "values": [0, 4, 8, 16, 32]},
    }
    size_param = "length"
    uses_layers = False
    supports_per_layer = False
    virtual_tokens_param = "length"
    trains_embeddings = True  # the virtual tokens are inputs: backward reaches them
    saves_input = False  # an embedding row's gradient needs no saved activation

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``length * hidden``: one prompt-encoder embedding row per virtual token.

        For sequence classification peft uses one transformer sub-module (no encoder/decoder
        doubling), and the only other trainable tensor is the classifier head copy.
        """
        return int(cfg.params["length"]) * profile.hidden_size

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``PromptTuningConfig`` with randomly initialised virtual tokens."""
        from peft import PromptTuningConfig, PromptTuningInit

        return PromptTuningConfig(
            task_type=profile.task_type,
            num_virtual_tokens=int(cfg.params["length"]),
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )

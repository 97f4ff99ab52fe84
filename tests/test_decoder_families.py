"""Decoder families beyond Llama: each profiles without torch exactly as built, maps the
placement names onto its blocks (fused projections included), and trains a LoRA step."""

from __future__ import annotations

import pytest
import torch
import transformers

from autopeft import api
from autopeft.core.candidate import Candidate
from autopeft.core.memory_model import predict_memory
from autopeft.core.model_profile import profile_from_config
from autopeft.core.resolve import RandomSuggest
from autopeft.core.trial_result import TrialStatus
from autopeft.train.build import build_adapted
from autopeft.train.profile_model import profile_model

SHAPE = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
)
#: config class, its own settings, the targets LoRA's default (q, v) lands on.
FAMILIES = {
    "qwen3": ("Qwen3Config", {"head_dim": 8}, ("q", "v")),
    "gemma": ("GemmaConfig", {"head_dim": 16}, ("q", "v")),
    "gemma2": ("Gemma2Config", {"head_dim": 8}, ("q", "v")),
    "gemma3_text": ("Gemma3TextConfig", {"head_dim": 8}, ("q", "v")),
    "phi3": ("Phi3Config", {}, ("qkv",)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("head", ["lm", "classifier"])
def test_family_profiles_maps_targets_and_trains(family, head):
    cls, extra, targets = FAMILIES[family]
    config = getattr(transformers, cls)(**SHAPE, **extra)
    auto = (
        transformers.AutoModelForCausalLM
        if head == "lm"
        else (transformers.AutoModelForSequenceClassification)
    )
    torch.manual_seed(0)
    model = auto.from_config(config)
    profile = profile_model(model)  # raises when a shape or a total differs from the config's
    assert profile == profile_from_config(config.to_dict(), 2, head)
    space = api.space_from_dict({"modules": {"lora": {"rank": [4]}, "ln_tuning": {}}})
    resolved = api.resolve(space, profile)
    candidate = resolved.sample(RandomSuggest(0))
    assert candidate.module("lora").targets == targets
    everything = Candidate(modules=tuple(m for m in candidate.modules))
    adapted = build_adapted(model, profile, everything, total_steps=4)
    assert adapted.trainable_params == api.candidate_trainable_params(everything, profile)
    ids = torch.randint(1, 120, (2, 10))
    labels = ids if head == "lm" else torch.tensor([0, 1])
    loss = adapted.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert predict_memory(profile, everything, adapted.trainable_params, 2, 10, "cpu").total_mb > 0


def test_a_gpt2_causal_trial_runs_end_to_end():
    from autopeft.train.trial import TrialContext, run_trial

    config = api.study_from_dict(
        {
            "name": "gpt2",
            "model": "tiny-gpt2",
            "task": {"kind": "causal_lm", "max_length": 32},
            "search_space": {"modules": {"lora": {"rank": [4]}}},
            "training": {"steps": 4, "batch_size": 4, "eval_every": 4, "eval_examples": 8},
        }
    )
    ctx = TrialContext.create(config)
    candidate = api.resolve(config.search_space, ctx.profile).sample(RandomSuggest(0))
    assert candidate.module("lora").targets == ("qkv",)  # LoRA's q, v on GPT-2's c_attn
    result = run_trial(ctx, candidate)
    assert result.status is TrialStatus.COMPLETE, result.error
    assert result.predicted_memory_mb > 0 and "eval_loss" in result.metrics

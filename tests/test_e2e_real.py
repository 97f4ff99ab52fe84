"""End to end on the real offline model and data (slow): LoRA on Rotten Tomatoes on CPU."""

from __future__ import annotations

import pytest

from autopeft import api
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.trial_result import TrialStatus
from autopeft.train.trial import TrialContext, run_trial


@pytest.mark.slow
def test_minilm_lora_beats_the_majority_class_on_rotten_tomatoes(tmp_path):
    study = api.study_from_dict(
        {
            "name": "e2e",
            "model": "minilm",
            "task": {"name": "rotten_tomatoes", "max_length": 48},
            "search_space": {"modules": {"lora": {}}},
            "training": {
                "steps": 80,
                "batch_size": 32,
                "lr": 5e-3,
                "eval_every": 80,
                "eval_examples": 600,
            },
        }
    )
    ctx = TrialContext.create(study, cache_dir=tmp_path)
    assert any(tmp_path.glob("tokens-*.pt")), "the tokenised task is cached on disk"
    majority = ctx.task.majority_rate()
    assert 0.55 < majority < 0.65
    cand = Candidate(
        modules=(
            ModuleConfig(
                method="lora",
                params={"rank": 8, "alpha": 16.0, "dropout": 0.0, "use_dora": False},
                layers=tuple(range(6)),
                targets=("q", "v"),
            ),
        )
    )
    res = run_trial(ctx, cand)
    print(
        f"validation accuracy {res.metrics['accuracy']:.3f} (majority {majority:.3f}), "
        f"{res.wall_time_s:.1f} s, {res.tokens_per_s:.0f} tokens/s"
    )
    assert res.status is TrialStatus.COMPLETE, res.error
    assert res.trainable_params == 6 * 2 * 8 * (384 + 384)
    assert res.metrics["accuracy"] > majority + 0.08


@pytest.mark.slow
def test_smollm2_instruction_tuning_learns_and_exports_a_peft_adapter(tmp_path):
    """SmolLM2-135M-Instruct on the arithmetic task: a few LoRA steps lower the answer loss,
    and the exported CAUSAL_LM adapter loads on the base with PeftModel and generates."""
    import torch
    from peft import PeftModel

    from autopeft import study_tools
    from autopeft.search.local import run_local
    from autopeft.search.study import Study
    from autopeft.train.models import load_model

    study = api.study_from_dict(
        {
            "name": "e2e-sft",
            "model": "smollm2",
            "task": {"kind": "causal_lm", "max_length": 96, "max_new_tokens": 4},
            "search_space": {"modules": {"lora": {"rank": [4], "targets": ["q", "v"]}}},
            "training": {
                "steps": 8,
                "batch_size": 4,
                "lr": 2e-3,
                "eval_every": 8,
                "eval_examples": 16,
                "rungs": [1.0],
            },
            "objectives": "-eval_loss, -trainable_params",
        }
    )
    searched = run_local(Study(study, root=tmp_path), 1, progress=False)
    (number, result), *_ = searched.results()
    assert result.status is TrialStatus.COMPLETE, result.error
    assert result.trainable_params == 30 * 4 * (576 + 576) + 30 * 4 * (576 + 192)
    ctx = TrialContext.create(study)
    first = ctx.evaluator()
    import copy

    from autopeft.train.build import build_adapted

    untrained = build_adapted(copy.deepcopy(ctx.base_model), ctx.profile, result.candidate, 8)
    before = first(untrained, ctx.data["validation"], 8, 16, ctx.device)["eval_loss"]
    assert result.metrics["eval_loss"] < before  # it learned the answers' format

    out = study_tools.export_trial(searched, number, tmp_path / "adapter")
    card = (out / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    base = load_model("smollm2", head="lm")
    model = PeftModel.from_pretrained(base, str(out)).eval()
    prompts = ctx.data["validation"].prompts(torch.arange(2))
    with torch.no_grad():
        generated = model.generate(**prompts, max_new_tokens=4, do_sample=False, pad_token_id=2)
    assert generated.shape[1] > prompts["input_ids"].shape[1]

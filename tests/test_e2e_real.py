"""End to end on the real offline model and data (slow): LoRA on Rotten Tomatoes on CPU."""

from __future__ import annotations

import pytest

from autopeft import api
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.result import TrialStatus
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

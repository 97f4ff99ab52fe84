"""Exports say what loads them: a mixed candidate (a peft module beside autopeft's own) states
that PeftModel alone loads a partial model, and the model card names the base model, the task,
the trial, its metrics with units and how to load it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from autopeft import api, cli
from autopeft.core.trial_result import TrialStatus
from autopeft.search.local import run_local
from autopeft.search.study import Study
from autopeft.train.export import load_exported, predict

pytestmark = pytest.mark.slow
SEED = 3
MIXED, PEFT_ONLY = 0, 1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two trained trials on tiny-bert: LoRA + a serial adapter, and LoRA alone."""
    cfg = api.study_from_dict(
        {
            "name": "card",
            "model": "tiny-bert",
            "task": {"name": "sms_spam", "max_length": 32},
            "search_space": {
                "modules": {"lora": {"rank": [4]}, "serial_adapter": {"size": [0, 8]}}
            },
            "training": {
                "steps": 10,
                "batch_size": 8,
                "eval_every": 10,
                "eval_examples": 32,
                "seed": SEED,
            },
            "halving": {"enabled": False},
            "sampler": "random",
        }
    )
    st = Study(cfg, root=tmp_path_factory.mktemp("studies"))
    st.optuna.enqueue_trial({"lora.rank": 4, "serial_adapter.size": 8})
    st.optuna.enqueue_trial({"lora.rank": 4, "serial_adapter.size": 0})
    run_local(st, 2, progress=False)
    results = dict(st.results())
    assert [r.status for r in results.values()] == [TrialStatus.COMPLETE] * 2
    assert results[MIXED].candidate.methods == ("lora", "serial_adapter")
    return st


def _export(study, number, out, capsys):
    assert cli.main(["export", str(study.folder), "--trial", str(number), "-o", str(out)]) == 0
    return capsys.readouterr().out


def _trained_and_batch(study, number):
    from autopeft.train.export import rebuild
    from autopeft.train.trial import TrialContext, weights_path

    result = dict(study.results())[number]
    ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
    trained = rebuild(
        ctx, result.candidate, weights_path(study.folder / "weights", result.candidate, SEED)
    )
    return trained, ctx.data["validation"].batch(torch.arange(16))


def test_a_mixed_export_says_peft_alone_is_partial_and_load_exported_is_whole(
    study, tmp_path, capsys
):
    from peft import PeftModel

    from autopeft.train.models import load_model

    out = tmp_path / "mixed"
    printed = _export(study, MIXED, out, capsys)
    warning = (
        "WARNING: PeftModel.from_pretrained alone loads a partial model: only lora, "
        "classifier head. serial_adapter (autopeft's own module) is not in the peft adapter"
    )
    assert warning in printed and "autopeft.train.export.load_exported" in printed
    manifest = json.loads((out / "autopeft.json").read_text())
    assert manifest["loading"]["peft_from_pretrained"] == ["lora", "classifier head"]
    assert manifest["loading"]["load_exported"] == ["lora", "serial_adapter", "classifier head"]
    assert manifest["loading"]["peft_alone_is_partial"] is True
    assert manifest["loading"]["statement"].startswith(warning)
    card = (out / "README.md").read_text()
    # Prominent: the first paragraph under the title, in bold.
    body = card.split("---\n", 2)[2].strip().split("\n\n")
    assert body[0] == "# card trial 0" and body[1].startswith(f"> **{warning}")
    assert "The peft adapter in this folder holds only lora, classifier head" in card

    # What the statement claims is true: load_exported gives the trained model's logits,
    # the peft adapter alone does not.
    trained, batch = _trained_and_batch(study, MIXED)
    expected = predict(trained.model, batch)
    assert torch.equal(predict(load_exported(out).model, batch), expected)
    peft_alone = PeftModel.from_pretrained(
        load_model("tiny-bert", num_labels=2, seed=SEED), str(out)
    )
    assert not torch.allclose(predict(peft_alone, batch), expected, atol=1e-4)


def test_a_peft_only_export_says_peft_loads_all_of_it(study, tmp_path, capsys):
    out = tmp_path / "peft"
    printed = _export(study, PEFT_ONLY, out, capsys)
    assert "WARNING" not in printed
    assert (
        "PeftModel.from_pretrained loads the whole trained model (lora, classifier head); "
        "autopeft.train.export.load_exported loads it too." in printed
    )
    card = (out / "README.md").read_text()
    assert "> **" not in card and "PeftModel.from_pretrained(base_model" in card


def test_the_model_card_names_base_task_trial_metrics_and_loading(study, tmp_path, capsys):
    out = tmp_path / "card"
    _export(study, MIXED, out, capsys)
    card = (out / "README.md").read_text()
    result = dict(study.results())[MIXED]
    assert "base_model: tiny-bert\n" in card  # the front matter the hub reads
    assert "- base model: `tiny-bert`\n" in card  # as the study names it
    assert "- task: classification on `sms_spam`, task metric `accuracy`\n" in card
    assert "- study `card`, trial 0\n" in card
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", card, flags=re.M))
    assert rows["accuracy"] == f"{result.metrics['accuracy']:.4g}"
    assert rows["trainable parameters (PEFT modules)"] == f"{result.trainable_params:,}"
    assert rows["trained head parameters"] == f"{result.head_params:,}" and result.head_params
    assert result.peak_memory_mb is not None and result.memory_kind is not None
    assert rows["peak memory, CPU estimate"] == f"{result.peak_memory_mb:,.1f} MiB"
    assert 'adapted = load_exported("path/to/this/folder")' in card
    manifest = json.loads((out / "autopeft.json").read_text())
    assert manifest["memory"] == {"peak_memory_mib": result.peak_memory_mb, "kind": "CPU estimate"}


def test_export_best_exports_the_front_point_best_on_the_first_objective(study, tmp_path, capsys):
    best = study.best()[0]
    out = tmp_path / "best"
    assert cli.main(["export", str(study.folder), "--best", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote trial {best} to {out}; its README.md is the model card\n")
    assert json.loads((out / "autopeft.json").read_text())["trial"] == best
    code = cli.main(["export", str(study.folder), "--best", "--trial", "0", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "- --best: --best and --trial both name the trial to export" in err
    assert cli.main(["export", str(study.folder), "--best"]) == 2
    assert "--output DIR is needed with --best" in capsys.readouterr().err

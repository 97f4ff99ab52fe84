"""Exporting a QLoRA point: a peft adapter that loads on the 4-bit base as peft documents.

A real study trains one LoRA trial on an NF4-quantised tiny Llama; ``autopeft export``'s
code writes it out; the adapter is then loaded the documented way, with
``PeftModel.from_pretrained`` on a base loaded with a ``BitsAndBytesConfig``, and must give
the trained model's logits.
"""

from __future__ import annotations

import json

import pytest
import torch

from autopeft import api, study_tools
from autopeft.core.trial_result import TrialStatus
from autopeft.search.local import TrainingRunner, run_local
from autopeft.search.study import Study
from autopeft.train.export import load_exported, predict
from autopeft.train.models import load_model
from tests.helpers import jsonl_task

SEED = 5  # not the default: the base must be rebuilt from the recorded seed
#: The BitsAndBytesConfig a user writes from the model card, for the 4-bit NF4 base.
NF4 = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": False,
    "bnb_4bit_compute_dtype": "float32",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One NF4 trial of a real study, the model it trained, and logits of that model."""
    root = tmp_path_factory.mktemp("qlora-export")
    rows = [{"prompt": f"twice {i}", "completion": str(2 * i)} for i in range(60)]
    config = api.study_from_dict(
        {
            "name": "qlora-export",
            "model": "tiny-llama",
            "task": jsonl_task(root, rows),
            "search_space": {
                "modules": {"lora": {"rank": [4], "targets": {"choice": [["q", "v", "o"]]}}},
                "training": {"quantization": ["nf4"], "gradient_checkpointing": [True]},
            },
            "training": {
                "steps": 6,
                "batch_size": 8,
                "eval_every": 6,
                "eval_examples": 8,
                "lr": 2e-2,
                "seed": SEED,
            },
            "objectives": "-eval_loss, -trainable_params, -peak_memory",
            "halving": {"enabled": False},
        }
    )
    study = Study(config, root=root)
    runner = TrainingRunner.for_study(study)
    seen = {}
    runner.context.before_training = lambda adapted: seen.setdefault("adapted", adapted)
    run_local(study, 1, runner=runner, progress=False)
    ((number, result),) = study.results()
    assert result.status is TrialStatus.COMPLETE, result.error
    valid = runner.context.data["validation"]
    batch = valid.batch(torch.arange(len(valid.lengths)))
    adapted = seen["adapted"]
    lora_b = [p for n, p in adapted.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # it trained: B left zero
    return study, number, predict(adapted.model, batch), batch


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    study, number, _, _ = trained
    return study_tools.export_trial(study, number, tmp_path_factory.mktemp("out") / "adapter")


def fresh_4bit_base(tmp_path, bnb: dict):
    """The base as a user loads it: its folder, quantised by transformers while loading.

    The tiny model's folder is written from its seeded random weights: the same base the
    study trained on (a real model's folder is simply its hub id or path).
    """
    import bitsandbytes
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = tmp_path / "tiny-llama"
    load_model("tiny-llama", seed=SEED, head="lm").save_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=BitsAndBytesConfig(**bnb)
    )
    # On a CPU with AVX512-BF16 (this one) bitsandbytes repacks 4-bit weights for bf16
    # inference at the first eval forward: other numerics than training's, and a crash on
    # layers narrower than its 64-weight block (the tiny model's 32). Off, as in training.
    for module in base.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return base


def test_the_export_is_a_peft_adapter_that_records_the_quantised_base(exported):
    adapter = json.loads((exported / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["task_type"] == "CAUSAL_LM"
    assert (exported / "adapter_model.safetensors").stat().st_size > 0
    manifest = json.loads((exported / "autopeft.json").read_text())
    assert manifest["training"]["quantization"] == "nf4"
    assert manifest["base_quantization"] == {"quantization": "nf4", "bitsandbytes_config": NF4}
    card = (exported / "README.md").read_text()
    assert "base quantised to nf4 by bitsandbytes" in card and "BitsAndBytesConfig(" in card
    assert "bnb_4bit_quant_type='nf4'" in card and "quantization_config=bnb" in card
    assert "PeftModel.from_pretrained(base_model" in card


def test_the_adapter_loads_on_a_fresh_4bit_base_and_gives_the_trained_logits(
    trained, exported, tmp_path
):
    import bitsandbytes as bnb
    from peft import PeftModel

    _, _, expected, batch = trained
    manifest = json.loads((exported / "autopeft.json").read_text())
    base = fresh_4bit_base(tmp_path, manifest["base_quantization"]["bitsandbytes_config"])
    q_proj = base.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.quant_type == "nf4"
    model = PeftModel.from_pretrained(base, str(exported))
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer) is type(q_proj)
    torch.testing.assert_close(predict(model, batch), expected, rtol=1e-4, atol=1e-4)
    # The adapter matters: the bare 4-bit base gives other logits.
    with model.disable_adapter():
        assert not torch.allclose(predict(model, batch), expected, atol=1e-3)
    # load_exported rebuilds the same model from the manifest, quantised as recorded.
    loaded = load_exported(exported)
    q_loaded = loaded.base.get_submodule(loaded.profile.layers[0].sublayers["q"].path)
    assert isinstance(q_loaded.base_layer, bnb.nn.Linear4bit)
    torch.testing.assert_close(predict(loaded.model, batch), expected, rtol=1e-4, atol=1e-4)


def test_the_recorded_quantisation_follows_the_lever(trained):
    from autopeft.train.export import base_quantization

    study, _, _, _ = trained
    plain = study.config.training.model_copy(update={"quantization": "none"})
    assert base_quantization(plain, study.profile) is None
    int8 = base_quantization(plain.model_copy(update={"quantization": "int8"}), study.profile)
    assert int8 == {"quantization": "int8", "bitsandbytes_config": {"load_in_8bit": True}}

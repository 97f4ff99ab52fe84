"""Memory levers: what each does to training, to validation and to the candidate."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft import api
from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError
from autopeft.core.levers import Levers, platform_problems
from autopeft.core.memory_model import predict_memory
from autopeft.core.resume import resume_conflicts
from autopeft.core.trial_result import TrialStatus
from autopeft.train.build import build_adapted
from autopeft.train.levers import prepare_base, trainable_in_fp32
from autopeft.train.loop import LoopResult, _accumulate
from autopeft.train.trial import TrialContext, run_trial, trial_levers
from tests.trial_helpers import LORA

#: LoRA rank 4 on q, v of the tiny Llama's 4 layers, with quantization searched.
SEARCHED = {"quantization": ["none", "nf4"], "gradient_checkpointing": [False, True]}


def study(training=None, space=None, task=None, **extra):
    raw = {
        "name": "levers",
        "model": "tiny-llama",
        "task": {"kind": "causal_lm", "max_length": 48, **(task or {})},
        "search_space": {"modules": {"lora": {}}, "training": space or {}},
        "training": {
            "steps": 8,
            "batch_size": 8,
            "eval_every": 4,
            "eval_examples": 16,
            **(training or {}),
        },
        **extra,
    }
    return api.study_from_dict(raw)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    # Answers of 1 to 6 words: micro batches hold unequal numbers of loss tokens.
    rows = [
        {"prompt": f"count to {i % 6 + 1} from {i}", "completion": " ".join(["go"] * (i % 6 + 1))}
        for i in range(48)
    ]
    path = tmp_path_factory.mktemp("levers") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TrialContext.create(study(task={"path": str(path)}), cache_dir=None)


def like(ctx, **training):
    """A context on ``ctx``'s data with other training settings."""
    return TrialContext.create(study(training, task={"path": ctx.config.task.path}))


def adapted_model(ctx, **levers):
    lev = Levers(8, 8, 48, **levers)
    torch.manual_seed(0)
    model = prepare_base(lev, ctx.base_model, ctx.load_quantized)
    adapted = build_adapted(model, ctx.profile, LORA, total_steps=8)
    trainable_in_fp32(adapted.model)
    adapted.precision = lev.dtype
    with torch.no_grad():  # LoRA's B starts at zero: give A a gradient too
        for name, p in adapted.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return adapted


def gradients(ctx, adapted, micro):
    adapted.model.train()
    idx = torch.arange(8)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = _accumulate(
        adapted, ctx.data["train"], idx, micro, torch.device("cpu"), scaler, LoopResult({})
    )
    grads = {n: p.grad.clone() for n, p in adapted.model.named_parameters() if p.requires_grad}
    adapted.model.zero_grad(set_to_none=True)
    return float(loss), grads


def assert_same(a, b, rtol=1e-4, atol=1e-6):
    assert a[0] == pytest.approx(b[0], rel=rtol)
    assert a[1].keys() == b[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=rtol, atol=atol, msg=name)


def test_micro_batches_accumulate_the_whole_batch_gradient(ctx):
    adapted = adapted_model(ctx)
    whole = gradients(ctx, adapted, micro=8)
    # Rows of unequal answer lengths: a plain mean of micro-batch means would differ.
    assert_same(gradients(ctx, adapted, micro=2), whole)
    assert_same(gradients(ctx, adapted, micro=1), whole)


def test_checkpointing_gives_the_same_loss_and_gradients(ctx):
    plain = gradients(ctx, adapted_model(ctx), micro=8)
    checkpointed = adapted_model(ctx, gradient_checkpointing=True)
    assert checkpointed.base.is_activation_checkpointing
    assert_same(gradients(ctx, checkpointed, micro=8), plain)


def test_a_bf16_base_trains_fp32_adapters_under_autocast(ctx):
    adapted = adapted_model(ctx, dtype="bf16")
    frozen = {p.dtype for p in adapted.model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in adapted.model.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}
    loss, grads = gradients(ctx, adapted, micro=4)
    assert torch.isfinite(torch.tensor(loss))
    assert all(g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("quantization", ["nf4", "fp4-dq", "int8"])
def test_a_quantized_base_trials_and_keeps_learning_after_evaluation(quantization):
    cfg = study({"quantization": quantization, "gradient_checkpointing": True})
    ctx = TrialContext.create(cfg, cache_dir=None)
    # Every trial loads its own quantised base: the shared one holds no weights.
    assert {p.device.type for p in ctx.base_model.parameters()} == {"meta"}
    seen = {}

    def keep(adapted):
        seen["model"], seen["base"] = adapted.model, adapted.base

    def lora_b():
        return torch.cat(
            [
                p.detach().flatten().clone()
                for n, p in seen["model"].named_parameters()
                if "lora_B" in n
            ]
        )

    snapshots = []
    ctx.before_training = keep
    res = run_trial(ctx, LORA, report=lambda step, m: snapshots.append(lora_b()) or True)
    assert res.status is TrialStatus.COMPLETE, res.error
    q_proj = seen["base"].get_submodule(ctx.profile.layers[0].sublayers["q"].path)
    linear = type(q_proj.base_layer)
    assert linear.__name__ == ("Linear8bitLt" if quantization == "int8" else "Linear4bit")
    # Evaluation at step 4 must not stop training (bitsandbytes' CPU inference path).
    assert not torch.equal(snapshots[0], lora_b()) and lora_b().abs().sum() > 0
    assert res.peak_memory_mb and res.peak_memory_mb > 0


def test_a_shorter_training_length_reports_the_rows_it_cut(ctx):
    full = ctx.data["train"]
    cut = ctx.train_split(10)
    assert int(cut.lengths.max()) <= 10 < int(full.lengths.max())
    share = ctx.truncated_share(10)
    assert share == pytest.approx(float((full.lengths > 10).float().mean())) and 0 < share <= 1
    res = run_trial(like(ctx, max_length=10), LORA, steps=4)
    assert res.status is TrialStatus.COMPLETE and res.metrics["truncated_share"] == share
    assert "truncated_share" not in run_trial(ctx, LORA, steps=4).metrics


def test_micro_batches_keep_the_trial_and_lower_its_memory(ctx):
    whole = run_trial(ctx, LORA, steps=4)
    micro = run_trial(like(ctx, micro_batch_size=2), LORA, steps=4)
    assert micro.status is TrialStatus.COMPLETE
    # The same effective batch and data order: the same first loss, up to summation order.
    assert micro.history[0]["train_loss"] == pytest.approx(whole.history[0]["train_loss"], 1e-4)
    assert micro.predicted_memory_mb < whole.predicted_memory_mb


def test_searched_levers_are_part_of_the_candidate():
    a = Candidate(modules=LORA.modules, training={"quantization": "none"})
    b = Candidate(modules=LORA.modules, training={"quantization": "nf4"})
    c = Candidate(modules=LORA.modules, training={"gradient_checkpointing": True})
    assert len({a.key(), b.key(), c.key(), LORA.key()}) == 4
    assert "quantization=nf4" in b.describe() and "gradient_checkpointing=true" in c.describe()
    assert Candidate.model_validate_json(c.model_dump_json()) == c  # a bool stays a bool


def test_a_trial_takes_its_candidates_levers(ctx):
    searched = Candidate(
        modules=LORA.modules, training={"micro_batch_size": 4, "max_length": 32, "dtype": "bf16"}
    )
    assert trial_levers(ctx, searched) == Levers(8, 4, 32, False, "bf16", "none")
    assert trial_levers(ctx, LORA) == Levers(8, 8, 48)


def test_a_study_stored_before_the_levers_resumes_without_conflict():
    current = study().model_dump(mode="json")
    stored = {**current, "training": dict(current["training"])}
    for key in ("gradient_checkpointing", "micro_batch_size", "max_length", "dtype"):
        del stored["training"][key]
    del stored["training"]["quantization"]
    assert resume_conflicts(stored, current, "x") == []
    changed = study({"quantization": "nf4"}).model_dump(mode="json")
    assert [p.path for p in resume_conflicts(stored, changed, "x")] == ["training.quantization"]


@pytest.mark.parametrize(
    ("training", "space", "task", "path", "words"),
    [
        ({"micro_batch_size": 3}, {}, {}, "training.micro_batch_size", "must divide batch_size"),
        ({}, {"micro_batch_size": [2, 3]}, {}, "search_space.training.micro_batch_size", "got 3"),
        ({"max_length": 64}, {}, {}, "training.max_length", "at most task.max_length (48)"),
        ({}, {"max_length": [32, 96]}, {}, "search_space.training.max_length", "got 96"),
        ({}, {"quantization": "nf4"}, {}, "quantization", "takes a list of choices"),
        ({}, {"quantization": ["nf3"]}, {}, "quantization", "one of none, nf4"),
        ({}, {"dtype": ["fp8"]}, {}, "dtype", "one of fp32, bf16, fp16"),
        ({"dtype": "fp8"}, {}, {}, "training.dtype", "fp8"),
        ({}, {"gradient_checkpointing": ["yes"]}, {}, "gradient_checkpointing", "true or false"),
    ],
)
def test_bad_levers_get_one_paragraph(training, space, task, path, words):
    with pytest.raises(ConfigError) as err:
        study(training, space, task)
    text = str(err.value)
    assert path in text and words in text, text
    assert "Traceback" not in text and text.count("\n") < 8


def test_a_quantized_base_without_bitsandbytes_is_refused_by_validate(monkeypatch):
    import autopeft.core.study_config as study_config

    real = study_config.find_spec
    monkeypatch.setattr(
        study_config, "find_spec", lambda name: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(ConfigError) as err:
        study(space=SEARCHED)
    text = str(err.value)
    assert "search_space.training.quantization" in text and "needs bitsandbytes" in text
    assert "nf4" in text and "pip install bitsandbytes" in text
    study()  # an unquantised study still validates


def test_bf16_on_a_gpu_without_it_is_a_platform_problem():
    assert platform_problems({"dtype": {"bf16"}}, bnb=True, bf16_device=False)
    assert not platform_problems({"dtype": {"bf16"}}, bnb=True, bf16_device=True)
    assert not platform_problems({"dtype": {"bf16"}, "quantization": {"none"}}, bnb=False)


def _predicted(ctx, levers, device="cuda"):
    seq = int(ctx.data["train"].lengths.max())
    return predict_memory(
        ctx.profile,
        LORA,
        2048,
        levers.micro_batch_size,
        levers.max_length or seq,
        device,
        levers=levers,
    )


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_every_lever_lowers_the_predicted_memory(ctx, device):
    base = Levers(8, 8, 48)
    fp32 = _predicted(ctx, base, device)
    for lighter in (
        Levers(8, 2, 48),
        Levers(8, 8, 24),
        Levers(8, 8, 48, gradient_checkpointing=True),
    ):
        assert _predicted(ctx, lighter, device).activations < fp32.activations, lighter
    weights = [
        _predicted(ctx, Levers(8, 8, 48, dtype=d, quantization=q), device).weights
        for d, q in [("fp32", "none"), ("bf16", "none"), ("bf16", "int8"), ("bf16", "nf4")]
    ]
    assert weights == sorted(weights, reverse=True) and len(set(weights)) == 4
    nested = _predicted(ctx, Levers(8, 8, 48, dtype="bf16", quantization="nf4-dq"), device)
    assert nested.weights < weights[-1]


def test_a_search_over_a_lever_trains_each_value_once_and_resumes(tmp_path):
    spec = {
        "name": "lever-search",
        "model": "tiny-bert",
        "task": {"name": "sms_spam", "max_length": 32},
        "search_space": {
            "modules": {"lora": {"rank": [4]}},
            "layers": {"top": 2},
            "training": {"gradient_checkpointing": [False, True], "micro_batch_size": [4, 8]},
        },
        "training": {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_examples": 16},
        "sampler": {"name": "random"},
        "n_trials": 8,
    }
    study = api.run(api.study_from_dict(spec), root=tmp_path)
    trained = [
        t
        for t in study.optuna.trials
        if t.user_attrs.get("status") and not t.user_attrs.get("reused")
    ]
    # Four candidates that differ only in levers: four trainings, then the space is known.
    levers = {
        (t.params["training.gradient_checkpointing"], t.params["training.micro_batch_size"])
        for t in trained
    }
    assert len(trained) == 4 and len(levers) == 4
    again = api.run(api.study_from_dict(spec), root=tmp_path, n_trials=8)
    retrained = [
        t
        for t in again.optuna.trials
        if t.user_attrs.get("status") and not t.user_attrs.get("reused")
    ]
    assert len(retrained) == 4  # the resumed study trains nothing again


def test_bf16_on_a_gpu_without_it_is_refused_before_any_trial(monkeypatch):
    from autopeft.train.trial import _check_platform

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    searched = study(space={"dtype": ["fp32", "bf16"]})
    with pytest.raises(ConfigError) as err:
        _check_platform(searched, torch.device("cuda"))
    text = str(err.value)
    assert "search_space.training.dtype" in text and "compute capability 8.0" in text
    _check_platform(study({"dtype": "fp16"}), torch.device("cuda"))  # fp16 runs there
    _check_platform(searched, torch.device("cpu"))  # CPU autocast runs bf16

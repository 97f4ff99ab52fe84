"""Causal-LM SFT tasks on a tiny Llama: config rules, data, loss masking, metrics, trials."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft import api
from autopeft.core.errors import ConfigError
from autopeft.core.trial_result import TrialStatus
from autopeft.train.sft import load_sft, normalise
from autopeft.train.trial import TrialContext, run_trial
from tests.trial_helpers import LORA  # rank 4 on q, v of 4 layers


def study(task=None, **extra):
    raw = {
        "name": "sft",
        "model": "tiny-llama",
        "task": {"kind": "causal_lm", "max_length": 48, **(task or {})},
        "search_space": {"modules": {"lora": {}}},
        "training": {"steps": 8, "batch_size": 8, "eval_every": 4, "eval_examples": 16},
        **extra,
    }
    return api.study_from_dict(raw)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_causal_task_takes_its_kinds_defaults():
    config = study()
    assert config.task.name == "arithmetic"
    assert config.task.metric == "eval_loss"
    assert [(o.metric, o.direction) for o in config.objectives] == [
        ("eval_loss", "minimize"),
        ("trainable_params", "minimize"),
        ("peak_memory", "minimize"),
    ]
    assert config.task_direction == "minimize"
    chosen = study(objectives="exact_match, -trainable_params")
    assert chosen.task.metric == "exact_match" and chosen.task_direction == "maximize"


@pytest.mark.parametrize(
    ("task", "extra", "path", "words"),
    [
        ({"kind": "causal"}, {}, "task.kind", "did you mean 'causal_lm'"),
        ({"text": "body"}, {}, "task.text", "not a field of causal_lm tasks"),
        ({"metric": "accuracy"}, {}, "task.metric", "measures eval_loss, perplexity"),
        ({}, {"objectives": "accuracy, -trainable_params"}, "objectives", "unknown objective"),
        ({"name": "arithmetc"}, {}, "task.name", "did you mean 'arithmetic'"),
    ],
)
def test_bad_causal_tasks_get_one_paragraph(task, extra, path, words, tmp_path):
    with pytest.raises(ConfigError) as err:
        config = study(task, **extra)
        TrialContext.create(config)  # the built-in task name is checked when it loads
    text = str(err.value)
    assert path in text and words in text, text
    assert "Traceback" not in text


def test_a_chat_row_without_an_assistant_answer_names_its_line(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    ]
    rows.append({"messages": [{"role": "user", "content": "only a question"}]})
    path = write_jsonl(tmp_path / "chat.jsonl", rows * 1)
    with pytest.raises(ConfigError) as err:
        load_sft(study({"path": path}).task)
    assert "line 2 of" in str(err.value) and "no assistant turn" in str(err.value)


def test_prompt_completion_rows_need_their_columns(tmp_path):
    path = write_jsonl(
        tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(9)]
    )
    with pytest.raises(ConfigError) as err:
        load_sft(study({"path": path}).task)
    text = str(err.value)
    assert "task.prompt" in text and "task.completion" in text and "messages" in text


def test_loss_falls_on_the_answer_and_its_end_only(tmp_path):
    rows = [{"prompt": f"what is number {i}", "completion": f"it is {i}"} for i in range(40)]
    config = study({"path": write_jsonl(tmp_path / "qa.jsonl", rows)})
    ctx = TrialContext.create(config)
    train = ctx.data["train"]
    batch = train.batch(torch.arange(len(train)))
    eos = ctx.kind.tokenizer(config.model, ctx.task).eos_token_id
    for row in range(len(train)):
        length, prompt = int(train.lengths[row]), int(train.labels[row])
        labels = batch["labels"][row]
        assert (labels[:prompt] == -100).all()  # no loss on the prompt ...
        assert (labels[length:] == -100).all()  # ... nor on padding
        answer = labels[prompt:length]
        assert (answer != -100).all() and int(answer[-1]) == eos  # it learns to stop
        assert len(answer) == 4  # "it", "is", the number, then eos
    assert train.fit[:2] == (0, 0)  # every row fits


def test_rows_that_do_not_fit_max_length_are_counted_and_reported(tmp_path, capsys):
    long = " ".join(["word"] * 60)
    rows = [{"prompt": f"p {i}", "completion": "short"} for i in range(30)]
    rows += [{"prompt": f"{long} {i}", "completion": "x"} for i in range(10)]
    rows += [{"prompt": f"q {i}", "completion": long} for i in range(10)]
    config = study({"path": write_jsonl(tmp_path / "qa.jsonl", rows)})
    ctx = TrialContext.create(config)
    dropped = sum(enc.fit[0] for enc in ctx.data.values())
    truncated = sum(enc.fit[1] for enc in ctx.data.values())
    assert (dropped, truncated) == (10, 10)
    assert int(ctx.data["train"].lengths.max()) <= 48
    err = capsys.readouterr().err
    assert "left out" in err and "cut at the end" in err and "task.max_length" in err


def test_chat_rows_render_with_the_template_and_need_one(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"say {i}"},
                {"role": "assistant", "content": f"{i}"},
            ]
        }
        for i in range(30)
    ]
    config = study({"path": write_jsonl(tmp_path / "chat.jsonl", rows)})
    with pytest.raises(ConfigError) as err:
        TrialContext.create(config)  # the tiny word-level tokenizer has no chat template
    assert "no chat template" in str(err.value) and "task.messages" in str(err.value)

    from autopeft.train.sft import encode_sft

    task = load_sft(config.task)
    ctx_kind = __import__("autopeft.tasks", fromlist=["get"]).get("causal_lm")
    tok = ctx_kind.tokenizer("tiny-llama", task)
    tok.chat_template = (
        "{% for m in messages %}{{ m.role }} : {{ m.content }} [EOS] {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    data = encode_sft(task, tok, config.task, None)
    train = data["train"]
    row = 0
    ids = train.input_ids[row, : int(train.lengths[row])].tolist()
    prompt = int(train.labels[row])
    turns = [{"role": "user", "content": f"say {train.references[row]}"}]
    rendered = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("user : say") and rendered.endswith("assistant : ")
    assert ids[:prompt] == tok(rendered, add_special_tokens=False)["input_ids"]
    answer = ids[prompt:]
    assert answer[-1] == tok.eos_token_id and len(answer) == 2  # the number, then [EOS]


def test_normalise_compares_answers_loosely():
    assert normalise("  42. ") == normalise("42") == "42"
    assert normalise('"Paris"') == normalise("paris")
    assert normalise("New   York") == "new york"
    assert normalise("41") != normalise("42")


def test_exact_match_rises_when_the_model_learns_the_answer(tmp_path):
    rows = [{"prompt": f"is {i} a number", "completion": "yes"} for i in range(60)]
    config = study(
        {"path": write_jsonl(tmp_path / "yes.jsonl", rows), "max_new_tokens": 3},
        objectives="exact_match, -trainable_params",
        training={"steps": 40, "batch_size": 8, "eval_every": 40, "eval_examples": 12, "lr": 0.05},
    )
    ctx = TrialContext.create(config)
    before = ctx.evaluator()
    from autopeft.train.build import build_adapted

    untrained = build_adapted(
        __import__("copy").deepcopy(ctx.base_model), ctx.profile, LORA, total_steps=40
    )
    start = before(untrained, ctx.data["validation"], 8, 12, ctx.device)
    assert start["exact_match"] == 0.0
    result = run_trial(ctx, LORA)
    assert result.status is TrialStatus.COMPLETE, result.error
    assert result.metrics["exact_match"] == 1.0
    assert result.metrics["eval_loss"] < start["eval_loss"]
    assert result.head_params == 0 and result.trainable_params == 4 * 4 * (32 + 32) + 4 * 4 * (
        32 + 16
    )


def test_eval_loss_is_measured_and_exact_match_only_when_used():
    result = run_trial(TrialContext.create(study()), LORA)
    assert result.status is TrialStatus.COMPLETE, result.error
    assert set(result.metrics) == {"eval_loss", "perplexity", "train_loss"}
    assert result.metrics["perplexity"] == pytest.approx(
        torch.tensor(result.metrics["eval_loss"]).exp().item()
    )
    # A rung that ranks by exact match has it measured at every evaluation.
    ranked = run_trial(TrialContext.create(study(halving={"metric": "exact_match"})), LORA)
    assert ranked.status is TrialStatus.COMPLETE, ranked.error
    assert all("exact_match" in h for h in ranked.history) and len(ranked.history) == 2


def test_rungs_ranked_by_the_loss_generate_answers_only_at_the_end(monkeypatch):
    # The objective needs generated answers; rungs that rank by eval_loss do not.
    config = study(objectives="exact_match, -trainable_params", halving={"metric": "eval_loss"})
    ctx = TrialContext.create(config)
    asked = []
    kind_evaluate = ctx.kind.evaluate

    def spy(adapted, data, batch_size, limit, device, wanted):
        asked.append(wanted)
        return kind_evaluate(adapted, data, batch_size, limit, device, wanted)

    monkeypatch.setattr(ctx.kind, "evaluate", spy)  # the registry's instance, restored after
    result = run_trial(ctx, LORA, eval_at={4})
    assert result.status is TrialStatus.COMPLETE, result.error
    assert len(asked) == 2 and asked[0] == {"eval_loss"}
    assert {"exact_match", "eval_loss"} <= asked[1]
    middle, last = result.history
    assert "exact_match" not in middle and "eval_loss" in middle
    assert "exact_match" in last and result.metrics["exact_match"] == last["exact_match"]
    # Without halving.metric every evaluation measures the objectives (BO samplers fit a
    # pruned trial by its objective values at the rung).
    plain = run_trial(TrialContext.create(study(objectives="exact_match, -trainable_params")), LORA)
    assert all("exact_match" in h for h in plain.history)


def test_a_causal_study_runs_with_halving_and_exports_a_loadable_adapter(tmp_path):
    """The whole path: a local study with halving on -eval_loss, then a front point exported
    as a standard CAUSAL_LM peft adapter that PeftModel loads on the base and generates with."""
    from peft import PeftModel

    from autopeft import reeval, study_tools
    from autopeft.search.local import run_local
    from autopeft.search.study import Study
    from autopeft.train.models import load_model

    config = study(
        training={
            "steps": 12,
            "batch_size": 8,
            "eval_every": 12,
            "eval_examples": 16,
            "rungs": [0.25, 0.5, 1.0],
            "seed": 2,
        },
        search_space={"modules": {"lora": {"rank": [2, 4, 8], "targets": ["q", "v", "o"]}}},
        halving={"min_peers": 2, "eta": 2.0},
        n_trials=6,
    )
    trained = run_local(Study(config, root=tmp_path), 6, progress=False)
    outcomes = [r for _, r in trained.results()]
    assert all(r.status in (TrialStatus.COMPLETE, TrialStatus.PRUNED) for r in outcomes)
    assert any(r.status is TrialStatus.COMPLETE for r in outcomes)
    # Rung points hold the loss signed so that higher is better, as the halving rule reads.
    rung_points = [p for p in trained.rung_points(3)]
    assert rung_points and all(p[0] < 0 for p in rung_points)
    number, best = trained.best("eval_loss")
    assert best.metrics["eval_loss"] == min(
        r.metrics["eval_loss"] for _, r in trained.front_points()
    )
    # reeval retrains the best front point first: the lowest loss, not the highest.
    (row,) = reeval.reeval(trained, top=1, seeds=1)
    assert row["trial"] == number and row["metric"] == "eval_loss"

    out = study_tools.export_trial(trained, number, tmp_path / "adapter")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM"
    assert adapter["base_model_name_or_path"] == "tiny-llama"
    card = (out / "README.md").read_text()
    assert "base_model: tiny-llama" in card and "eval_loss" in card and "lora" in card
    manifest = json.loads((out / "autopeft.json").read_text())
    assert manifest["task_kind"] == "causal_lm" and manifest["head"] == "lm"

    ctx = TrialContext.create(config)
    base = load_model("tiny-llama", seed=2, head="lm")
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    from autopeft.train.export import load_exported

    loaded = load_exported(out)
    batch = ctx.data["validation"].batch(torch.arange(4))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = loaded.model(**inputs).logits
        assert torch.allclose(peft_model(**inputs).logits, expected, atol=1e-5)
    prompts = ctx.data["validation"].prompts(torch.arange(4))
    generated = peft_model.generate(**prompts, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape[1] > prompts["input_ids"].shape[1]


SEEN_BY_SCORER: list[tuple[list[str], list[str]]] = []


def share_of_digits(predictions: list[str], references: list[str]) -> float:
    """A user scoring function (task.scorer): the share of answers that are numbers."""
    SEEN_BY_SCORER.append((predictions, references))
    return sum(p.strip().isdigit() for p in predictions) / len(predictions)


def test_a_user_scoring_function_scores_the_greedy_answers():
    config = study(
        {"scorer": "tests.test_causal_lm:share_of_digits", "generate_examples": 6},
        objectives="score, -trainable_params",
    )
    assert config.task.metric == "score" and config.task_direction == "maximize"
    SEEN_BY_SCORER.clear()
    result = run_trial(TrialContext.create(config), LORA)
    assert result.status is TrialStatus.COMPLETE, result.error
    predictions, references = SEEN_BY_SCORER[-1]
    assert len(predictions) == len(references) == 6
    assert all(r.isdigit() for r in references)  # the arithmetic answers
    assert result.metrics["score"] == share_of_digits(predictions, references)
    assert "exact_match" not in result.metrics  # not asked for


@pytest.mark.parametrize(
    ("task", "objectives", "words"),
    [
        ({}, "score, -trainable_params", "the metric 'score' needs task.scorer"),
        ({"scorer": "not a function"}, None, "task.scorer"),
    ],
)
def test_a_score_needs_a_scorer_named_as_module_and_function(task, objectives, words):
    with pytest.raises(ConfigError) as err:
        study(task, **({"objectives": objectives} if objectives else {}))
    assert words in str(err.value)


def test_a_scorer_that_cannot_be_imported_is_one_paragraph():
    config = study({"scorer": "tests.test_causal_lm:no_such_function"}, objectives="score")
    with pytest.raises(ConfigError) as err:
        TrialContext.create(config)
    assert "task.scorer" in str(err.value) and "AttributeError" in str(err.value)

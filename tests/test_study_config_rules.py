"""Rules tying a study's settings together: objectives, task metric, budget, and resuming."""

from __future__ import annotations

import json

import pytest

from autopeft import api
from autopeft.core.errors import ConfigError
from autopeft.search.study import Study


def study(name: str = "s", **extra):
    return api.study_from_dict(
        {"name": name, "search_space": {"modules": {"lora": {"rank": [2, 4]}}}} | extra
    )


def problems(**extra) -> str:
    with pytest.raises(ConfigError) as err:
        study(**extra)
    return str(err.value)


def test_objectives_written_as_mappings_are_checked_like_the_short_form():
    text = problems(objectives=[{"metric": "acuracy", "direction": "maximize"}])
    assert "- objectives: unknown objective metric, but got 'acuracy'" in text
    assert "did you mean 'accuracy'" in text


def test_the_objectives_follow_the_task_metric_and_the_task_metric_the_objectives():
    by_metric = study(task={"name": "sms_spam", "metric": "f1"})
    assert [(o.metric, o.direction) for o in by_metric.objectives] == [
        ("f1", "maximize"),
        ("trainable_params", "minimize"),
        ("peak_memory", "minimize"),
    ]
    by_objectives = study(objectives="mcc, -trainable_params")
    assert by_objectives.task.metric == "mcc"
    no_task_metric = study(objectives="wall_time, -trainable_params", task={"metric": "f1"})
    assert no_task_metric.task.metric == "f1"  # nothing to contradict: halving reads f1


def test_a_task_metric_the_objectives_do_not_rank_by_is_refused():
    text = problems(objectives="f1, -trainable_params", task={"metric": "accuracy"})
    assert "- task.metric: must be the task metric among the objectives (f1)" in text
    assert "but got 'accuracy'" in text and "set task.metric to 'f1'" in text


def test_a_fractional_parameter_count_is_refused_not_truncated():
    text = problems(search_space={"modules": {"lora": {}}, "budget": {"max_trainable_params": 1.5}})
    assert "- search_space.budget.max_trainable_params: a parameter count is a whole number" in text
    budget = study(search_space={"modules": {"lora": {}}, "budget": {"max_trainable_params": 2e5}})
    assert budget.search_space.budget.max_trainable_params == 200_000


def test_a_study_without_trials_takes_a_corrected_configuration(tmp_path):
    Study(study("fix", task={"name": "rotten_tomatoes", "max_length": 16}), root=tmp_path)
    Study(study("fix", task={"name": "sms_spam", "max_length": 16}), root=tmp_path)
    stored = json.loads((tmp_path / "fix" / "study.json").read_text())
    assert stored["task"]["name"] == "sms_spam"


def test_a_study_with_trials_refuses_settings_its_trials_did_not_use(tmp_path):
    first = Study(study("keep", training={"steps": 10}), root=tmp_path)
    first.optuna.ask()  # a trial exists now
    changed = study(
        "keep",
        training={"steps": 30},
        search_space={"modules": {"lora": {"rank": {"type": "int", "low": 2, "high": 8}}}},
    )
    with pytest.raises(ConfigError) as err:
        Study(changed, root=tmp_path)
    text = str(err.value)
    assert "- training.steps: the study's trials were run with 10" in text
    assert "but got 30" in text
    assert "- search_space.modules.lora.rank" in text
    assert "give the changed study a new name" in text
    stored = json.loads((tmp_path / "keep" / "study.json").read_text())
    assert stored["training"]["steps"] == 10  # nothing overwritten


def test_a_study_with_trials_takes_new_search_settings(tmp_path):
    first = Study(study("more", n_trials=5), root=tmp_path)
    first.optuna.ask()
    resumed = Study(study("more", n_trials=12, sampler="random"), root=tmp_path)
    assert resumed.optuna.user_attrs["config"]["n_trials"] == 12
    stored = json.loads((tmp_path / "more" / "study.json").read_text())
    assert (stored["n_trials"], stored["sampler"]["name"]) == (12, "random")


def test_a_data_path_stored_relative_is_the_same_file_absolute_and_no_other(tmp_path):
    # Studies made before paths were read from the study file's folder stored them relative.
    first = Study(study("moved", task={"path": "data/reviews.csv"}), root=tmp_path)
    first.optuna.ask()
    Study(study("moved", task={"path": str(tmp_path / "data" / "reviews.csv")}), root=tmp_path)
    stored = json.loads((tmp_path / "moved" / "study.json").read_text())
    assert stored["task"]["path"] == str(tmp_path / "data" / "reviews.csv")
    other = str(tmp_path / "elsewhere" / "reviews.csv")  # same name, another file
    with pytest.raises(ConfigError, match="- task.path: the study's trials were run with"):
        Study(study("moved", task={"path": other}), root=tmp_path)


def test_halving_ranks_by_a_metric_the_task_measures_or_by_the_task_metric():
    assert study().rung_metric == "accuracy"  # the task metric by default
    by_loss = study(halving={"metric": "loss"})
    assert by_loss.rung_metric == "loss" and by_loss.task.metric == "accuracy"
    # Signed so that higher is better, whatever the objectives say of the task metric.
    assert by_loss.rung_score({"accuracy": 0.7, "loss": 0.4}) == -0.4
    assert by_loss.halving_score({"accuracy": 0.7}) is None
    text = problems(halving={"metric": "los"})
    assert "- halving.metric: a rung ranks trials by a metric a classification task " in text
    assert "(accuracy, f1, mcc, loss), but got 'los'" in text
    assert "Hint: did you mean 'loss'? Or leave it out to rank by task.metric" in text
    assert text.count("'los'") == 1
    sft = {"kind": "causal_lm"}
    assert study(task=sft, halving={"metric": "perplexity"}).rung_score({"perplexity": 3.0}) == -3
    # A rung metric that needs a task setting asks for it, as an objective would.
    text = problems(task=sft, halving={"metric": "score"})
    assert "- task.scorer: the metric 'score' needs task.scorer, which is not set" in text


def test_a_study_with_trials_keeps_the_metric_its_rungs_were_ranked_by(tmp_path):
    first = Study(study("rungs", halving={"eta": 3}), root=tmp_path)
    first.optuna.ask()
    Study(study("rungs", halving={"eta": 2}), root=tmp_path)  # other halving settings may change
    Study(study("rungs", halving={"metric": "accuracy"}), root=tmp_path)  # the task metric: same
    with pytest.raises(ConfigError) as err:
        Study(study("rungs", halving={"metric": "loss"}), root=tmp_path)
    text = str(err.value)
    assert '- halving.metric: the study\'s trials were run with "accuracy", and a study ' in text
    assert 'keeps the halving metric its trials were run with, but got "loss"' in text

"""Training settings searched beside the modules: the DSL, sampling, candidates, the trial."""

from __future__ import annotations

import math

import pytest

from autopeft import api
from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError
from autopeft.core.resolve import RandomSuggest, parameter_domains
from autopeft.core.study_config import StudyConfig, TrainingConfig, trial_training
from autopeft.core.training_space import _DEFAULTS
from autopeft.train.trial import run_trial
from tests.trial_helpers import LORA, make_context

MODULES = {"lora": {"rank": [0, 4, 8]}, "serial_adapter": {"size": [0, 8]}}


def resolved(training):
    return api.resolve(api.space_from_dict({"modules": MODULES, "training": training}))


def test_searched_settings_are_suggested_in_their_domains_and_multiply_the_size():
    space = resolved({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    assert parameter_domains(space)["training.lr"] == "float 0.0001..0.01 log"
    lrs = [space.sample(RandomSuggest(seed)).training["lr"] for seed in range(200)]
    assert all(1e-4 <= v <= 1e-2 for v in lrs)
    # Log-uniform: about half the draws below the geometric middle, 1e-3.
    assert 70 < sum(v < 1e-3 for v in lrs) < 130
    assert space.size() == math.inf
    plain = api.resolve(api.space_from_dict({"modules": MODULES})).size()
    choices = resolved({"lr": [1e-3, 3e-3], "warmup": [0.0, 0.1, 0.2]})
    assert choices.size() == plain * 6
    sample = choices.sample(RandomSuggest(1)).training
    assert set(sample) == {"lr", "warmup"} and sample["warmup"] in (0.0, 0.1, 0.2)
    # An int range is suggested as an int and carried as a float, like every setting.
    ints = resolved({"warmup": {"type": "int", "low": 0, "high": 1}})
    assert parameter_domains(ints)["training.warmup"] == "int 0..1"
    drawn = {ints.sample(RandomSuggest(seed)).training["warmup"] for seed in range(20)}
    assert drawn == {0.0, 1.0} and all(isinstance(v, float) for v in drawn)
    assert ints.size() == plain * 2


def test_a_study_with_searched_settings_round_trips_through_its_json_snapshot():
    training = {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}, "warmup": [0, 0.1]}
    config = api.study_from_dict(
        {
            "name": "rt",
            "model": "minilm",
            "search_space": {"modules": MODULES, "training": training},
        }
    )
    again = StudyConfig.model_validate_json(config.model_dump_json())
    assert again == config and set(again.search_space.training.domains) == {"lr", "warmup"}


def test_a_candidate_without_searched_settings_keeps_its_json_and_key():
    plain = api.resolve(api.space_from_dict({"modules": MODULES})).sample(RandomSuggest(3))
    assert "training" not in plain.to_json()
    assert Candidate.model_validate(plain.to_json()) == plain
    with_lr = plain.model_copy(update={"training": {"lr": 1e-3}})
    assert with_lr.key() != plain.key()
    assert Candidate.model_validate(with_lr.to_json()) == with_lr
    assert with_lr.describe() == plain.describe() + " | lr=0.001"


@pytest.mark.parametrize(
    "training, path, words",
    [
        ({"lr": {"type": "float", "low": 0.0, "high": 1e-2}}, "training.lr", "lr > 0 must hold"),
        ({"warmup": [0.1, 1.5]}, "training.warmup", "0 <= warmup <= 1 must hold"),
        ({"weight_decay": [-0.1]}, "training.weight_decay", "weight_decay >= 0"),
        ({"learning_rate": [1e-3]}, "training.learning_rate", "not a searchable"),
        ({"lr": 1e-3}, "training.lr", "belongs in the study's training section"),
        ({"lr": {"type": "float", "low": 1e-2, "high": 1e-4}}, "training.lr", "low <= high"),
        ({"lr": ["fast"]}, "training.lr", "but got 'fast'"),
    ],
)
def test_bad_training_domains_name_the_field_and_the_rule(training, path, words):
    with pytest.raises(ConfigError) as err:
        api.space_from_dict({"modules": MODULES, "training": training})
    text = str(err.value)
    assert f"- search_space.{path}:" in text and words in text and "Hint:" in text


def test_hints_quote_the_study_defaults():
    defaults = TrainingConfig()
    assert _DEFAULTS == {k: getattr(defaults, k) for k in _DEFAULTS}


def test_a_trial_trains_with_its_own_searched_settings():
    ctx = make_context()
    assert trial_training(ctx.config.training, LORA) is ctx.config.training
    own = run_trial(ctx, LORA.model_copy(update={"training": {"lr": 2e-2}}))
    # The same trial in a study whose recipe has that rate: the same training, step by step.
    same = run_trial(make_context(lr=2e-2), LORA)
    default = run_trial(ctx, LORA)
    assert own.history == same.history
    assert own.history != default.history


@pytest.mark.parametrize("sampler", ["tpe", "qnehvi"])
def test_samplers_search_the_rate_and_each_trial_carries_its_own(tmp_path, sampler):
    from autopeft.search import blackbox
    from autopeft.search.local import run_local
    from autopeft.search.study import Study

    config = api.study_from_dict(
        {
            "name": f"lr-{sampler}",
            "model": "minilm",
            "search_space": {
                "modules": MODULES,
                "layers": "search",
                "training": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            },
            "training": {"steps": 30, "rungs": [0.5, 1.0]},
            "sampler": {"name": sampler, "n_startup_trials": 4},
        }
    )
    study = Study(config, root=tmp_path)
    run_local(study, 7, runner=blackbox.for_study(study), progress=False)
    by_number = {t.number: t for t in study.optuna.trials}
    results = study.results()
    assert len(results) >= 7
    for number, result in results:
        lr = by_number[number].params["training.lr"]
        assert 1e-4 <= lr <= 1e-2 and result.candidate.training == {"lr": lr}
    # The model-based proposals (after 4 random ones) move the rate too.
    assert len({r.candidate.training["lr"] for _, r in results}) == len(results)

"""The Python API as a data scientist uses it: autopeft.run / open_study, named DataFrames."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

import autopeft
from autopeft.core.errors import ConfigError

pytestmark = pytest.mark.xdist_group("python_api")

STUDY = {
    "name": "pyapi",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [0, 2, 8]}}, "layers": {"top": 2}},
    "training": {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_examples": 16},
    "objectives": "accuracy, -trainable_params, -peak_memory",
    "sampler": {"name": "random", "seed": 1},
    "halving": {"enabled": False},
    "n_trials": 3,
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return autopeft.run(STUDY, root=root), root


def test_import_autopeft_is_cheap_and_lists_its_public_names():
    assert {"run", "open_study", "Study", "TrialResult"} <= set(autopeft.__all__)
    assert set(autopeft.__all__) <= set(dir(autopeft))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        autopeft.nope  # noqa: B018 -- the attribute access is the test


def test_run_takes_a_dict_and_returns_named_tables(ran):
    study, _ = ran
    trials = study.trials()
    assert isinstance(trials, pd.DataFrame) and len(trials) == 3
    # One column per objective (named as the study names it), metric and parameter.
    for column in ["accuracy", "trainable_params", "peak_memory", "f1", "loss", "param.lora.rank"]:
        assert column in trials.columns, column
    assert list(trials["number"]) == [0, 1, 2]
    assert str(trials["trainable_params"].dtype) == "Int64"
    done = trials[trials["status"] == "COMPLETE"]
    assert done["accuracy"].between(0, 1).all()
    # A zero-rank LoRA trains only the head: 0 adapter parameters, head parameters counted.
    assert (trials["trainable_params"] >= 0).all() and (trials["head_params"] > 0).all()

    front = study.front()
    assert isinstance(front, pd.DataFrame) and 1 <= len(front) <= len(done)
    assert list(front.columns) == list(trials.columns)
    assert set(front["number"]) <= set(done["number"])
    assert front["accuracy"].is_monotonic_decreasing


def test_best_is_named(ran):
    study, _ = ran
    best = study.best()
    assert best.number in set(study.front()["number"])
    assert best.result.metrics["accuracy"] == study.front()["accuracy"].max()
    smallest = study.best(max_params=int(study.front()["trainable_params"].min()))
    assert smallest.result.trainable_params == study.front()["trainable_params"].min()


def test_open_study_by_folder_file_and_name_reads_the_same_trials(ran, tmp_path):
    study, root = ran
    file = tmp_path / "pyapi.yaml"
    file.write_text(yaml.safe_dump(STUDY))
    for ref, kwargs in [(root / "pyapi", {}), (file, {"root": root}), ("pyapi", {"root": root})]:
        opened = autopeft.open_study(ref, **kwargs)
        pd.testing.assert_frame_equal(opened.trials(), study.trials())


def test_run_accepts_a_path_and_a_typed_config_and_resumes(ran, tmp_path):
    study, root = ran
    file = tmp_path / "pyapi.yaml"
    file.write_text(yaml.safe_dump(STUDY))
    # All three forms name the same study: resuming with n_trials=3 trains nothing more.
    for config in [file, str(file), autopeft.study_from_dict(STUDY)]:
        again = autopeft.run(config, root=root)
        assert len(again.trials()) == 3


def test_run_refuses_a_bad_dict_with_the_field_path(tmp_path):
    bad = dict(STUDY, training=dict(STUDY["training"], batch_size=0))
    with pytest.raises(ConfigError) as err:
        autopeft.run(bad, root=tmp_path)
    assert "training.batch_size" in str(err.value)
    assert not (tmp_path / "pyapi").exists()

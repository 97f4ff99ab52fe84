"""Every registered task kind: a study of it validates, trains a tiny model, measures every
metric it declares, and exports; a new kind is picked up here without an edit."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from autopeft import api, tasks
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.study_config import COMMON_TASK_FIELDS, TaskConfig
from autopeft.core.trial_result import TrialStatus
from autopeft.train.build import build_adapted
from autopeft.train.trial import TrialContext, run_trial

KINDS = sorted(tasks.registry())
#: A tiny model per head a kind may load.
TINY = {"classifier": "tiny-bert", "lm": "tiny-llama"}


def kind_study(name: str):
    kind = tasks.get(name)
    return api.study_from_dict(
        {
            "name": f"contract-{name}",
            "model": TINY[kind.head],
            "task": {"kind": name, "max_length": 32},
            "search_space": {"modules": {"lora": {"rank": [2], "targets": ["q", "v"]}}},
            "training": {"steps": 4, "batch_size": 4, "eval_every": 2, "eval_examples": 8},
        }
    )


@pytest.mark.parametrize("name", KINDS)
def test_declarations_are_consistent(name):
    kind = tasks.get(name)
    assert kind.name == name and kind.summary
    assert kind.metrics and set(kind.metrics.values()) <= {"maximize", "minimize"}
    assert kind.default_metric in kind.metrics
    assert kind.head in TINY
    assert set(kind.fields) <= set(TaskConfig.model_fields) - set(COMMON_TASK_FIELDS)


@pytest.mark.parametrize("name", KINDS)
def test_a_study_of_the_kind_trains_measures_and_describes(name):
    kind = tasks.get(name)
    config = kind_study(name)
    assert config.task.metric == kind.default_metric  # the kind's own default
    assert config.objectives[0].metric == kind.default_metric
    assert config.objectives[0].direction == kind.metrics[kind.default_metric]
    ctx = TrialContext.create(config)
    assert ctx.profile.has_head == (kind.head == "classifier")
    candidate = Candidate(
        modules=(
            ModuleConfig(
                method="lora",
                params={"rank": 2, "alpha": 4.0, "dropout": 0.0, "use_dora": False},
                layers=tuple(range(ctx.profile.num_layers)),
                targets=("q", "v"),
            ),
        )
    )
    result = run_trial(ctx, candidate)
    assert result.status is TrialStatus.COMPLETE, result.error
    assert kind.default_metric in result.metrics
    # Asked for every metric it declares, the kind measures each of them (those that need a
    # task field, such as a scoring function, when it is set).
    adapted = build_adapted(copy.deepcopy(ctx.base_model), ctx.profile, candidate, 4)
    everything = frozenset(kind.metrics)
    metrics = kind.evaluate(adapted, ctx.data["validation"], 4, 8, torch.device("cpu"), everything)
    assert set(kind.metrics) - set(kind.needs) <= set(metrics)
    assert set(kind.needs) <= set(kind.metrics) and set(kind.needs.values()) <= set(kind.fields)
    assert all(isinstance(v, float) for v in metrics.values())
    json.dumps(kind.describe(ctx.task))  # what an export's manifest records


def test_a_kind_may_read_task_fields_of_its_own_and_typos_are_refused():
    from autopeft.core.errors import ConfigError

    spec = {"name": "x", "search_space": {"modules": {"lora": {}}}}
    config = api.study_from_dict({**spec, "task": {"kind": "causal_lm"}})
    assert config.task.model_extra == {}
    with pytest.raises(ConfigError) as err:
        api.study_from_dict({**spec, "task": {"kind": "causal_lm", "max_lenght": 64}})
    assert "unknown field 'max_lenght' in task" in str(err.value)
    assert "did you mean 'max_length'" in str(err.value)
    # A kind that declares a field of its own gets it, without TaskConfig knowing it.
    kind = tasks.get("classification")
    type(kind).fields = (*kind.fields, "label_smoothing")
    try:
        got = api.study_from_dict({**spec, "task": {"label_smoothing": 0.1}})
        assert got.task.model_extra == {"label_smoothing": 0.1}
    finally:
        type(kind).fields = tuple(f for f in kind.fields if f != "label_smoothing")

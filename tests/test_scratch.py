"""Drafting a trial in memory: the sampler proposes what it would into a stored trial, and a
re-proposal of a known candidate costs one storage write."""

from __future__ import annotations

import pytest

from autopeft import api
from autopeft.search import blackbox, scratch
from autopeft.search.local import run_local
from autopeft.search.proposals import Proposer
from autopeft.search.study import Study
from tests.test_proposals import SPEC, arm

#: Forty-five configurations: a model-based sampler starts re-proposing within 20 trials.
SPACE = {
    "modules": {
        "lora": {"rank": [0, 2, 4, 8, 16]},
        "serial_adapter": {"size": [0, 8, 32]},
        "prefix": {"length": [0, 5, 10]},
    }
}


def study(root, sampler: str) -> Study:
    spec = {**SPEC, "search_space": SPACE, "sampler": {"name": sampler, "seed": 0}}
    return Study(api.study_from_dict({"name": "drafts", **spec}), root=root)


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_a_draft_proposes_what_a_stored_trial_would(tmp_path, sampler):
    drafted, stored = study(tmp_path / "a", sampler), study(tmp_path / "b", sampler)
    for each in (drafted, stored):  # the same seeded history in both
        run_local(each, 12, runner=blackbox.for_study(each), progress=False)
    before = len(drafted.optuna.get_trials(deepcopy=False))
    draft = scratch.draft(drafted.optuna, drafted.space)
    trial = stored.optuna.ask()
    candidate = stored.space.sample(trial)
    assert draft.candidate == candidate
    assert draft.trial.params == trial.params
    # What the sampler wrote to the trial while sampling (TPE's relative parameters, for its
    # constant liar) goes with the draft when it is stored.
    assert draft.trial.system_attrs == stored.optuna._storage.get_trial_system_attrs(
        trial._trial_id
    )
    assert len(drafted.optuna.get_trials(deepcopy=False)) == before  # the draft stored nothing


def test_a_re_proposal_is_one_write(tmp_path):
    most = study(tmp_path, "random")
    run_local(most, 44, runner=blackbox.for_study(most), progress=False)  # all but one known
    before = len(most.optuna.get_trials(deepcopy=False))
    writes = arm(most, 0)
    proposal = Proposer(most, 45).next()  # the one left, or EXHAUSTED after 100 re-proposals
    new = most.optuna.get_trials(deepcopy=False)[before:]
    reused = [t for t in new if t.user_attrs.get("reused")]
    assert reused and all(t.state.is_finished() and "result" in t.user_attrs for t in reused)
    to_train = [t.number for t in new if t not in reused]
    assert to_train == ([] if isinstance(proposal, str) else [proposal[0].number])
    assert writes[0] == len(new), (writes, len(reused))  # one write each, the new included


def test_a_whole_trial_is_stored_without_a_query_per_parameter(tmp_path):
    import optuna
    import sqlalchemy
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import create_trial

    from autopeft.search.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/s.db", shared=False, heartbeat=(5, 30))
    optuna_study = optuna.create_study(storage=storage)
    size = CategoricalDistribution([8, 32])
    rate = FloatDistribution(0.0, 1.0)
    trial = create_trial(
        params={"size": 8, "rate": 0.5}, distributions={"size": size, "rate": rate}, value=1.0
    )
    statements: list[str] = []
    sqlalchemy.event.listen(
        storage.engine, "before_cursor_execute", lambda *a: statements.append(a[2])
    )
    optuna_study.add_trial(trial)  # the first of each name: Optuna's own check
    first = sum("JOIN trials" in s and "trial_params" in s for s in statements)
    statements.clear()
    optuna_study.add_trial(trial)  # the distributions are known now
    assert first == 2 and not [s for s in statements if "JOIN trials" in s]
    clash = create_trial(params={"size": 0.5}, distributions={"size": rate}, value=1.0)
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        optuna_study.add_trial(clash)  # still refused: the check is kept


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_whole_trial_is_stored_as_optuna_stores_it_in_a_few_statements(
    tmp_path, request, backend
):
    import datetime
    import math

    import optuna
    import sqlalchemy
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    from autopeft.search.storage import open_storage

    params = {f"p{i}": i % 3 for i in range(12)} | {"rate": 0.25, "kind": "lora"}
    distributions = {f"p{i}": IntDistribution(0, 4) for i in range(12)} | {
        "rate": FloatDistribution(1e-5, 1.0, log=True),
        "kind": CategoricalDistribution(["lora", None, 3]),
    }
    start = datetime.datetime(2026, 1, 2, 3, 4, 5)
    templates = [
        create_trial(  # a finished copy: values (infinities too), attributes, curve
            params=params,
            distributions=distributions,
            values=[0.5, float("inf"), float("-inf")],
            user_attrs={"result": {"score": 0.5, "nested": [1, None]}, "reused": 3},
            system_attrs={"constraints": [0.0], "fixed": True},
            intermediate_values={1: 0.1, 2: float("nan"), 3: float("inf")},
        ),
        create_trial(  # a proposal to train: no values
            params=params, distributions=distributions, state=TrialState.RUNNING
        ),
        create_trial(state=TrialState.WAITING, params={}, distributions={}),
    ]
    templates[0].datetime_start = start
    templates[0].datetime_complete = start + datetime.timedelta(seconds=3)

    def stored(storage) -> optuna.Study:
        study = optuna.create_study(storage=storage, directions=["maximize"] * 3)
        for template in templates * 2:  # the second round: the distributions are known
            study._storage.create_new_trial(study._study_id, template_trial=template)
        return study

    url = f"sqlite:///{tmp_path}/s.db"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    ours = open_storage(url, shared=backend != "sqlite", heartbeat=(5, 30))
    statements: list[str] = []
    listen = sqlalchemy.event.listen
    listen(ours.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    our_study = stored(ours)
    mine = our_study.get_trials(deepcopy=False)
    theirs = stored(optuna.storages.RDBStorage(url)).get_trials(deepcopy=False)

    def same(a, b) -> bool:  # nan != nan
        return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))

    for a, b in zip(mine, theirs, strict=True):
        assert (a.number, a.state, a.params, a.distributions) == (
            b.number,
            b.state,
            b.params,
            b.distributions,
        )
        assert (a.values, a.user_attrs, a.system_attrs) == (b.values, b.user_attrs, b.system_attrs)
        assert a.intermediate_values.keys() == b.intermediate_values.keys()
        curve = a.intermediate_values
        assert all(same(curve[k], b.intermediate_values[k]) for k in curve)
        if a.state.is_finished():  # a running copy starts now in both
            assert (a.datetime_start, a.datetime_complete) == (start, b.datetime_complete)
    assert mine[0].intermediate_values[3] == math.inf and mine[0].values[2] == -math.inf
    statements.clear()
    ours.create_new_trial(our_study._study_id, template_trial=templates[0])
    # A trial with 14 parameters, 4 attributes, 3 values and 3 steps: a statement per table.
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 6 and len(statements) <= 10, statements

"""What the study's storage writes: a trial created whole, and a trial finished, each in one
transaction, equal to what Optuna's own writes store."""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from autopeft import api
from autopeft.search import blackbox
from autopeft.search.local import run_local
from autopeft.search.proposals import Proposer
from autopeft.search.storage import InterruptSafeStorage, open_storage
from autopeft.search.study import Study
from tests.test_proposals import SPEC, arm


def storage_url(backend: str, tmp_path, request) -> str:
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/s.db"


def test_a_whole_trial_is_stored_without_a_query_per_parameter(tmp_path):
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

    url = storage_url(backend, tmp_path, request)
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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "in-memory"])
def test_a_trial_is_finished_in_one_transaction_as_optunas_writes_finish_it(
    tmp_path, request, backend
):
    def storages() -> tuple[InterruptSafeStorage, optuna.storages.BaseStorage]:
        if backend == "in-memory":  # not an RDB storage: the writes one by one
            memory = optuna.storages.InMemoryStorage
            return InterruptSafeStorage(memory()), memory()
        url = storage_url(backend, tmp_path, request)
        ours = open_storage(url, shared=backend != "sqlite", heartbeat=(5, 30))
        return InterruptSafeStorage(optuna.storages.get_storage(ours)), optuna.storages.get_storage(
            url
        )

    ours, theirs = storages()
    outcomes = [
        (TrialState.COMPLETE, [0.5, math.inf]),
        (TrialState.COMPLETE, [0.25, 3.0]),
        (TrialState.PRUNED, None),
        (TrialState.FAIL, None),
    ]
    user = {"result": {"score": 0.5, "curve": [1, None]}, "status": "COMPLETE", "driver": 2}
    system = {"constraints": [1.0]}
    commits: list[int] = []
    engine = getattr(getattr(ours, "_backend", None), "engine", None)
    if engine is not None:
        sqlalchemy.event.listen(engine, "commit", lambda conn: commits.append(1))
    finished = []
    for storage in (ours, theirs):
        study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
        for state, values in outcomes:
            trial_id = storage.create_new_trial(study._study_id)
            storage.set_trial_user_attr(trial_id, "driver", 1)  # overwritten by the finish
            commits.clear()
            if storage is ours:
                ours.finish_trial(trial_id, user, system, state, values)
                assert len(commits) == (0 if engine is None else 1)
            else:
                for key, value in user.items():
                    storage.set_trial_user_attr(trial_id, key, value)
                for key, value in system.items():
                    storage.set_trial_system_attr(trial_id, key, value)
                storage.set_trial_state_values(trial_id, state, values)
        finished.append(storage.get_all_trials(study._study_id))
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            ours.finish_trial(finished[0][0]._trial_id, user, {}, TrialState.FAIL, None)
    for a, b in zip(*finished, strict=True):
        assert (a.state, a.values, a.user_attrs, a.system_attrs) == (
            b.state,
            b.values,
            b.user_attrs,
            b.system_attrs,
        )
        assert a.datetime_complete is not None and a.datetime_complete >= a.datetime_start


def test_a_tell_is_one_write_and_the_sampler_sees_the_result(tmp_path, monkeypatch):
    spec = {**SPEC, "sampler": {"name": "tpe", "seed": 0}}
    study = Study(api.study_from_dict({"name": "tells", **spec}), root=tmp_path)
    run_local(study, 3, runner=blackbox.for_study(study, fail_every=2), progress=False)
    seen = []
    after_trial = study.optuna.sampler.after_trial

    def after(optuna_study, frozen, state, values):
        seen.append((frozen.user_attrs.get("status"), state, values))
        return after_trial(optuna_study, frozen, state, values)

    monkeypatch.setattr(study.optuna.sampler, "after_trial", after)
    proposer, runner = Proposer(study, 7), blackbox.for_study(study, fail_every=2)
    for _ in range(4):
        proposal = proposer.next()
        assert not isinstance(proposal, str), proposal
        trial, candidate = proposal
        result = runner.run(candidate, None, {10})
        writes = arm(study, 0)
        proposer.record(trial.number, result)
        assert writes[0] == 1  # the result, its attributes and the state at once
        stored = study.optuna._storage.get_trial(trial._trial_id)
        assert stored.user_attrs["status"] == result.status.value == seen[-1][0]
        assert (stored.state, stored.values) == seen[-1][1:]
        expected_state = TrialState.COMPLETE if stored.values else TrialState.FAIL
        assert stored.state == expected_state
    assert {status for status, *_ in seen} >= {"COMPLETE", "FAILED"}
    before = len(seen)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        study.tell(trial.number, result)  # told twice: refused before the sampler sees it
    assert len(seen) == before

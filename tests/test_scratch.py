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

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


def study(root, sampler: str, storage: str | None = None, name: str = "drafts") -> Study:
    spec = {**SPEC, "search_space": SPACE, "sampler": {"name": sampler, "seed": 0}}
    return Study(api.study_from_dict({"name": name, **spec}), root=root, storage=storage)


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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_re_proposals_read_the_storage_once_per_proposal(tmp_path, monkeypatch, request, backend):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    converged = study(tmp_path, "tpe", url, name=f"rereads-{tmp_path.name}")
    run_local(converged, 30, runner=blackbox.for_study(converged), progress=False)
    reads, asks = [0], [0]
    synced, draft = Study.synced, scratch.draft

    def counted_read(self):
        reads[0] += 1
        return synced(self)

    def counted_draft(*args):
        asks[0] += 1
        return draft(*args)

    monkeypatch.setattr(Study, "synced", counted_read)
    monkeypatch.setattr(scratch, "draft", counted_draft)
    proposer, runner = Proposer(converged, 40), blackbox.for_study(converged)
    reads[0] = 0
    for _ in range(10):
        proposal = proposer.next()
        assert not isinstance(proposal, str), proposal
        proposer.record(proposal[0].number, runner.run(proposal[1], None, {10}))
    assert asks[0] > 15  # TPE re-proposed known candidates: several asks per trial
    # The claim's read, once per proposal; with several drivers (PostgreSQL) one more,
    # under the lock, before a new trial takes its slot.
    assert reads[0] == (10 if backend == "sqlite" else 20)
    assert converged.n_done() == 40

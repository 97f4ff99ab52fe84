"""Who trains what: no candidate twice, exact n_trials, driver streams, kills at any write."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from autopeft import api
from autopeft.core.candidate import Candidate
from autopeft.search import blackbox
from autopeft.search.local import run_local
from autopeft.search.proposals import DONE, WAIT, Proposer
from autopeft.search.study import Study
from tests.helpers import check_states, counted_trials

#: Six configurations: small enough that samplers re-propose (reuse and waiting happen).
SPEC = {
    "model": "minilm",
    "search_space": {"modules": {"lora": {"rank": [2, 4, 8]}, "serial_adapter": {"size": [0, 8]}}},
    "training": {"steps": 30},
    "sampler": {"name": "random"},
    "halving": {"enabled": False},
}


def config(name: str = "claims"):
    return api.study_from_dict({"name": name, **SPEC})


def train(study: Study, candidate: Candidate):
    return blackbox.for_study(study).run(candidate, None, {study.config.training.steps})


def test_two_drivers_get_numbers_and_their_own_random_streams(tmp_path):
    first, second = Study(config(), root=tmp_path), Study(config(), root=tmp_path)
    assert (first.driver, second.driver) == (0, 1)
    assert first.sampler_seed == 0 and second.sampler_seed not in (None, 0)
    a = [Proposer(first, 99).next()[1].key() for _ in range(3)]  # type: ignore[index]
    b = [Proposer(second, 99).next()[1].key() for _ in range(3)]  # type: ignore[index]
    assert a != b  # the same file and seed, yet different candidates
    assert {t.user_attrs["driver"] for t in first.optuna.trials} == {0, 1}


def test_a_running_candidate_is_waited_for_not_trained_again(tmp_path):
    a, b = Study(config(), root=tmp_path), Study(config(), root=tmp_path)
    pa, pb = Proposer(a, 10), Proposer(b, 10)
    trial, candidate = pa.next()  # type: ignore[misc]
    b.optuna.enqueue_trial(trial.params)  # b's sampler now proposes the same candidate
    other = pb.next()
    assert isinstance(other, tuple) and other[1].key() != candidate.key()
    waiting = [t for t in b.optuna.get_trials() if "waits_for" in t.user_attrs]
    assert len(waiting) == 1 and waiting[0].user_attrs["waits_for"] == trial.number
    assert waiting[0].state == TrialState.RUNNING and pb.waiting == {waiting[0].number: 0}
    assert pb.resolve() == []  # the original is still training

    pa.record(trial.number, train(a, candidate))
    assert pb.resolve() == [waiting[0].number]
    copy, original = (b.optuna.trials[n] for n in (waiting[0].number, trial.number))
    assert copy.state == TrialState.COMPLETE and copy.user_attrs["reused"] is True
    assert copy.values == original.values and "reused" not in original.user_attrs
    assert b.n_done() == 1  # the copy trained nothing and does not count


def test_n_trials_is_exact_across_drivers(tmp_path):
    a, b = Study(config(), root=tmp_path), Study(config(), root=tmp_path)
    pa, pb = Proposer(a, 2), Proposer(b, 2)
    first, second = pa.next(), pb.next()
    assert isinstance(first, tuple) and isinstance(second, tuple)
    assert pa.next() == WAIT and pb.next() == WAIT  # both slots are taken by running trials
    pa.record(first[0].number, train(a, first[1]))
    assert pa.next() == WAIT  # one finished, one still running elsewhere
    pb.record(second[0].number, train(b, second[1]))
    assert pa.next() == DONE and pb.next() == DONE
    assert len(counted_trials(a.optuna.get_trials())) == 2


def test_ctrl_c_marks_the_trials_interrupted_and_queues_them_once(tmp_path):
    study = Study(config(), root=tmp_path)
    proposer = Proposer(study, 5)
    trial, _ = proposer.next()  # type: ignore[misc]
    assert proposer.interrupt() == [trial.number]
    stopped = study.optuna.trials[trial.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"] is True
    assert study.recover_interrupted() == []  # nothing RUNNING is left to recover
    retry, _ = proposer.next()  # type: ignore[misc]
    assert retry.params == trial.params and retry.user_attrs["retry_of"] == trial.number


def test_a_ctrl_c_inside_the_trial_creating_write_leaves_nothing_running(tmp_path, monkeypatch):
    study = Study(config(), root=tmp_path)
    proposer = Proposer(study, 5)
    storage = study.optuna._storage
    create = storage.create_new_trial

    def created_then_interrupted(*args, **kwargs):
        create(*args, **kwargs)  # committed: the trial is RUNNING, its id never returned
        monkeypatch.setattr(storage, "create_new_trial", create)
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "create_new_trial", created_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        proposer.next()
    # Left RUNNING by a write whose trial id the proposer never got.
    assert [t.state for t in study.optuna.get_trials(deepcopy=False)] == [TrialState.RUNNING]
    proposer.interrupt()
    trials = study.optuna.get_trials(deepcopy=False)
    # Stored with its candidate in that one write: failed as interrupted and queued again.
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING], trials
    assert trials[0].user_attrs["interrupted"] is True
    assert trials[1].user_attrs["retry_of"] == 0
    assert trials[1].system_attrs["fixed_params"] == trials[0].params


class Killed(BaseException):
    """A SIGKILL at a storage write: nothing after it runs (not even except clauses)."""


WRITES = (
    "create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_study_user_attr",
    "finish_trial",
)


def arm(study: Study, at: int) -> list[int]:
    """Make the ``at``-th storage write of ``study`` raise :class:`Killed` (before it runs)."""
    storage, count = study.optuna._storage, [0]
    for name in WRITES:
        real = getattr(storage, name)

        def write(*args, _real=real, **kwargs):
            count[0] += 1
            if count[0] == at:
                raise Killed
            return _real(*args, **kwargs)

        setattr(storage, name, write)
    return count


def snapshot(study: Study) -> dict[int, tuple]:
    return {
        t.number: (t.state, t.user_attrs.get("status"), t.values)
        for t in study.optuna.get_trials()
        if t.state.is_finished()
    }


N = 4


def run_killed(root, at: int) -> bool:
    """Run the study, killed at write ``at``; True if the kill happened."""
    study = Study(config(), root=root)
    arm(study, at)
    try:
        run_local(study, N, runner=blackbox.for_study(study), progress=False)
    except Killed:
        return True
    return False


def test_total_writes_of_a_clean_run(tmp_path):
    study = Study(config(), root=tmp_path)
    count = arm(study, 0)
    run_local(study, N, runner=blackbox.for_study(study), progress=False)
    # The sweep below must cover every write of a run, twice over (a run that reuses more
    # trials writes more; each re-proposal is one write, drafted in memory, and each trial
    # trained is two: its proposal and its result with its state).
    assert 2 * N <= count[0] <= KILL_POINTS // 2, count[0]


KILL_POINTS = 25


@pytest.mark.parametrize("at", range(1, KILL_POINTS))
def test_a_kill_at_any_write_leaves_a_consistent_resumable_study(tmp_path, at):
    if not run_killed(tmp_path, at):
        return  # past the end of the run: test_total_writes_of_a_clean_run bounds this
    before = snapshot(Study(config(), root=tmp_path, read_only=True))
    # A second kill during the recovery and resume, then a run to the end.
    run_killed(tmp_path, 1 + at % 7)
    study = Study(config(), root=tmp_path)
    run_local(study, N, runner=blackbox.for_study(study), progress=False)
    trials = study.optuna.get_trials()
    after = snapshot(study)
    assert {n: after.get(n) for n in before} == before  # nothing finished was lost
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    check_states(study)  # Optuna and autopeft agree on every trial
    assert sum(t.state.is_finished() for t in counted_trials(trials)) == N
    trained = [
        Candidate.model_validate(t.user_attrs["candidate"]).key()
        for t in trials
        if t.user_attrs.get("status") in ("COMPLETE", "PRUNED") and not t.user_attrs.get("reused")
    ]
    assert len(trained) == len(set(trained)), "a candidate was trained twice"
    for t in trials:
        if t.user_attrs.get("interrupted") and "candidate" in t.user_attrs:
            retries = [r for r in trials if r.user_attrs.get("retry_of") == t.number]
            # Queued with exactly its parameters (a retry killed while sampled holds only
            # some of them as params, and is retried in turn).
            assert len(retries) == 1, [r.number for r in retries]
            assert retries[0].system_attrs["fixed_params"] == t.params


@pytest.mark.parametrize("at", range(1, 4))  # the recovery's three writes
def test_a_kill_inside_the_recovery_still_queues_each_trial_once(tmp_path, at):
    left, _ = Proposer(Study(config(), root=tmp_path), N).next()  # type: ignore[misc]
    dying = Study(config(), root=tmp_path)  # a driver killed while recovering it
    arm(dying, at)
    with pytest.raises(Killed):
        dying.recover_interrupted()
    study = Study(config(), root=tmp_path)
    study.recover_interrupted()
    trials = study.optuna.get_trials()
    assert trials[left.number].state == TrialState.FAIL
    assert trials[left.number].user_attrs["interrupted"] is True
    retries = [t for t in trials if t.user_attrs.get("retry_of") == left.number]
    assert len(retries) == 1 and retries[0].state == TrialState.WAITING


@pytest.mark.parametrize("where", ["sample", "reused store"])
def test_ctrl_c_while_a_trial_is_proposed_leaves_nothing_behind(tmp_path, where):
    study = Study(config(), root=tmp_path)
    sample, calls = study.space.sample, [0]

    def interrupted_sample(trial):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return sample(trial)

    def interrupted_store(*args):
        raise KeyboardInterrupt

    if where == "sample":
        study.space.sample = interrupted_sample  # type: ignore[method-assign]
    else:  # six configurations, random proposals: a repeat comes within ten trials
        study.store_reused = interrupted_store  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        run_local(study, 10, runner=blackbox.for_study(study), progress=False)
    trials = study.optuna.get_trials()
    # Sampled in memory, stored in one write afterwards: the proposal left no trial behind.
    assert trials and all(t.state.is_finished() for t in trials)
    assert all("result" in t.user_attrs for t in trials)
    assert not [t for t in trials if t.user_attrs.get("interrupted")]
    study = Study(config(), root=tmp_path)
    run_local(study, 6, runner=blackbox.for_study(study), progress=False)
    assert study.n_done() == 6

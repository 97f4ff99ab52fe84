"""bench/faults.py: SIGKILLs, Ctrl-C and concurrent drivers against `autopeft run` (fast cases).

The checkers (bench/fault_checks.py) are tested on hand-made trials first (each must be able
to see a fault); the scenarios then run the real CLI on a 4-trial study and must meet every goal.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from bench import fault_checks as checks
from bench import faults

N = 4  # trials per study: enough for a kill to land in every phase, short enough for CI


def candidate(rank: int) -> dict:
    lora = {"method": "lora", "params": {"rank": rank}, "layers": [0, 1], "targets": ["q", "v"]}
    return {"modules": [lora]}


def trial(number: int, state: TrialState, status: str | None = None, **attrs) -> FrozenTrial:
    now = dt.datetime.now()
    user_attrs = dict(attrs, **({"status": status} if status else {}))
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=[0.9, 100.0] if state == TrialState.COMPLETE else None,
        datetime_start=now,
        datetime_complete=None if state in (TrialState.RUNNING, TrialState.WAITING) else now,
        params={"lora.rank": attrs["candidate"]["modules"][0]["params"]["rank"]}
        if "candidate" in attrs
        else {},
        distributions={"lora.rank": IntDistribution(2, 16)} if "candidate" in attrs else {},
        user_attrs=user_attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_lost_sees_a_finished_trial_missing_or_changed():
    before = checks.snapshot(
        [trial(0, TrialState.COMPLETE, "COMPLETE"), trial(1, TrialState.PRUNED, "PRUNED")]
    )
    assert checks.lost(before, before) == set()
    after = checks.snapshot([trial(0, TrialState.FAIL, "FAILED")])
    assert checks.lost(before, after) == {0, 1}  # 0 changed, 1 missing
    # A trial RUNNING at the kill may finish later: that is no loss.
    assert checks.snapshot([trial(2, TrialState.RUNNING)]) == {}


def test_trained_twice_counts_repeated_candidates_but_not_reused_ones():
    a, b = candidate(4), candidate(8)
    trials = [
        trial(0, TrialState.COMPLETE, "COMPLETE", candidate=a),
        trial(1, TrialState.COMPLETE, "COMPLETE", candidate=b),
        trial(2, TrialState.COMPLETE, "COMPLETE", candidate=a, reused=True),
    ]
    assert checks.trained_twice(trials) == 0
    trials.append(trial(3, TrialState.PRUNED, "PRUNED", candidate=a))
    assert checks.trained_twice(trials) == 1
    assert checks.counted(trials) == 3  # the reused one does not count


def test_disagreements_and_requeue_errors_are_seen():
    ok = [
        trial(0, TrialState.COMPLETE, "COMPLETE"),
        trial(1, TrialState.COMPLETE, "INFEASIBLE"),
        trial(2, TrialState.FAIL, "FAILED"),
        trial(3, TrialState.WAITING),  # not finished: no status yet
    ]
    assert checks.disagreements(ok) == []
    # No status (no result): only an interrupted trial, or a waiting copy of one, is fine.
    ok += [trial(10, TrialState.FAIL, interrupted=True), trial(11, TrialState.FAIL, reused=True)]
    assert checks.disagreements(ok) == []
    bad = [
        trial(4, TrialState.COMPLETE, "PRUNED"),
        trial(5, TrialState.FAIL),
        trial(12, TrialState.COMPLETE, interrupted=True),
    ]
    assert checks.disagreements(ok + bad) == [4, 5, 12]
    stopped = trial(6, TrialState.FAIL, "FAILED", interrupted=True, candidate=candidate(2))
    retry = trial(7, TrialState.WAITING, retry_of=6)
    assert checks.requeue_errors([stopped]) == [6]  # not re-queued
    assert checks.requeue_errors([stopped, retry]) == []
    assert checks.requeue_errors([stopped, retry, trial(8, TrialState.WAITING, retry_of=6)]) == [6]
    # Killed before its candidate was sampled: nothing to re-run.
    assert checks.requeue_errors([trial(9, TrialState.FAIL, "FAILED", interrupted=True)]) == []


def test_an_outcome_names_every_missed_goal():
    out = checks.Outcome("kill-local", 4, kills=3, kills_survived=2, studies=1, lost=1)
    out.counted, out.failures = [5], ["final run exited 1"]
    missed = out.missed()
    assert len(missed) == 4 and all(m.startswith("kill-local: ") for m in missed)
    assert checks.Outcome("x", 4, counted=[4]).missed() == []


def check(out: checks.Outcome, kills: int) -> None:
    assert out.kills == kills and out.kills_survived == kills, out
    assert out.studies >= 1 and not out.failures, out.failures
    assert out.counted and all(c == N for c in out.counted), out.counted
    assert out.lost == 0 and out.trained_twice == 0 and out.running_left == 0
    assert out.disagreements == 0, out.details.get("disagreeing")
    assert out.requeue_errors == 0
    assert out.missed() == []


@pytest.mark.slow
def test_three_sigkills_of_the_local_driver(tmp_path):
    out = faults.run_kills("local", 3, N, random.Random(0), tmp_path)
    check(out, 3)
    assert sum(out.phases.values()) == 3


@pytest.mark.slow
def test_ctrl_c_of_the_local_driver(tmp_path):
    out = faults.run_ctrl_c("local", N, tmp_path)
    assert out.details["exit_code"] == 130, out.details
    assert out.details["stderr_lines"] == [faults.INTERRUPTED_LINE]
    assert out.details["procs_left_5s"] == 0
    assert out.details["interrupted_at_ctrl_c"], "the trial training at the Ctrl-C"
    check(out, 1)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_two_sigkills_of_the_ray_driver_and_its_process_group(tmp_path):
    out = faults.run_kills("ray", 2, N, random.Random(1), tmp_path)
    check(out, 2)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_ctrl_c_of_the_ray_driver(tmp_path):
    out = faults.run_ctrl_c("ray", N, tmp_path)
    assert out.details["exit_code"] == 130, out.details
    assert out.details["stderr_lines"] == [faults.INTERRUPTED_LINE]
    assert out.details["procs_left_5s"] == 0  # Ray shut down with its driver
    assert out.details["interrupted_at_ctrl_c"]
    check(out, 1)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_two_drivers_on_one_postgres_study(postgres_url, tmp_path):
    out = faults.run_drivers(2, postgres_url, N, tmp_path)
    check(out, 0)
    assert out.details["exit_codes"] == [0, 0]
    assert out.details["first_proposals_differ"]
    per_driver = out.details["distinct_trained_per_driver"]
    assert sum(per_driver.values()) == N  # n_trials exact, nothing trained twice

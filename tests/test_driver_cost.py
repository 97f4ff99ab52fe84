"""The driver's bookkeeping per trial does not grow with the study (issue 35): counted, not timed.

A search of 10,000 trials must stay bound by its trials, not by re-reading its own history:
a finished trial is parsed once, no read deep-copies the trials, and the front, hypervolume
and counts the progress display shows are kept up to date rather than recomputed from every
trial. These tests count the work (result parses, storage reads, deep copies) per trial at
200 and at 400 trials, so an O(n) per-trial read cannot come back unnoticed;
``bench/driver_cost.py`` measures the times.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import api
from autopeft.core import pareto
from autopeft.core.pareto import hypervolume, known, pareto_front
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search import blackbox
from autopeft.search.local import run_local
from autopeft.search.proposals import Proposer
from autopeft.search.study import Study

#: Four module types placed per layer: random search almost never proposes a candidate twice.
SPACE = {
    "modules": {
        "lora": {"rank": [0, 2, 4, 8, 16, 32], "targets": {"choice": [["q", "v"], ["attn"]]}},
        "serial_adapter": {"size": [0, 8, 32, 64]},
        "parallel_adapter": {"size": [0, 8, 32, 64]},
        "prefix": {"length": [0, 5, 10, 20]},
    },
    "layers": "search",
    "budget": {"max_trainable_params": "1%"},  # some candidates are INFEASIBLE
}


def config(name: str = "cost", sampler: str = "random"):
    return api.study_from_dict(
        {
            "name": name,
            "model": "minilm",
            "search_space": SPACE,
            "training": {"steps": 10},
            "sampler": {"name": sampler, "seed": 0},
            "halving": {"enabled": False},
        }
    )


def grow(study: Study, n: int) -> None:
    """Add finished copies of the study's trials until it holds ``n`` (no sampler, no run).

    Filling through the driver would take minutes; what the window measures afterwards is
    the same whatever the earlier trials hold.
    """
    trials = study.optuna.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished()]
    copies = [
        optuna.trial.create_trial(
            state=t.state,
            values=t.values,
            params=t.params,
            distributions=t.distributions,
            user_attrs=t.user_attrs,
            system_attrs=t.system_attrs,
        )
        for t in itertools.islice(itertools.cycle(finished), n - len(trials))
    ]
    study.optuna.add_trials(copies)


@contextmanager
def counting(study: Study, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count result parses, full reads, deep-copied trials and Pareto dominance checks."""
    counts: Counter[str] = Counter()
    parse, dominates = TrialResult.model_validate, pareto.dominates
    storage = study.optuna._storage
    read = storage.get_all_trials

    def parsed(*args, **kwargs):
        counts["parses"] += 1
        return parse(*args, **kwargs)

    def dominance(a, b):
        counts["dominance"] += 1
        return dominates(a, b)

    def read_all(study_id, deepcopy=True, states=None):
        trials = read(study_id, deepcopy=deepcopy, states=states)
        counts["reads"] += 1
        counts["deep_copied"] += len(trials) if deepcopy else 0
        return trials

    with monkeypatch.context() as patch:
        patch.setattr(TrialResult, "model_validate", parsed)
        patch.setattr(storage, "get_all_trials", read_all)
        # What pareto_front and the like use: a front sorted afresh from every trial.
        patch.setattr(pareto, "dominates", dominance)
        yield counts


def window(study: Study, monkeypatch: pytest.MonkeyPatch, k: int = 20) -> dict[str, float]:
    """Work per trial over ``k`` more trials of a local search with the progress display."""
    start = study.n_done()  # takes in the trials added so far: the window counts new work
    with counting(study, monkeypatch) as counts:
        run_local(study, start + k, runner=blackbox.for_study(study), progress=True)
    assert study.n_done() == start + k
    return {key: value / k for key, value in counts.items()}


def test_the_work_per_trial_does_not_grow_with_the_study(tmp_path, monkeypatch):
    # In memory: the test counts work, and a file's fsync per write would only slow it.
    study = Study(config(), root=tmp_path, storage="sqlite:///:memory:")
    run_local(study, 30, runner=blackbox.for_study(study), progress=False)
    grow(study, 200)
    small = window(study, monkeypatch)
    grow(study, 400)
    large = window(study, monkeypatch)
    assert len(study.optuna.get_trials(deepcopy=False)) > 400
    for at in (small, large):
        # A trial the driver tells is taken in as told; one it reads is parsed once.
        assert at.get("parses", 0) <= 1, at
        assert at.get("deep_copied", 0) == 0, at
    # Reads of the (cached) trial list per trial stay what they were at half the size, and
    # no Pareto front is sorted from every trial (the ledger keeps it trial by trial).
    assert large["reads"] <= small["reads"] + 1, (small, large)
    # One driver (SQLite): one read per proposal (the claim's), its own tells keep the rest.
    assert large["reads"] <= 1.5, large
    assert large.get("dominance", 0) <= 1.5 * small.get("dominance", 0) + 10, (small, large)


def test_the_front_and_hypervolume_kept_trial_by_trial_equal_a_fresh_computation(tmp_path):
    study = Study(config("fresh"), root=tmp_path, storage="sqlite:///:memory:")
    run_local(study, 60, runner=blackbox.for_study(study, fail_every=7), progress=True)
    trials = study.optuna.get_trials(deepcopy=False)
    statuses = {t.user_attrs.get("status") for t in trials}
    assert {"COMPLETE", "INFEASIBLE", "FAILED"} <= statuses  # every path was taken
    # What the old code computed from every trial on each call.
    results = [
        (t.number, TrialResult.model_validate(t.user_attrs["result"]))
        for t in trials
        if t.state.is_finished() and "result" in t.user_attrs
    ]
    assert study.results() == results
    done = [
        (n, r, v)
        for n, r in results
        if r.status is TrialStatus.COMPLETE
        and not trials[n].user_attrs.get("reused")
        and (v := known(study.values_of(r))) is not None
    ]
    front = [done[i][:2] for i in pareto_front([v for *_, v in done], study.directions)]
    assert [tuple(p) for p in study.front_points()] == front
    reference = study.reference_point()
    largest = max(r.peak_memory_mb or 0.0 for _, r in results if r.status is TrialStatus.COMPLETE)
    assert reference[-1] == pytest.approx(1.1 * largest)
    points = [done[i][2] for i in pareto_front([v for *_, v in done], study.directions)]
    assert study.hypervolume() == hypervolume(points, reference, study.directions) > 0


def test_a_second_driver_sees_trials_finished_and_running_elsewhere(tmp_path):
    a, b = Study(config("shared"), root=tmp_path), Study(config("shared"), root=tmp_path)
    assert b.n_done() == 0 and b.front_points() == []
    run_local(a, 4, runner=blackbox.for_study(a), progress=False)
    assert b.n_done() == 4 and b.front_points() == a.front_points()  # read since, not stale
    proposer = Proposer(a, 10)
    trial, candidate = proposer.next()  # type: ignore[misc]
    ledger = b.synced()
    assert trial.number in {t.number for t in ledger.unfinished}
    assert trial.number not in ledger.records and candidate.key() not in ledger.known
    proposer.record(trial.number, blackbox.for_study(a).run(candidate, None, {10}))
    ledger = b.synced()  # the running trial finished: now taken in, exactly once
    assert b.n_done() == 5 and ledger.records[trial.number].candidate.key() == candidate.key()
    assert candidate.key() in ledger.known and ledger.parsed == len(ledger.records)
    assert a.optuna.trials[trial.number].state == TrialState.COMPLETE

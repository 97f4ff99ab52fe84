"""The contract every registered sampler passes, modelled on Optuna's ``pytest_samplers.py``.

Each check runs a tiny study of the synthetic landscape (:mod:`autopeft.search.blackbox`: no
training) through the study's own ask/tell path, so the sampler sees what a real study stores:
an infeasible trial (over the parameter budget, a violated ``budget`` constraint), a failed
one, a pruned one with its rung result, trials still running while it proposes, and trials
stored by an earlier run. Every sampler must propose only values of the space, propose the
same under the same seed, handle two and three objectives, and propose into a trial drafted
in memory (as the driver samples new trials) what it proposes into a stored one.

The checks are parametrised over :func:`autopeft.search.samplers.registry` when this module is
imported, so a sampler registered before (a file in ``autopeft/search/samplers/``, or a
third-party one through the ``autopeft.samplers`` entry-point group) is checked with no other
edit. ``tests/test_sampler_contract.py`` runs it in the suite; a plugin's authors run it with
``pytest --pyargs autopeft.testing.sampler_contract``.

Samplers that fit a model per proposal (``fit_seconds`` > 0) get two model-based proposals
per check; those whose fit takes 5 s or more (the SAAS fit of ``autopeft``) run only
without ``-m "not slow"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from autopeft import methods, tasks
from autopeft.core.candidate import Candidate
from autopeft.core.config import parse_study
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search import blackbox, samplers, scratch
from autopeft.search.study import Study

#: Seconds of one model fit from which a sampler's checks are marked slow.
SLOW_FIT_S = 5.0

#: Every registered sampler, read once (register a new one before importing this module);
#: a sampler whose model fit takes seconds is marked slow.
SAMPLERS = [
    pytest.param(name, marks=[pytest.mark.slow] if spec.fit_seconds >= SLOW_FIT_S else [])
    for name, spec in sorted(samplers.registry().items())
]
#: The objectives of the two- and three-objective studies (a measured one and exact ones).
OBJECTIVES = {
    2: "accuracy, -trainable_params",
    3: "accuracy, -trainable_params, -peak_memory",
}
#: Random trials before the model: few, so the model-based proposals come soon.
STARTUP = 3
SEED = 7
#: Training steps of a synthetic trial; a pruned trial stops at half of them.
STEPS = 20
#: 0.5% of MiniLM: some candidates of the space are over it, so infeasible trials occur.
SPACE = {
    "modules": {
        "lora": {"rank": [0, 2, 4, 8, 16]},
        "serial_adapter": {"size": [0, 8, 32, 128]},
    },
    "layers": "search",
    "budget": {"max_trainable_params": "0.5%"},
}


def contract_config(name: str, sampler: str, objectives: int, seed: int | None = SEED):
    """The study of one check, validated with the sampler registry (a plugin's name too)."""
    raw = {
        "name": name,
        "model": "minilm",
        "search_space": SPACE,
        "objectives": OBJECTIVES[objectives],
        "training": {"steps": STEPS},
        "sampler": {"name": sampler, "n_startup_trials": STARTUP, "seed": seed},
        "halving": {"enabled": False},
    }
    return parse_study(
        raw, methods.registry(), kinds=tasks.registry(), samplers=samplers.registry()
    )


def open_study(
    root: Path, sampler: str, objectives: int = 3
) -> tuple[Study, blackbox.BlackboxRunner]:
    """Open (or resume) the check's study in ``root`` with the blackbox as its executor."""
    study = Study(contract_config(f"contract-{sampler}", sampler, objectives), root=root)
    runner = blackbox.for_study(study)
    study.oracle.predict = runner.budget  # what the local executor does
    return study, runner


def run(
    study: Study, runner: blackbox.BlackboxRunner, trial, candidate: Candidate, how: str
) -> None:
    """Train ``candidate`` on the blackbox and tell it: ``ok``, ``fail`` or ``prune``."""
    if how == "prune":  # stopped at half its training: a rung result the BO samplers fit
        result = runner.run(candidate, lambda step, metrics: False, {STEPS // 2})
    else:
        result = runner.run(candidate, None, set())
    if how == "fail":
        result = result.model_copy(update={"status": TrialStatus.FAILED, "error": "injected"})
    study.tell(trial, result)


def over_budget(study: Study) -> dict[str, int]:
    """The largest candidate of :data:`SPACE`: every block, the largest sizes."""
    layers = {f"placement.layer_{i}": 1 for i in range(study.profile.num_layers)}
    return {**layers, "lora.rank": 16, "serial_adapter.size": 128}


#: The start-up trials: infeasible (the first, enqueued), failed, pruned, then two plain ones.
START_UP = ("ok", "fail", "prune", "ok", "ok")


def start_up(study: Study, runner: blackbox.BlackboxRunner) -> None:
    """The :data:`START_UP` trials (the sampler proposes all but the first)."""
    study.optuna.enqueue_trial(over_budget(study))
    for how in START_UP:
        trial, candidate = study.ask()
        run(study, runner, trial, candidate, how)


def model_phase(study: Study, runner: blackbox.BlackboxRunner, proposals: int) -> None:
    """Model-based proposals, the first two asked while the one before is still running."""
    first = study.ask()
    second = study.ask()  # the first is pending (RUNNING) while this one is proposed
    run(study, runner, *second, "ok")  # told out of order, as parallel workers do
    run(study, runner, *first, "ok")
    for _ in range(proposals - 2):
        run(study, runner, *study.ask(), "ok")


def proposals(name: str) -> int:
    """Model-based proposals of one check: few for a sampler that fits a model each time."""
    return 2 if samplers.get(name).fit_seconds > 0 else 6


def check_space(trials: list[FrozenTrial]) -> None:
    """Every trial has every parameter of the space, each value inside its distribution."""
    assert trials, "no trial"
    space = trials[0].distributions
    assert {"lora.rank", "serial_adapter.size", "placement.layer_0"} <= set(space)
    for t in trials:
        assert t.distributions == space, f"trial {t.number}: another space"
        for param, value in t.params.items():
            dist = space[param]
            assert dist._contains(dist.to_internal_repr(value)), (
                f"trial {t.number}: {param}={value!r} is outside {dist}"
            )


def check_candidates(study: Study) -> None:
    """The stored candidate of each trial is what its parameters decode to."""
    for t in study.optuna.trials:
        stored = Candidate.model_validate(t.user_attrs["candidate"])
        assert study.oracle.candidate(t.params).key() == stored.key(), f"trial {t.number}"


def statuses(study: Study) -> set[TrialStatus]:
    """The statuses of the study's told trials."""
    return {TrialResult.model_validate(t.user_attrs["result"]).status for t in study.optuna.trials}


@pytest.mark.parametrize("name", SAMPLERS)
def test_proposes_inside_the_space_among_every_kind_of_trial(name, tmp_path):
    """Three objectives; infeasible, failed, pruned and pending trials: values of the space."""
    study, runner = open_study(tmp_path, name, objectives=3)
    start_up(study, runner)
    model_phase(study, runner, proposals(name))
    trials = study.optuna.trials
    assert len(trials) == len(START_UP) + proposals(name)
    assert all(t.state.is_finished() for t in trials)
    check_space(trials)
    check_candidates(study)
    assert {
        TrialStatus.INFEASIBLE,
        TrialStatus.FAILED,
        TrialStatus.PRUNED,
        TrialStatus.COMPLETE,
    } <= statuses(study)
    first = [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]  # infeasible, failed, pruned
    assert [t.state for t in trials[:3]] == first
    if samplers.get(name).pool:  # a pool sampler proposes only unseen candidates
        keys = [study.oracle.candidate(t.params).key() for t in trials[len(START_UP) :]]
        earlier = {study.oracle.candidate(t.params).key() for t in trials[: len(START_UP)]}
        assert len(set(keys)) == len(keys) and not set(keys) & earlier


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_proposals_with_two_objectives(name, tmp_path):
    """Two runs of one seeded two-objective study propose the same, trial by trial."""
    runs = []
    for folder in ("a", "b"):
        study, runner = open_study(tmp_path / folder, name, objectives=2)
        start_up(study, runner)
        model_phase(study, runner, proposals(name))
        check_space(study.optuna.trials)
        runs.append([(t.state, t.params) for t in study.optuna.trials])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", SAMPLERS)
def test_resumes_from_stored_trials(name, tmp_path):
    """A sampler built afresh on a stored study (one trial interrupted) carries on."""
    study, runner = open_study(tmp_path, name)
    start_up(study, runner)
    stored = [(t.number, t.params) for t in study.optuna.trials]
    # The run stops with a trial training; a new process builds the sampler afresh, which
    # reads the stored trials (its start-up is over). As the local executor does on resume,
    # the interrupted trial is failed and its parameters queued again.
    left_running, _ = study.ask()
    resumed, runner = open_study(tmp_path, name)
    assert resumed.recover_interrupted() == [left_running.number]
    model_phase(resumed, runner, proposals(name))
    trials = resumed.optuna.trials
    assert [(t.number, t.params) for t in trials[: len(stored)]] == stored
    assert trials[left_running.number].state is TrialState.FAIL
    assert trials[left_running.number + 1].params == left_running.params  # the re-run
    assert all(t.state.is_finished() for t in trials)
    assert len(trials) == len(stored) + 1 + proposals(name)
    check_space(trials)
    check_candidates(resumed)


@pytest.mark.parametrize("name", [p for p in SAMPLERS if not p.marks])
def test_a_drafted_trial_gets_the_proposal_of_a_stored_one(name, tmp_path):
    """A trial drafted in memory gets the proposal a stored trial gets; nothing is stored.

    The driver samples a new trial in memory and stores it afterwards in one write
    (:mod:`autopeft.search.scratch`); here with a trial pending.

    Samplers whose fit takes seconds are left out: the draft does not depend on the model,
    and ``qnehvi`` checks the pool samplers' path (the SAAS fit would add minutes).
    """
    twins = []
    for folder in ("drafted", "asked"):
        study, runner = open_study(tmp_path / folder, name)
        start_up(study, runner)
        study.ask()  # pending (RUNNING) while the next one is proposed
        twins.append(study)
    drafted, asked = twins
    before = len(drafted.optuna.get_trials(deepcopy=False))
    draft = scratch.draft(drafted.optuna, drafted.space)
    trial, candidate = asked.ask()
    assert draft.candidate == candidate
    assert draft.trial.params == trial.params
    assert len(drafted.optuna.get_trials(deepcopy=False)) == before

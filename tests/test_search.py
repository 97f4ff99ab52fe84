"""Search on a synthetic blackbox: samplers, successive halving, states in storage, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import api
from autopeft.core.halving import rung_steps
from autopeft.core.trial_result import TrialStatus
from autopeft.search import blackbox
from autopeft.search.local import run_local
from autopeft.search.study import Study, rung_attr
from tests.helpers import (
    check_dashboard,
    check_front,
    check_resumed,
    check_states,
    counted_trials,
    wait_mid_trial,
)

ROOT = Path(__file__).resolve().parents[1]


def config(name: str, sampler: str = "tpe", halving: bool = True, **extra):
    return api.study_from_dict(
        {
            "name": name,
            "model": "minilm",
            "search_space": {
                "modules": {
                    "lora": {
                        "rank": [0, 2, 4, 8, 16, 32, 64],
                        "targets": {"choice": [["q", "v"], ["attn"]]},
                    },
                    "serial_adapter": {"size": [0, 8, 32, 128]},
                },
                "layers": "search",
                "budget": {"max_trainable_params": "1%"},
            },
            "training": {"steps": 90, "rungs": [0.34, 0.67, 1.0]},
            "sampler": {"name": sampler, "n_startup_trials": 5},
            "halving": {"enabled": halving, "eta": 2, "min_peers": 2},
        }
        | extra
    )


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "gp", "qnehvi", "autopeft"])
def test_every_sampler_finishes_with_a_valid_front(tmp_path, sampler):
    n = 24 if sampler in ("random", "tpe", "nsga2") else 7
    study = Study(config(f"s-{sampler}", sampler), root=tmp_path)
    maps = len(Path("/proc/self/maps").read_text().splitlines())
    run_local(study, n, runner=blackbox.for_study(study), progress=False)
    # SAAS fits must not leave compiled JAX code mapped (~2,900 mappings a proposal once made
    # a 200-trial study die at the kernel's mapping limit).
    assert len(Path("/proc/self/maps").read_text().splitlines()) < maps + 1500
    assert study.n_done() == n == len(counted_trials(study.optuna.trials))
    if sampler == "autopeft":  # the paper's batches: 4 proposals per SAAS fit
        sampler = study.optuna.sampler
        assert sampler.proposals == 2 and sampler.fits == 1
    statuses = {r.status for _, r in study.results()}
    assert TrialStatus.INFEASIBLE in statuses or sampler not in ("random",)
    check_front(study)
    check_states(study)
    infeasible = {n for n, r in study.results() if r.status is TrialStatus.INFEASIBLE}
    assert not infeasible & {n for n, _ in study.front_points()}


def test_bo_samplers_model_every_parameter_after_a_trial_with_every_layer_off(tmp_path):
    # Optuna's GP and BoTorch samplers model the intersection of the finished trials' spaces
    # and draw the rest at random: a head-only trial must not drop the module sizes from it.
    study = Study(config("all-off", "gp"), root=tmp_path)
    study.optuna.enqueue_trial({f"placement.layer_{i}": 0 for i in range(6)})
    run_local(study, 8, runner=blackbox.for_study(study), progress=False)
    first = study.optuna.trials[0]
    assert first.state is TrialState.COMPLETE and study.results()[0][1].candidate.modules == ()
    modelled = optuna.search_space.IntersectionSearchSpace().calculate(study.optuna)
    assert {"lora.rank", "lora.targets", "serial_adapter.size", "placement.layer_0"} <= set(
        modelled
    )
    assert set(modelled) == set(first.params)


def test_pool_samplers_propose_unseen_within_budget_candidates_only(tmp_path):
    # The old BoTorch samplers modelled trainable parameters too and optimised a relaxed
    # space: they kept proposing the head-only candidate, each re-proposal replaced by a
    # random one. The pool holds only unseen candidates within the parameter budget.
    study = Study(config("pool", "qnehvi", halving=False), root=tmp_path)
    run_local(study, 16, runner=blackbox.for_study(study), progress=False)
    sampler = study.optuna.sampler
    assert sampler.fits == sampler.proposals == 11 and sampler.failures == 0
    assert not [t for t in study.optuna.trials if t.user_attrs.get("reused")]
    keys = [r.candidate.key() for _, r in study.results()]
    assert len(keys) == len(set(keys)) == 16
    bo = [r for n, r in study.results() if n >= 5]
    assert all(r.status is TrialStatus.COMPLETE for r in bo)


def test_known_objectives_are_exact_and_memory_is_calibrated(tmp_path):
    from autopeft.search.pool import calibrate

    study = Study(config("exact", "qnehvi", halving=False), root=tmp_path)
    run_local(study, 8, runner=blackbox.for_study(study), progress=False)
    done = [t for t in study.optuna.trials if t.state is TrialState.COMPLETE]
    done = [t for t in done if t.constraints["budget"] <= 0]
    cands = [study.oracle.candidate(t.params) for t in done]
    signs = [1.0, -1.0, -1.0]  # accuracy up, parameters and memory down
    known = [study.oracle.known(c) for c in cands]
    exact = study.optuna.sampler._exact_values(done, known, [1, 2], signs)
    for t, row in zip(done, exact.tolist()):
        assert row == pytest.approx([-t.values[1], -t.values[2]], rel=1e-9)
    # A predictor off by a factor and an offset is mapped onto the measurements.
    assert calibrate([100.0, 200.0, 400.0], [260.0, 460.0, 860.0]) == pytest.approx((2.0, 60.0))
    assert calibrate([100.0, 200.0], [150.0, 300.0]) == pytest.approx((1.5, 0.0))
    assert calibrate([], []) == (1.0, 0.0)


def test_saas_batches_serve_q_proposals_per_fit_and_running_trials_are_pending(
    tmp_path, monkeypatch
):
    from autopeft.search import acquisition

    calls = []
    choose = acquisition.choose

    def spy(x_train, y_train, x_pending, x_pool, exact, q, surrogate, fidelity=None):
        calls.append((len(x_train), None if x_pending is None else len(x_pending), q, surrogate))
        return choose(x_train, y_train, x_pending, x_pool, exact, q, "gp", fidelity)  # no NUTS

    monkeypatch.setattr(acquisition, "choose", spy)
    study = Study(config("batches", "autopeft", halving=False), root=tmp_path)
    run_local(study, 13, runner=blackbox.for_study(study), progress=False)
    assert [c[2:] for c in calls] == [(4, "saas")] * 2 and study.optuna.sampler.proposals == 8
    _, first = study.ask()  # a third fit; the trial stays running (training elsewhere)
    assert calls[-1][1] is None and len(study.optuna.sampler.queue) == 3
    _, queued = study.ask()  # the batch's next proposal, no fit
    study.optuna.sampler.queue.clear()
    _, third = study.ask()  # a fourth fit, with both running trials pending
    assert len(calls) == 4 and calls[-1][:2] == (12, 2)  # 12 feasible trials
    known = {r.candidate.key() for _, r in study.results()}
    assert len({first.key(), queued.key(), third.key()} | known) == 16


def test_bo_under_halving_fits_pruned_trials_at_their_rung(tmp_path, monkeypatch):
    # Halving prunes most trials: the BO counts them in its start-up and fits their rung
    # accuracy with the fraction of training they ran as an input, instead of ignoring them.
    from autopeft.search import acquisition

    fits = []
    choose = acquisition.choose

    def spy(x_train, y_train, x_pending, x_pool, exact, q, surrogate, fidelity=None):
        fits.append((x_train.shape, y_train[:, 0].tolist(), fidelity.tolist()))
        return choose(x_train, y_train, x_pending, x_pool, exact, q, surrogate, fidelity)

    monkeypatch.setattr(acquisition, "choose", spy)
    study = Study(config("bo-halving", "qnehvi"), root=tmp_path)
    run_local(study, 16, runner=blackbox.for_study(study), progress=False)
    trials = study.optuna.trials
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    complete = [
        t for t in trials if t.state is TrialState.COMPLETE and t.constraints["budget"] <= 0
    ]
    assert pruned and complete
    # The start-up is 5 trials whatever their state: every later trial is a BO proposal.
    assert study.optuna.sampler.fits == len(fits) == 11 and study.optuna.sampler.failures == 0
    shape, accuracy, fidelity = fits[-1]
    before_last = [t for t in pruned + complete if t.number < 15]
    assert shape[0] == len(fidelity) == len(before_last)  # all distinct candidates
    done = fidelity.count(1.0)
    assert done == len([t for t in complete if t.number < 15]) and fidelity[:done] == [1.0] * done
    rungs = {t.number: study.pruned_values(t) for t in pruned if t.number < 15}
    assert sorted(fidelity[done:]) == sorted(f for _, f in rungs.values())
    low_rungs = {step / 90 for step in rung_steps(90, [0.34, 0.67, 1.0])[:-1]}
    assert set(fidelity[done:]) <= low_rungs
    assert sorted(accuracy[done:]) == pytest.approx(sorted(v[0] for v, _ in rungs.values()))
    # Proposals stay unseen candidates.
    keys = [r.candidate.key() for _, r in study.results()]
    assert len(keys) == len(set(keys))


def test_a_prescreened_batch_is_the_greedy_batch_over_the_whole_pool(monkeypatch):
    # A q-batch is chosen greedily among the PRESCREEN best candidates by their own value
    # rather than the whole pool: on a smooth problem that is the same batch, found sooner.
    import torch
    from botorch.utils.sampling import manual_seed

    from autopeft.search import acquisition

    torch.manual_seed(0)
    x_train, x_pool = (
        torch.rand(24, 5, dtype=torch.float64),
        torch.rand(400, 5, dtype=torch.float64),
    )
    accuracy = -(x_train - 0.6).pow(2).sum(-1, keepdim=True) + 0.3 * x_train[:, :1]
    exact = -torch.cat([x_train, x_pool])[:, 1:3].sum(-1, keepdim=True)  # a known cost
    batches = []
    for prescreen in (64, len(x_pool)):
        monkeypatch.setattr(acquisition, "PRESCREEN", prescreen)  # 400: the whole pool, as before
        with manual_seed(0):
            batches.append(acquisition.choose(x_train, accuracy, None, x_pool, exact, 3, "gp"))
    assert len(set(batches[0])) == 3 and sorted(batches[0]) == sorted(batches[1])


def test_a_failing_bo_proposal_becomes_a_random_one(tmp_path, monkeypatch):
    from autopeft.search import acquisition

    def broken(*args):
        raise ValueError("NaN gradients")

    monkeypatch.setattr(acquisition, "choose", broken)
    study = Study(config("broken", "qnehvi", halving=False), root=tmp_path)
    with pytest.warns(RuntimeWarning, match="NaN gradients"):
        run_local(study, 7, runner=blackbox.for_study(study), progress=False)
    assert study.optuna.sampler.failures == 2 and study.n_done() == 7
    assert all(set(t.params) == set(study.optuna.trials[0].params) for t in study.optuna.trials)


def test_reproposed_candidates_reuse_results_and_do_not_count(tmp_path):
    # 2 ranks x 2 sizes = 4 configurations (one shared layer set): the search stops when all
    # are known instead of spinning, and no candidate is trained twice.
    cfg = config("tiny-space", halving=False, n_trials=10)
    space = cfg.search_space.model_dump()
    space["modules"] = {"lora": {"rank": [2, 4]}, "serial_adapter": {"size": [8, 32]}}
    space["layers"] = "all"
    cfg = cfg.model_copy(update={"search_space": type(cfg.search_space).model_validate(space)})
    study = Study(cfg, root=tmp_path)
    assert study.space_size == 4
    trained = []
    runner = blackbox.for_study(study)
    run = runner.run
    runner.run = lambda c, report, eval_at: trained.append(c.key()) or run(c, report, eval_at)
    run_local(study, 10, runner=runner, progress=False)
    assert len(trained) == len(set(trained)) == 4 == study.n_done()
    reused = [t for t in study.optuna.trials if t.user_attrs.get("reused")]
    assert len(study.optuna.trials) == 4 + len(reused)
    by_key = {
        r.candidate.key(): r for n, r in study.results() if n not in {t.number for t in reused}
    }
    for t in reused:  # a reused trial carries the earlier result of the same candidate
        r = dict(study.results())[t.number]
        assert r == by_key[r.candidate.key()]


def test_a_trial_killed_while_sampling_is_failed_not_requeued(tmp_path):
    study = Study(config("half-asked", halving=False), root=tmp_path)
    study.optuna.ask().suggest_int("lora.rank", 0, 64)  # a driver died inside ask()
    reopened = Study(config("half-asked", halving=False), root=tmp_path)
    assert reopened.recover_interrupted() == []
    (trial,) = reopened.optuna.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] is True
    assert reopened.n_done() == 0 and not reopened.optuna.get_trials(states=(TrialState.WAITING,))


def test_successive_halving_prunes_and_pruned_trials_are_never_complete(tmp_path):
    study = Study(config("halving"), root=tmp_path)
    runner = blackbox.for_study(study)
    trained = []
    run = runner.run
    runner.run = lambda c, report, eval_at: trained.append(c.key()) or run(c, report, eval_at)
    run_local(study, 30, runner=runner, progress=False)
    assert len(trained) == len(set(trained)) == 30  # a pruned candidate is not retrained
    pruned = [(n, r) for n, r in study.results() if r.status is TrialStatus.PRUNED]
    assert len(pruned) >= 5
    for n, r in pruned:
        assert study.optuna.trials[n].state == TrialState.PRUNED
        assert r.steps < r.target_steps
        assert any(k.startswith("rung_") for k in study.optuna.trials[n].user_attrs)
    check_states(study)


def test_halving_costs_fewer_steps_than_full_fidelity(tmp_path):
    full = Study(config("full", halving=False), root=tmp_path)
    half = Study(config("half"), root=tmp_path)
    for study in (full, half):
        run_local(study, 30, runner=blackbox.for_study(study), progress=False)
    steps = {s.config.name: sum(r.steps for _, r in s.results()) for s in (full, half)}
    assert steps["half"] < 0.75 * steps["full"]


class SmallIsBetter(blackbox.BlackboxRunner):
    """Noise-free, and the fewer trainable parameters the more accurate: larger candidates
    that the rank rule keeps at a rung (they spread its front) are then dominated at the end
    by finished smaller ones, i.e. hopeless."""

    def final_accuracy(self, candidate) -> float:
        params, _, _ = self.budget(candidate)
        return 0.85 - params / 2e6


def test_stopping_hopeless_trials_costs_fewer_steps_and_reads_finished_outcomes(tmp_path):
    hopeless = config("hopeless")
    hopeless = hopeless.model_copy(
        update={"halving": hopeless.halving.model_copy(update={"stop_hopeless": True})}
    )
    studies = [Study(c, root=tmp_path) for c in (config("ranked"), hopeless)]
    for study in studies:
        runner = SmallIsBetter(
            study.profile, study.config.training, study.config.search_space.budget, noise=0.0
        )
        run_local(study, 30, runner=runner, progress=False)
    steps = [sum(r.steps for _, r in s.results()) for s in studies]
    assert steps[1] < steps[0]
    # The outcomes the rule read: each finished trial's rung point and its final metric.
    pruner = studies[1]
    rung = rung_steps(90, [0.34, 0.67, 1.0])[0]
    outcomes = pruner.rung_outcomes(rung)
    finished = [r for _, r in pruner.results() if r.status is TrialStatus.COMPLETE]
    assert 0 < len(outcomes) <= len(finished)
    finals = {round(r.metrics["accuracy"], 9) for r in finished}
    assert all(round(end[0], 9) in finals and end[1:] == at[1:] for at, end in outcomes)
    check_states(pruner)


def test_halving_ranks_rungs_by_the_halving_metric(tmp_path):
    by_loss = config("by-loss")
    by_loss = by_loss.model_copy(
        update={"halving": by_loss.halving.model_copy(update={"metric": "loss"})}
    )
    study = Study(by_loss, root=tmp_path)
    run_local(study, 24, runner=blackbox.for_study(study, noise=0.02), progress=False)
    rung = rung_steps(90, [0.34, 0.67, 1.0])[0]
    results = dict(study.results())
    at_rung = {n: study.optuna.trials[n].user_attrs.get(rung_attr(rung)) for n in results}
    ranked = {n: p for n, p in at_rung.items() if p is not None}
    assert len(ranked) >= 10
    for n, point in ranked.items():
        loss = next(h["loss"] for h in results[n].history if h["step"] == rung)
        assert point[0] == -loss  # the loss, signed so that higher is better
    assert any(r.status is TrialStatus.PRUNED for r in results.values())
    # stop_hopeless reads each finished trial's end point in the same metric.
    outcomes = study.rung_outcomes(rung)
    assert outcomes
    for at, end in outcomes:
        assert (
            end[0] in {-r.metrics["loss"] for r in results.values() if "loss" in r.metrics}
            and end[1:] == at[1:]
        )
    check_states(study)


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path):
    study = Study(config("fails", halving=False), root=tmp_path)
    run_local(study, 12, runner=blackbox.for_study(study, fail_every=4), progress=False)
    failed = [n for n, r in study.results() if r.status is TrialStatus.FAILED]
    assert len(failed) >= 2 and study.n_done() == 12
    assert all(study.optuna.trials[n].user_attrs["error"] == "injected failure" for n in failed)
    check_states(study)


def test_results_to_pandas_and_best(tmp_path):
    study = Study(config("frame", halving=False), root=tmp_path)
    run_local(study, 10, runner=blackbox.for_study(study), progress=False)
    df = study.trials()
    assert len(df) == 10 and {"status", "accuracy", "trainable_params", "candidate"} <= set(
        df.columns
    )
    assert any(c.startswith("param.placement.layer_") for c in df.columns)
    number, best = study.best()
    assert best.metrics["accuracy"] == max(r.metrics["accuracy"] for _, r in study.front_points())
    small = study.best(max_params=min(r.trainable_params for _, r in study.front_points()))
    assert small[1].trainable_params == min(r.trainable_params for _, r in study.front_points())


def test_storage_opens_in_optuna_dashboard(tmp_path):
    study = Study(config("dash"), root=tmp_path)
    run_local(study, 12, runner=blackbox.for_study(study), progress=False)
    check_dashboard(study)


@pytest.mark.slow
def test_kill_and_resume_local(tmp_path):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        "name: resume\nmodel: tiny-bert\ntask: {name: sms_spam, max_length: 32}\n"
        # 160 steps (~3 s a trial): a trial must outlast wait_mid_trial's two polls and the
        # kill, or it may finish first (at 40 steps, ~1 s, a clean-clone run once had none
        # running at the kill).
        "training: {steps: 160, batch_size: 8, eval_every: 160, eval_examples: 64}\n"
        "search_space:\n"
        "  modules: {lora: {rank: [2, 4, 8, 16]}, serial_adapter: {size: [0, 4, 8, 16]}}\n"
        "  layers: search\nhalving: {enabled: false}\nsampler: {name: random}\nn_trials: 8\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "autopeft.cli",
        "run",
        str(study_file),
        "--root",
        str(tmp_path),
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = tmp_path / "resume" / "study.db"
    wait_mid_trial(db, "resume", proc, min_done=3, timeout=240)  # kill while one trains
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}")
    finished_before = {t.number: t.params for t in before.trials if t.state == TrialState.COMPLETE}
    running = [t for t in before.trials if t.state == TrialState.RUNNING]
    assert 3 <= len(finished_before) < 8 and len(running) == 1

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Pareto front of 'resume'" in out.stdout
    after = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}")
    for number, params in finished_before.items():  # nothing computed is lost or redone
        assert after.trials[number].state == TrialState.COMPLETE
        assert after.trials[number].params == params
    counted = counted_trials(after.trials)
    assert sum(t.state.is_finished() for t in counted) == 8
    assert all(t.state != TrialState.RUNNING for t in after.trials)
    check_resumed(running, after, completes=True)  # failed, marked and re-run once


def test_search_approaches_the_known_front(tmp_path):
    """The true front of a 757-candidate space is known by enumeration; after 30 trials TPE
    covers at least 85% of its hypervolume."""
    from autopeft.core.pareto import hypervolume
    from tests.helpers import enumerate_all

    cfg = api.study_from_dict(
        {
            "name": "known",
            "model": "minilm",
            "search_space": {
                "modules": {
                    "lora": {"rank": [0, 2, 8, 32]},
                    "serial_adapter": {"size": [0, 8, 64]},
                },
                "layers": "search",
            },
            "objectives": "accuracy, -trainable_params",
            "halving": {"enabled": False},
            "sampler": {"name": "tpe", "n_startup_trials": 5},
        }
    )
    study = Study(cfg, root=tmp_path)
    runner = blackbox.for_study(study, noise=0.0)
    truth = []
    for cand in enumerate_all(study.space):
        params, _, _ = runner.budget(cand)
        truth.append([runner.final_accuracy(cand), params])
    ref = [0.5, 1.1 * max(p for _, p in truth)]
    best = hypervolume(truth, ref, study.directions)
    run_local(study, 30, runner=runner, progress=False)
    found = hypervolume(
        [study.values_of(r) for _, r in study.front_points()], ref, study.directions
    )
    assert len(truth) > 10 * 30  # the search saw a small part of the space
    print(f"hypervolume found {found:.4g} of {best:.4g} ({found / best:.1%})")
    assert found >= 0.85 * best, (found, best)

"""The search-quality surrogate (bench/surrogate.py) fitted on the committed real trials."""

from __future__ import annotations

import json
import math

import pytest

from autopeft import methods
from autopeft.core.candidate import Candidate
from autopeft.core.resolve import RandomSuggest, candidate_params
from autopeft.core.trial_result import TrialStatus
from autopeft.search.local import run_local
from autopeft.search.study import Study, model_profile

# Plain imports: a broken bench module must fail the tests, not skip them.
from bench import collect_real_trials as collect
from bench import search_cost, search_summary, surrogate
from bench.common import RESULTS, bench_study, real_trials
from bench.search_cost import Ladder


@pytest.fixture(scope="module")
def fitted():
    if not surrogate.DATA.exists():
        pytest.skip("no real trials collected")
    return surrogate.Surrogate.from_jsonl(surrogate.DATA)


def test_leave_one_out_error_is_sane(fitted):
    fit = fitted.report()
    assert fit["n"] >= 60 and 10 <= fit["learned"] <= fit["n"] - 10
    # Whether a candidate learns at all is predictable from its features ...
    assert fit["p_learn"]["loo_auc"] > 0.75
    assert fit["p_learn"]["loo_log_loss"] < fit["p_learn"]["constant_log_loss"]
    # ... and so is how well it learns, better than predicting the mean.
    learner = fit["learner_final_accuracy"]
    assert learner["loo_rmse"] < learner["constant_loo_rmse"] < 0.05
    expected = fit["expected_final_accuracy"]
    assert expected["loo_mae"] < expected["constant_loo_mae"]
    assert expected["loo_spearman"] > 0.4


def test_runner_params_and_memory_are_exact(tmp_path, fitted):
    study = Study(bench_study("surrogate-test", halving={"enabled": False}), tmp_path)
    runner = fitted.runner(study, seed=1)
    registry = methods.registry()
    for seed in range(20):
        cand = study.space.sample(RandomSuggest(seed))
        params, predicted, over = runner.budget(cand)
        assert over is None and params == candidate_params(cand, study.profile, registry)
        result = runner.run(cand, None, {14, 27})
        assert result.status is TrialStatus.COMPLETE
        assert result.trainable_params == params and result.peak_memory_mb == predicted
        assert [h["step"] for h in result.history] == [14, 27, 40]
        assert 0.0 <= result.metrics["accuracy"] <= 1.0
        # Seeded: the same candidate gets the same accuracy within a run.
        assert runner.run(cand, None, set()).metrics == result.metrics
        # The oracle (halving's ceiling in bench/search_cost.py) shows it at every rung.
        oracle = fitted.runner(study, seed=1, oracle=True).run(cand, None, {14})
        assert [h["accuracy"] for h in oracle.history] == [result.metrics["accuracy"]] * 2


def test_search_on_the_surrogate_with_halving(tmp_path, fitted):
    study = Study(bench_study("surrogate-search"), tmp_path)
    run_local(study, 25, runner=fitted.runner(study), progress=False)
    statuses = {r.status for _, r in study.results()}
    assert TrialStatus.PRUNED in statuses and study.front_points()


def test_longer_fidelity_surrogate_prunes_at_its_rungs(tmp_path):
    """The 160-step real trials: learning starts before the rungs, so halving stops trials."""
    data = RESULTS / "real_trials_minilm_160.jsonl"
    fitted = surrogate.Surrogate.from_jsonl(data)
    assert fitted.steps == [20, 40, 80, 160]
    config = bench_study("surrogate-160", steps=160, rungs=[0.25, 0.5, 1.0], lr=2e-3)
    study = Study(config, tmp_path)
    run_local(study, 30, runner=fitted.runner(study), progress=False)
    results = [r for _, r in study.results()]
    pruned = [r for r in results if r.status is TrialStatus.PRUNED]
    assert pruned and {r.steps for r in pruned} <= {40, 80}
    assert sum(r.steps for r in results) < 160 * len(results)
    assert study.front_points()


def test_a_fidelity_where_every_trial_learns_fits_the_learner_curve_alone():
    """On a long fidelity every trial leaves the floor: P(learns) is 1, not a fit to one class.

    The floor is still known from the first evaluations (each trial predicts one class there),
    so a learner's final accuracy is never mistaken for the constant predictor's.
    """
    records = real_trials(RESULTS / "real_trials_minilm_160.jsonl")
    learners = [r for r in records if r["metrics"]["mcc"] != 0]
    assert 20 <= len(learners) < len(records)
    fitted = surrogate.Surrogate(learners, model_profile("minilm"))
    assert fitted.majority == pytest.approx(0.606667)
    assert bool(fitted.learned.all()) and not fitted.bimodal
    fit = fitted.report()
    assert fit["p_learn"] is None and fit["learned"] == len(learners)
    assert math.isfinite(fit["expected_final_accuracy"]["loo_rmse"])
    cand = Candidate.model_validate(learners[0]["candidate"])
    assert fitted.p_learn(cand) == 1.0
    assert fitted.expected(cand) == pytest.approx(fitted.learner_curve(cand)[-1])
    curves = [fitted.sample_curve(cand, seed) for seed in range(20)]
    # Every draw is the learner curve plus a learner's residuals, never a flat curve.
    assert all(c[-1] > fitted.majority for c in curves)
    assert len({round(c[-1], 9) for c in curves}) > 1


def test_a_task_where_no_trial_ever_predicts_one_class_has_no_floor():
    """Without an evaluation at MCC 0 (rt_order: every trial learns from its first steps) the
    slowest learners are not constant predictors: the most frequent final accuracy would have
    been taken for the floor, leaving real learners out of the learner curve."""
    records = real_trials(RESULTS / "real_trials_minilm_160.jsonl")  # a fresh parse
    learners = [r for r in records if r["metrics"]["mcc"] != 0]
    for r in learners:
        for h in r["history"]:
            h["mcc"] = max(h["mcc"], 0.01)  # a trace of information at every evaluation
    # Two learners ending level: the old fallback's "most frequent final accuracy".
    learners[1]["history"][-1]["accuracy"] = learners[0]["history"][-1]["accuracy"]
    fitted = surrogate.Surrogate(learners, model_profile("minilm"))
    assert fitted.majority is None
    assert bool(fitted.learned.all()) and not fitted.bimodal
    text = surrogate.fit_summary(fitted.report() | {"source": "minilm, rt_order"})
    assert "(minilm, rt_order;" in text and "none of which ever predicted a single class" in text


def test_one_trial_alone_in_its_class_and_the_parameter_count_feature_set():
    """The head-only candidate as the only non-learner: no singular leave-one-out fit.

    Leave-one-out cannot choose the classifier's penalty then (every fold without that trial
    has one class), so the weakest one is used, which places it below one half. Offered
    both feature sets, each curve step takes the one with the lower leave-one-out error.
    """
    records = real_trials(RESULTS / "real_trials_minilm_160.jsonl")
    head_only = [r for r in records if not r["candidate"]["modules"]]
    assert len(head_only) == 1 and head_only[0]["metrics"]["mcc"] == 0
    kept = [r for r in records if r["metrics"]["mcc"] != 0] + head_only
    profile = model_profile("minilm")
    both = surrogate.Surrogate(kept, profile, feature_sets=("all", "log_params"))
    assert both.bimodal and both.class_penalty == min(surrogate.PENALTIES)
    assert both.p_learn(Candidate.model_validate(head_only[0]["candidate"])) < 0.5
    fit = both.report()
    assert fit["p_learn"]["loo_log_loss"] > 0 and set(both.curve_features) <= {"all", "log_params"}
    only_all = surrogate.Surrogate(kept, profile)
    assert only_all.curve_features == ["all"] * len(only_all.steps)
    # Each step's choice is no worse out of sample than every feature alone.
    assert fit["learner_final_accuracy"]["loo_rmse"] <= (
        only_all.report()["learner_final_accuracy"]["loo_rmse"] + 1e-12
    )
    with pytest.raises(ValueError, match="feature sets are"):
        surrogate.Surrogate(kept, profile, feature_sets=("size",))


def test_the_640_step_surrogate_ranks_candidates_by_size():
    """The 640-step real trials: accuracy rises with size, and the fit carries that trend."""
    data = RESULTS / "real_trials_minilm_640.jsonl"
    fitted = surrogate.Surrogate.from_jsonl(data, feature_sets=("all", "log_params"))
    assert fitted.steps == [40, 80, 160, 320, 640]
    fit = fitted.report()
    # 56 trials: all but 3 learn (the head-only one among those that do not).
    assert fit["n"] >= 56 and fit["n"] - 3 <= fit["learned"] < fit["n"]
    # Who learns is predicted better than by the base rate, out of sample ...
    p_learn = fit["p_learn"]
    assert p_learn["loo_log_loss"] < p_learn["constant_log_loss"]
    # ... and so is how well a learner does, from its size (Spearman 0.31 over all trials:
    # the size trend of the first 32, 0.64, weakened with more draws).
    learner = fit["learner_final_accuracy"]
    assert learner["features"] == "log_params"
    assert learner["loo_rmse"] < learner["constant_loo_rmse"]
    assert fit["expected_final_accuracy"]["loo_spearman"] > 0.25
    # Every feature alone (the default) fits the final step worse out of sample here.
    default = surrogate.Surrogate.from_jsonl(data).report()["learner_final_accuracy"]
    assert learner["loo_rmse"] < default["loo_rmse"]


def test_the_collectors_shards_and_search_costs_ladders_parse_or_say_why():
    import argparse

    assert collect._shard("1/2") == (1, 2)
    for bad, why in (("2/2", "0 <= K < N"), ("one/2", "expected K/N")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            collect._shard(bad)
    ladders = search_cost.parse_ladders("0.125,0.5,1.0@4; 0.25,1.0; 0.25,1.0@3+hopeless+oracle")
    assert ladders == (
        Ladder((0.125, 0.5, 1.0), 4.0),
        Ladder((0.25, 1.0), 3.0),
        Ladder((0.25, 1.0), 3.0, hopeless=True, oracle=True),
    )
    assert ladders[2].label(640) == "tpe-r160-640-e3-hopeless-oracle"
    # Retired flags (the fed TPE, plain MO-ASHA) are refused, with the rule.
    for bad in ("0.125,half@4", "0.25,1.0@3+psychic", "0.25,1.0@3+fed", "0.25,1.0@3+plain"):
        with pytest.raises(argparse.ArgumentTypeError, match="rungs@eta"):
            search_cost.parse_ladders(bad)
    label = Ladder((0.125, 0.5, 1.0), 4.0).label(640)
    assert label == "tpe-r80-320-640-e4"
    assert Ladder.title(ladders[2].label(640)) == (
        "Halving at rungs 160/640 with eta 3, hopeless trials stopped too, "
        "the rungs seeing the final accuracy (oracle)"
    )
    # The verdict names the ladder it read back from the label.
    row = {"median_steps": 100, "reached": 1, "seeds": 1, "median_steps_loose": None}
    rows = [
        {**row, "part": "cost", "label": "tpe", "halving": False, "median_steps": 300},
        {**row, "part": "cost", "label": label, "halving": True},
    ]
    hopeless = Ladder((0.25, 1.0), 3.0, hopeless=True).label(640)
    rows.append({**row, "part": "cost", "label": hopeless, "halving": True, "median_steps": 200})
    also, verdict = search_cost.verdicts({"rows": rows})  # ladders in label order
    assert verdict.startswith("- Halving at rungs 80/320/640 with eta 4: ") and "3.00x" in verdict
    assert also.startswith("- Halving at rungs 160/640 with eta 3, hopeless trials stopped too: ")
    assert "1.50x" in also


def test_search_cost_merges_results_files_counting_a_shared_run_once(tmp_path):
    """--merge: one target over the runs of several files; identical runs count once."""
    forty = json.loads((RESULTS / "search_cost_640_56_r80_40.json").read_text())
    twenty = json.loads((RESULTS / "search_cost_640_56.json").read_text())
    # Seeds 0-2 of each: both files ran the default ladder on those seeds.
    parts = []
    for name, saved in (("a", forty), ("b", twenty)):
        saved["runs"] = [r for r in saved["runs"] if r["seed"] < 3]
        parts.append(tmp_path / f"{name}.json")
        parts[-1].write_text(json.dumps(saved))
    search_cost.merge(parts, tmp_path / "merged")
    merged = json.loads((tmp_path / "merged.json").read_text())
    # A merge keeps no runs (they are in its parts, beside it), only what it summarised.
    assert "runs" not in merged and merged["meta"]["merged_from"] == ["a.json", "b.json"]
    assert "python -m bench." in merged["meta"]["command"] and merged["meta"]["git_commit"]
    rows = {(r["label"], r["halving"]): r["seeds"] for r in merged["summary"]["rows"]}
    assert rows == {
        ("tpe", False): 3,
        ("tpe", True): 3,
        ("tpe-r160-320-640-e3-hopeless", True): 3,
        ("tpe-r80-320-640-e3", True): 3,
    }
    best = max(r["hv"][-1] for saved in (forty, twenty) for r in saved["runs"])
    assert merged["summary"]["target"] == pytest.approx(search_summary.TARGET * best)
    text = (tmp_path / "merged.md").read_text()
    assert "It merges: `" in text and "at git commit `" in text.splitlines()[2]
    # A merge merged again is read through its parts: the same summary.
    search_cost.merge([tmp_path / "merged.json"], tmp_path / "again")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["summary"] == merged["summary"]
    with pytest.raises(SystemExit, match="merged.json is a merge and keeps no runs"):
        search_cost.resummarise(tmp_path / "merged.json")
    # --merge-seeds: the first seeds of each file only.
    search_cost.merge(parts, tmp_path / "two", seeds=2)
    two = json.loads((tmp_path / "two.json").read_text())["summary"]["rows"]
    assert len(two) == 4 and {r["seeds"] for r in two} == {2}
    # --merge-best-from: the target of another file's best hypervolume.
    other = json.loads((RESULTS / "search_cost_640_56.json").read_text())
    other["summary"]["best_hv"] = 0.5
    (tmp_path / "other.json").write_text(json.dumps(other))
    search_cost.merge(parts, tmp_path / "theirs", best_from=tmp_path / "other.json")
    theirs = json.loads((tmp_path / "theirs.json").read_text())["summary"]
    assert theirs["target"] == pytest.approx(search_summary.TARGET * 0.5)
    assert "other.json" in (tmp_path / "theirs.md").read_text()
    other["meta"]["data"] = "real_trials_minilm_160.jsonl"
    (tmp_path / "search_cost_160.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="--merge-best-from: search_cost_160.json is of"):
        search_cost.merge(parts, tmp_path / "x", best_from=tmp_path / "search_cost_160.json")
    # Runs of another benchmark do not mix.
    twenty["meta"]["data"] = "real_trials_minilm_160.jsonl"
    parts[1].write_text(json.dumps(twenty))
    with pytest.raises(SystemExit, match="meta.data"):
        search_cost.merge(parts, tmp_path / "mixed")


def test_the_loss_is_drawn_with_the_accuracy_from_the_same_real_trial(tmp_path, fitted):
    """A study that halves on ``halving.metric: loss`` sees a loss at every rung; both
    metrics of one draw come from one real trial (its residuals, or its whole curves)."""
    assert fitted.loss_curves is not None
    names, _, weights, residuals = fitted.loss_fit
    study = Study(bench_study("surrogate-loss", halving={"enabled": False}), tmp_path)
    runner = fitted.runner(study, seed=3)
    drawn_flat = drawn_learner = 0
    for seed in range(40):
        cand = study.space.sample(RandomSuggest(seed))
        curves = fitted.sample_curves(cand, 3)
        # The accuracy is the draw sample_curve gives (committed results stay reproducible).
        assert curves["accuracy"] == fitted.sample_curve(cand, 3)
        flat = [i for i, c in enumerate(fitted.flat_curves.tolist()) if c == curves["accuracy"]]
        if flat:
            drawn_flat += 1
            assert curves["loss"] in [fitted.flat_loss_curves[i].tolist() for i in flat]
        else:
            drawn_learner += 1
            # The learner's loss residuals are the same real learner's as its accuracy's.
            x = fitted._x(cand)
            mean = [float(x[fitted._cols(n)] @ w) for n, w in zip(names, weights)]
            noise = [a - m for a, m in zip(curves["accuracy"], fitted.learner_curve(cand))]
            row = min(
                range(len(fitted.residuals)),
                key=lambda i: sum(abs(float(e) - n) for e, n in zip(fitted.residuals[i], noise)),
            )
            expected = [max(0.0, m + float(e)) for m, e in zip(mean, residuals[row])]
            if all(0.0 < a < 1.0 for a in curves["accuracy"]):  # not clamped
                assert curves["loss"] == pytest.approx(expected)
        result = runner.run(cand, None, {14, 27})
        assert [set(h) for h in result.history] == [{"step", "accuracy", "loss"}] * 3
        assert result.metrics["loss"] == pytest.approx(curves["loss"][-1])
    assert drawn_flat and drawn_learner

"""bench/promotion.py: policy parsing, the promotion gain, the predictors, one run's cost."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import promotion  # noqa: E402
import search_cost  # noqa: E402
import surrogate  # noqa: E402

from autopeft.search.study import model_profile  # noqa: E402

REF = [0.5, 100.0, 100.0]


def test_policies_parse_and_bad_ones_say_the_form():
    policy = promotion.Policy.parse("0.125@6+oracle+restart")
    assert (policy.first, policy.every, policy.oracle, policy.fed, policy.restart) == (
        0.125,
        6,
        True,
        False,
        True,
    )
    assert policy.label(640) == "promote-r80-every6-oracle-restart"
    for bad in ("0.125@4+magic", "1.5@4", "x@4", "0.25@0", "0.125@4+predict+bayes"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected first@every"):
            promotion.Policy.parse(bad)


def test_the_gain_is_what_a_point_adds_to_the_front():
    front = [[0.9, 10.0, 10.0]]
    assert promotion.gain([0.8, 20.0, 20.0], front, REF) == 0.0  # dominated
    assert promotion.gain([0.95, 50.0, 50.0], front, REF) > 0.0
    assert promotion.gain([0.95, 50.0, 50.0], [], REF) == pytest.approx(0.45 * 50 * 50)


def test_one_run_pays_the_first_rung_per_new_trial_and_the_rest_per_promotion(tmp_path):
    data = BENCH / "results" / "real_trials_minilm_640.jsonl"
    fitted = surrogate.Surrogate(
        search_cost.real_trials(data), model_profile("minilm"), ("all", "log_params")
    )
    run = promotion.Run(promotion.Policy(0.125, 3), seed=0, fidelity=640, step_budget=12 * 640)
    out = promotion.run_policy(run, fitted, str(tmp_path))
    steps = [0, *out["steps"]]
    spent = [b - a for a, b in zip(steps, steps[1:])]
    # A new trial pauses at 80 steps (0 if over budget); a promotion resumes it for 560.
    assert set(spent) <= {0, 80, 560} and spent.count(560) == out["promoted"] >= 1
    assert out["steps"][-1] >= run.step_budget
    # At least `every` new paused trials before each promotion.
    runs_of_new = "".join("p" if s == 560 else "n" if s == 80 else "" for s in spent)
    assert all(len(chunk) >= 3 for chunk in runs_of_new.split("p")[:-1])
    # The front only grows when a promotion finishes.
    assert all(b >= a for a, b in zip(out["hv"], out["hv"][1:]))
    grew = [i for i in range(1, len(out["hv"])) if out["hv"][i] > out["hv"][i - 1]]
    assert all(spent[i] == 560 for i in grew) and out["hv"][-1] > 0


def test_the_predictor_learns_the_promoted_trials_gain_from_the_rung():
    # Final = rung + 0.1 for every promoted trial: the fit predicts close to that.
    rung = [[0.6 + 0.02 * i, 1000.0 * (i + 1), 50.0 + i] for i in range(12)]
    final = [[p[0] + 0.1, *p[1:]] for p in rung]
    guess = promotion.predictor(rung, final)([0.7, 5000.0, 54.0])
    assert guess[1:] == [5000.0, 54.0]  # exact costs are kept
    assert guess[0] == pytest.approx(0.8, abs=0.02)
    assert promotion.Policy.parse("0.125@4+predict").predict


def test_the_predictor_spreads_its_outcomes_by_its_leave_one_out_error():
    rung = [[0.6 + 0.02 * i, 1000.0 * (i + 1), 50.0 + i] for i in range(12)]
    # The final accuracy alternates 0.05 around a trend no feature carries: a real spread.
    final = [[0.75 + (0.05 if i % 2 else -0.05), *p[1:]] for i, p in enumerate(rung)]
    model = promotion.predictor(rung, final)
    assert 0.03 < model.spread < 0.1
    finals, weights = model.outcomes([0.7, 5000.0, 54.0])
    assert len(finals) == promotion.OUTCOME_NODES and float(weights.sum()) == pytest.approx(1.0)
    assert float(weights @ finals) == pytest.approx(model([0.7, 5000.0, 54.0])[0], abs=1e-5)
    spread = float((weights @ (finals - weights @ finals) ** 2).sqrt())
    assert spread == pytest.approx(model.spread, rel=1e-3)
    exact = promotion.predictor(rung, [[p[0] + 0.1, *p[1:]] for p in rung])
    assert exact.spread < model.spread / 3


def test_the_posterior_spans_the_drawn_final_to_the_prior_mean_with_its_width():
    data = BENCH / "results" / "real_trials_minilm_640.jsonl"
    records = search_cost.real_trials(data)
    fitted = surrogate.Surrogate(records, model_profile("minilm"), ("all", "log_params"))
    candidate = surrogate.Candidate.model_validate(records[0]["candidate"])
    errors: dict[str, list[float]] = {"default": [], "prior": []}
    for seed in range(12):
        curve = fitted.sample_curve(candidate, seed)
        rung = fitted.at(curve, 80)
        # A kernel narrower than any gap between pool curves finds the drawn curve: the oracle.
        narrow = promotion.outcome_mean(
            promotion.posterior(fitted, candidate, rung, 80, width=1e-9)
        )
        assert narrow == pytest.approx(curve[-1], abs=1e-6)
        # A kernel wider than the whole range ignores the rung: the surrogate's mean.
        wide = promotion.outcome_mean(promotion.posterior(fitted, candidate, rung, 80, width=100.0))
        assert wide == pytest.approx(fitted.expected(candidate), abs=1e-3)
        default = promotion.outcome_mean(promotion.posterior(fitted, candidate, rung, 80))
        errors["default"].append(abs(default - curve[-1]))
        errors["prior"].append(abs(wide - curve[-1]))
    # The default width learns from the rung: closer to the drawn final than the prior mean.
    assert sum(errors["default"]) < sum(errors["prior"])
    assert promotion.Policy.parse("0.125@4+bayes").label(640) == "promote-r80-every4-bayes"


def test_the_expected_gain_values_a_chance_the_mean_would_miss():
    import torch

    front = [[0.9, 10.0, 10.0]]
    point = [0.7, 20.0, 20.0]  # costlier than the front: only above 0.9 does it add
    outcomes = (torch.tensor([0.85, 0.95], dtype=torch.float64), torch.tensor([0.7, 0.3]))
    mean = float(outcomes[1].double() @ outcomes[0])
    assert promotion.gain([mean, *point[1:]], front, REF) == 0.0
    expected = promotion.expected_gain(outcomes, point, front, REF)
    assert expected == pytest.approx(0.3 * promotion.gain([0.95, 20.0, 20.0], front, REF))
    assert expected > 0.0
    # No outcome above the front: nothing expected.
    low = (torch.tensor([0.8, 0.85], dtype=torch.float64), torch.tensor([0.5, 0.5]))
    assert promotion.expected_gain(low, point, front, REF) == 0.0

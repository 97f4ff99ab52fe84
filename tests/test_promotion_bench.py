"""bench/promotion.py: policy parsing, the promotion gain, and one run's cost accounting."""

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
    for bad in ("0.125@4+magic", "1.5@4", "x@4", "0.25@0"):
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

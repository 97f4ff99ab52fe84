"""bench/halving_ceiling.py: the greedy needed set, the ceiling formula, one analysed run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autopeft.core.halving import RUNG_DIRECTIONS
from autopeft.core.pareto import hypervolume
from autopeft.search.study import model_profile
from bench import halving_ceiling as hc
from bench import search_cost, surrogate
from bench.common import ROOT, real_trials

BENCH = Path(__file__).resolve().parents[1] / "bench"

REF = [0.5, 100.0, 100.0]


def test_the_greedy_set_takes_the_largest_gain_first_and_stops_at_the_target():
    points = [
        [0.60, 90.0, 90.0],  # small, inside the next one's box: never needed
        [0.90, 10.0, 10.0],  # most of the volume alone
        [0.95, 50.0, 50.0],  # a strip above it
        [0.60, 5.0, 5.0],  # a sliver beside it (less than the strip)
    ]
    best = hypervolume([points[1]], REF, RUNG_DIRECTIONS)
    assert hc.greedy_needed(points, REF, best) == [1]
    everything = hypervolume(points, REF, RUNG_DIRECTIONS)
    both = hypervolume([points[1], points[2]], REF, RUNG_DIRECTIONS)
    assert best < both < everything
    # Just above what 1 alone holds: the next-largest gain (the strip, 2) comes first.
    assert hc.greedy_needed(points, REF, best * 1.0001) == [1, 2]
    # All of it: the dominated point 0 is never needed, the sliver is.
    assert sorted(hc.greedy_needed(points, REF, everything)) == [1, 2, 3]


def test_a_target_the_points_cannot_reach_says_so():
    with pytest.raises(ValueError, match="short of"):
        hc.greedy_needed([[0.6, 10.0, 10.0]], REF, 1e9)


def test_the_ceiling_is_trials_over_what_a_clairvoyant_rule_spends():
    assert hc.ceiling(40, 40, 0.25) == 1.0  # every trial needed: nothing to stop
    assert hc.ceiling(40, 0, 0.25) == 4.0  # none needed: every trial at a quarter
    assert hc.ceiling(47, 7, 0.125) == pytest.approx(47 / (7 + 40 / 8))
    assert hc.improving_count([0.1, 0.1, 0.3, 0.3, 0.35]) == 3


def test_one_seed_on_the_640_step_surrogate(tmp_path):
    data = BENCH / "results" / "real_trials_minilm_640.jsonl"
    fitted = surrogate.Surrogate(real_trials(data), model_profile("minilm"), ("all", "log_params"))
    spec = search_cost.Spec("cost", "tpe", "tpe", False, 0, 30 * 640, 300 * 640, fidelity=640)
    # A target the run reaches early: 80% of the best front of the committed 40-seed runs.
    row = hc.analyse(spec, fitted, str(tmp_path), 0.8 * 0.472)
    t = row["trials_to_target"]
    assert t is not None and 1 <= t <= row["trials"]
    assert 1 <= len(row["needed"]) <= row["improving"] <= t
    assert all(0 <= i < t for i in row["needed"])
    summary = hc.summarise([row, {"seed": 1, "trials_to_target": None, "trials": 30}])
    assert summary["reached"] == 1 and summary["seeds"] == 2
    ceilings = summary["ceilings"]
    # A later first rung saves less; only the needed finishing saves at least as much.
    assert ceilings["0.25"]["needed"] <= ceilings["0.125"]["needed"]
    assert all(c["improving"] <= c["needed"] for c in ceilings.values())


def test_a_target_from_another_benchmark_is_refused_with_the_rule(tmp_path):
    import json
    import subprocess

    other = json.loads((BENCH / "results" / "search_cost_640_56.json").read_text())
    other["meta"]["data"] = "real_trials_minilm_160.jsonl"
    (tmp_path / "search_cost_160.json").write_text(json.dumps(other))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.halving_ceiling",
            "--data",
            str(BENCH / "results" / "real_trials_minilm_640.jsonl"),
            "--target-from",
            str(tmp_path / "search_cost_160.json"),
            "--seeds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "--target-from: search_cost_160.json is of 'real_trials_minilm_160.jsonl'" in out.stderr

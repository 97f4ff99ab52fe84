"""Pure Pareto math and the successive-halving rule."""

from __future__ import annotations

import itertools
import random

import pytest

from autopeft.core.halving import HalvingRule, rung_steps
from autopeft.core.pareto import (
    crowding_distances,
    dominates,
    hypervolume,
    hypervolume_history,
    knee_point,
    nondominated_ranks,
    pareto_front,
    select_top,
)

MAX_MIN_MIN = ("maximize", "minimize", "minimize")


def grid_hypervolume(points, ref, directions, n=40):
    """Hypervolume by counting cells of a fine grid (brute force, minimisation space)."""
    signs = [-1 if d == "maximize" else 1 for d in directions]
    pts = [[s * v for s, v in zip(signs, p)] for p in points]
    r = [s * v for s, v in zip(signs, ref)]
    lo = [min(p[k] for p in pts) for k in range(len(r))]
    step = [(r[k] - lo[k]) / n for k in range(len(r))]
    count = 0
    for cell in itertools.product(range(n), repeat=len(r)):
        c = [lo[k] + (cell[k] + 0.5) * step[k] for k in range(len(r))]
        if any(all(p[k] <= c[k] for k in range(len(r))) for p in pts):
            count += 1
    vol = 1.0
    for s in step:
        vol *= s
    return count * vol


def test_dominance_and_front():
    pts = [(0.9, 10, 5), (0.8, 5, 5), (0.85, 12, 6), (0.9, 10, 4)]
    assert nondominated_ranks(pts, MAX_MIN_MIN) == [1, 0, 2, 0]
    assert pareto_front(pts, MAX_MIN_MIN) == [1, 3]
    assert dominates([1, 1], [1, 2]) and not dominates([1, 1], [1, 1])


@pytest.mark.parametrize("dim", [2, 3])
def test_hypervolume_matches_a_grid_count(dim):
    rng = random.Random(dim)
    directions = MAX_MIN_MIN[:dim]
    pts = [
        [rng.uniform(0.5, 1.0)] + [rng.uniform(0, 10) for _ in range(dim - 1)] for _ in range(12)
    ]
    ref = [0.4] + [11.0] * (dim - 1)
    exact = hypervolume(pts, ref, directions)
    approx = grid_hypervolume(pts, ref, directions, n=40 if dim == 3 else 400)
    assert exact == pytest.approx(approx, rel=0.03)


def test_hypervolume_simple_cases():
    assert hypervolume([[2, 2]], [4, 4], ("minimize", "minimize")) == 4
    assert hypervolume([[1, 3], [3, 1]], [4, 4], ("minimize", "minimize")) == 5
    assert hypervolume([[5, 5]], [4, 4], ("minimize", "minimize")) == 0
    hist = hypervolume_history([[2, 2], None, [1, 3]], [4, 4], ("minimize", "minimize"))
    assert hist == [4, 4, 5]


def test_crowding_and_selection():
    front = [(0.9, 100, 1), (0.8, 50, 1), (0.7, 10, 1), (0.75, 30, 1)]
    d = crowding_distances(front, MAX_MIN_MIN)
    assert d[0] == d[2] == float("inf")
    worse = (0.6, 200, 2)
    top = select_top([*front, worse], MAX_MIN_MIN, 4)
    assert 4 not in top and len(top) == 4


def test_halving_rule():
    rule = HalvingRule(eta=3, min_peers=3)
    peers = [(0.9, 100, 10), (0.85, 50, 10), (0.8, 20, 10)]
    assert rule.should_continue((0.5, 500, 50), peers[:2])  # too few peers: continue
    assert not rule.should_continue((0.5, 500, 50), peers)  # dominated by all
    assert rule.should_continue((0.6, 1, 1), peers)  # smallest: on the front, at an extreme
    assert rule.keep(10) == 4
    assert rung_steps(90, [0.34, 0.67, 1.0]) == [31, 60, 90]
    assert rung_steps(10, [1.0]) == [10]


def test_halving_rule_gives_ties_in_accuracy_to_the_trial():
    """Costs are exact at every rung, accuracy is not: equal accuracy is no reason to stop."""
    rule = HalvingRule(eta=3, min_peers=3)
    floor = 0.607  # everyone still predicts the majority class
    cheap = [(floor, 10 * i, 5 + i) for i in range(1, 9)]
    large = (floor, 10_000, 500)
    # MO-ASHA alone would stop it: 8 cheaper peers with the same accuracy dominate it.
    assert 0 not in select_top([large, *cheap], MAX_MIN_MIN, 3)
    assert rule.should_continue(large, cheap)
    assert all(rule.should_continue(p, [q for q in cheap if q != p]) for p in cheap)
    # Cheaper peers that are also more accurate are evidence: the same trial stops ...
    learners = [(0.70, 20, 6), (0.68, 30, 7), (0.66, 40, 8)]
    assert not rule.should_continue(large, [*cheap[:5], *learners])
    # ... unless their margin is within min_delta.
    lenient = HalvingRule(eta=3, min_peers=3, min_delta=0.1)
    assert lenient.should_continue(large, [*cheap[:5], *learners])


def test_halving_stops_hopeless_trials_only_when_asked():
    """A trial the rank rule keeps stops if no gain seen in finished trials lifts it clear."""
    peers = [(0.70, 100, 10), (0.60, 50, 10), (0.65, 10, 10)]
    finished = [
        ((0.75, 50, 5), (0.80, 50, 5)),  # gained 0.05 from this rung
        ((0.70, 200, 20), (0.72, 200, 20)),  # gained 0.02
        ((0.60, 20, 2), (0.78, 20, 2)),  # a late start from the floor: gained 0.18
    ]
    trial = (0.74, 300, 30)
    assert HalvingRule().should_continue(trial, peers, finished)  # the rank rule keeps it
    hopeful = HalvingRule(stop_hopeless=True)
    # Only the gains of finished trials at least as accurate here count (0.05, not 0.18):
    # 0.74 + 0.05 < 0.80 at fewer parameters and less memory.
    assert hopeful.hopeless(trial, finished)
    assert not hopeful.should_continue(trial, peers, finished)
    # Within min_delta of that, or costing no more than the dominating trial, it goes on.
    assert HalvingRule(stop_hopeless=True, min_delta=0.02).should_continue(trial, peers, finished)
    assert hopeful.should_continue((0.74, 40, 4), peers, finished)
    # Ahead of every finished trial at the rung: never hopeless; too few finished: no verdict.
    assert not hopeful.hopeless((0.76, 300, 30), finished)
    assert not hopeful.hopeless(trial, finished[:2])


def test_knee_point_is_the_balanced_front_point():
    # accuracy (max) vs parameters (min): a convex front with an obvious elbow at (0.80, 100).
    points = [[0.60, 1], [0.80, 100], [0.82, 900], [0.70, 500], [0.83, 1000], [0.50, 500]]
    directions = ("maximize", "minimize")
    assert knee_point(points, directions) == 1
    assert knee_point([], directions) is None
    assert knee_point([[0.7, 5]], directions) == 0
    # The knee is always on the front, and invariant to rescaling an objective.
    rng = random.Random(3)
    for _ in range(50):
        pts = [[rng.random(), rng.random(), rng.random()] for _ in range(12)]
        knee = knee_point(pts, MAX_MIN_MIN)
        assert knee in pareto_front(pts, MAX_MIN_MIN)
        scaled = [[a, 1000 * b, c] for a, b, c in pts]
        assert knee_point(scaled, MAX_MIN_MIN) == knee

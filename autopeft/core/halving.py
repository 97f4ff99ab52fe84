"""Pareto-aware successive halving: the stop/continue rule at a rung, as a pure function.

At each rung (a fidelity step) a trial is compared with the peers that reached the same
rung on (accuracy at that rung, trainable parameters, predicted memory). The trial and its
peers are ranked as in MO-ASHA (Schmucker et al., 2021): by non-dominated front, then by
crowding distance within a front; the trial continues if it is among the best
``ceil(n / eta)`` of the ``n`` points. A dominated trial thus stops when enough better
configurations exist, while a small module with modest accuracy survives beside a large
accurate one when it spreads the front — the front, not a single best accuracy, is what the
search is after. Until ``min_peers`` peers reached the rung, every trial continues.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autopeft.core.pareto import select_top

RUNG_DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class HalvingRule:
    """Parameters of the rule."""

    eta: float = 3.0
    min_peers: int = 3

    def keep(self, n_points: int) -> int:
        """How many of ``n_points`` at a rung go on."""
        return max(1, math.ceil(n_points / self.eta))

    def should_continue(self, point: Sequence[float], peers: Sequence[Sequence[float]]) -> bool:
        """Whether a trial at ``point`` continues past this rung, given its ``peers`` there."""
        if len(peers) < self.min_peers:
            return True
        points = [list(point), *map(list, peers)]
        return 0 in select_top(points, RUNG_DIRECTIONS, self.keep(len(points)))


def rung_steps(total_steps: int, rungs: Sequence[float]) -> list[int]:
    """Training steps at which the rungs fall (increasing, the last one = ``total_steps``)."""
    steps = sorted({max(1, round(r * total_steps)) for r in rungs} | {total_steps})
    return [s for s in steps if s <= total_steps]

"""Pareto-aware successive halving: the stop/continue rule at a rung, as a pure function.

At each rung (a fidelity step) a trial is compared with the peers that reached the same
rung on (accuracy at that rung, trainable parameters, predicted memory). It continues unless
too many peers dominate it: with ``eta`` = 3, a trial dominated by at least a third of its
peers stops. A trial on the Pareto front of its rung always continues, so a small module
with modest accuracy survives beside a large accurate one — the front, not a single best
accuracy, is what the search is after. Until ``min_peers`` peers reached the rung, every
trial continues (there is nothing to compare with yet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autopeft.core.pareto import dominated_by_count

RUNG_DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class HalvingRule:
    """Parameters of the rule."""

    eta: float = 3.0
    min_peers: int = 3

    def allowed(self, n_peers: int) -> int:
        """How many dominating peers a trial may have and still continue."""
        return max(1, math.ceil(n_peers / self.eta))

    def should_continue(self, point: Sequence[float], peers: Sequence[Sequence[float]]) -> bool:
        """Whether a trial at ``point`` continues past this rung, given its ``peers`` there."""
        if len(peers) < self.min_peers:
            return True
        return dominated_by_count(point, peers, RUNG_DIRECTIONS) < self.allowed(len(peers))


def rung_steps(total_steps: int, rungs: Sequence[float]) -> list[int]:
    """Training steps at which the rungs fall (increasing, the last one = ``total_steps``)."""
    steps = sorted({max(1, round(r * total_steps)) for r in rungs} | {total_steps})
    return [s for s in steps if s <= total_steps]

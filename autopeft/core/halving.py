"""Pareto-aware successive halving: the stop/continue rule at a rung, as a pure function.

At each rung (a fidelity step) a trial is compared with the peers that reached the same
rung on (accuracy at that rung, trainable parameters, predicted memory). The trial and its
peers are ranked as in MO-ASHA (Schmucker et al., 2021): by non-dominated front, then by
crowding distance within a front; the trial continues if it is among the best
``ceil(n / eta)`` of the ``n`` points. A dominated trial thus stops when enough better
configurations exist, while a small module with modest accuracy survives beside a large
accurate one when it spreads the front — the front, not a single best accuracy, is what the
search is after. Until ``min_peers`` peers reached the rung, every trial continues.

Unlike MO-ASHA, ties in rung accuracy go the trial's way. Trainable parameters and memory
are exact at any fidelity, accuracy is not: early in training many trials sit at the same
floor (the majority-class rate), and ranking them then sorts them by cost alone, which stops
exactly the larger candidates that would learn later (measured in
``bench/results/search_cost.md``). So the trial is ranked with its accuracy raised by
``min_delta`` and a hair: a peer must be *more* accurate (by more than ``min_delta``) and no
more costly to dominate it. A trial stops only when accuracy already speaks against it, and a
rung where accuracy does not discriminate (everyone at the floor) stops nobody.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.core.pareto import select_top

if TYPE_CHECKING:
    from autopeft.core.study_config import HalvingConfig

RUNG_DIRECTIONS = ("maximize", "minimize", "minimize")
#: Added to the judged trial's rung accuracy so that exact ties go its way (metrics are
#: fractions of an evaluation set, far coarser than this).
TIE_BREAK = 1e-9


@dataclass(frozen=True)
class HalvingRule:
    """Parameters of the rule."""

    eta: float = 3.0
    min_peers: int = 3
    #: Accuracy gap a peer needs over a trial to count as better at a rung (metric units).
    min_delta: float = 0.0

    @classmethod
    def from_config(cls, config: HalvingConfig) -> HalvingRule:
        """The rule of a study's ``halving`` section."""
        return cls(eta=config.eta, min_peers=config.min_peers, min_delta=config.min_delta)

    def keep(self, n_points: int) -> int:
        """How many of ``n_points`` at a rung go on."""
        return max(1, math.ceil(n_points / self.eta))

    def should_continue(self, point: Sequence[float], peers: Sequence[Sequence[float]]) -> bool:
        """Whether a trial at ``point`` continues past this rung, given its ``peers`` there."""
        if len(peers) < self.min_peers:
            return True
        hopeful = [point[0] + self.min_delta + TIE_BREAK, *point[1:]]
        points = [hopeful, *map(list, peers)]
        return 0 in select_top(points, RUNG_DIRECTIONS, self.keep(len(points)))


def rung_steps(total_steps: int, rungs: Sequence[float]) -> list[int]:
    """Training steps at which the rungs fall (increasing, the last one = ``total_steps``)."""
    steps = sorted({max(1, round(r * total_steps)) for r in rungs} | {total_steps})
    return [s for s in steps if s <= total_steps]

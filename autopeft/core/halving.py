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
exactly the larger candidates that would learn later (seen once with older code in a
search-cost run, bench/LOG.md; where ties are rare, on the 640-step bench surrogate, the
two rules measure the same: ``bench/results/search_cost_640_56_rule_40.md``). So the trial
is ranked with its accuracy raised by ``min_delta`` and a hair: a peer must be *more*
accurate (by more than ``min_delta``) and no more costly to dominate it. A trial stops only
when accuracy already speaks against it, and a rung where accuracy does not discriminate
(everyone at the floor) stops nobody.

Optionally (``stop_hopeless``) a trial the rank rule keeps is still stopped when it is
*hopeless*: even the largest gain from this rung to the end that a finished trial made
(among the finished trials at least as accurate at this rung, whose gains are not inflated by
late starts from the floor) would leave it dominated by a finished trial: as accurate or
more, no more trainable parameters and no more memory. By the evidence of the finished
trials such a trial will not add to the front the search reports, whatever its rank among
the peers at the rung; MO-ASHA's rank alone keeps many of them, because in three objectives
much of a rung is non-dominated. A trial ahead of every finished one at the rung is never
hopeless. Off by default: on the 640-step bench surrogate it stopped more trials but lost
front candidates (1.14x fewer steps to the target, against 1.49x for the rank rule alone,
``bench/results/search_cost_640_56.md``); the largest gain seen is not a safe bound when rung
accuracy is this noisy.
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
#: A finished trial's (point at a rung, point at the end), both in RUNG_DIRECTIONS' order.
Outcome = tuple[Sequence[float], Sequence[float]]
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
    #: Also stop trials the finished ones show cannot reach the front (see the module doc).
    stop_hopeless: bool = False

    @classmethod
    def from_config(cls, config: HalvingConfig) -> HalvingRule:
        """The rule of a study's ``halving`` section."""
        return cls(
            eta=config.eta,
            min_peers=config.min_peers,
            min_delta=config.min_delta,
            stop_hopeless=config.stop_hopeless,
        )

    def keep(self, n_points: int) -> int:
        """How many of ``n_points`` at a rung go on."""
        return max(1, math.ceil(n_points / self.eta))

    def should_continue(
        self,
        point: Sequence[float],
        peers: Sequence[Sequence[float]],
        finished: Sequence[Outcome] = (),
    ) -> bool:
        """Whether a trial at ``point`` continues past this rung.

        Args:
            point: the trial's (rung accuracy, trainable parameters, predicted memory).
            peers: the points other trials recorded at this rung.
            finished: (point at this rung, point at the end) of the trials that finished
                after recording this rung; used by ``stop_hopeless``.
        """
        if len(peers) < self.min_peers:
            return True
        hopeful = [point[0] + self.min_delta + TIE_BREAK, *point[1:]]
        points = [hopeful, *map(list, peers)]
        if 0 not in select_top(points, RUNG_DIRECTIONS, self.keep(len(points))):
            return False
        return not (self.stop_hopeless and self.hopeless(point, finished))

    def hopeless(self, point: Sequence[float], finished: Sequence[Outcome]) -> bool:
        """Whether no gain seen in ``finished`` trials lifts ``point`` out of their dominance."""
        if len(finished) < self.min_peers:
            return False
        gains = [end[0] - rung[0] for rung, end in finished if rung[0] >= point[0]]
        if not gains:  # ahead of every finished trial at this rung
            return False
        best_case = point[0] + max(0.0, *gains) + self.min_delta + TIE_BREAK
        return any(
            end[0] >= best_case and end[1] <= point[1] and end[2] <= point[2] for _, end in finished
        )


def rung_steps(total_steps: int, rungs: Sequence[float]) -> list[int]:
    """Training steps at which the rungs fall (increasing, the last one = ``total_steps``)."""
    steps = sorted({max(1, round(r * total_steps)) for r in rungs} | {total_steps})
    return [s for s in steps if s <= total_steps]

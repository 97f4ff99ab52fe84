"""What a driver knows of its study's finished trials, each read from storage once.

Optuna refuses every write to a finished trial, so whatever a finished trial says (its
parsed :class:`TrialResult`, whether it counts towards ``n_trials``, its candidate key, its
place on the Pareto front) is worked out once, when a read of the storage first shows it
finished, and kept by trial number. Running and waiting trials are never kept: each read
looks at them again, so the trials other drivers start, finish or abandon on a shared
storage are seen at the next read and nothing stale is trusted. A driver's per-trial
bookkeeping then costs the trials that are new since its last read, not the whole study
(``bench/driver_cost.py`` measures it; ``tests/test_driver_cost.py`` holds it there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from optuna.trial import FrozenTrial

from autopeft.core.pareto import dominates, known, to_min
from autopeft.core.trial_result import TrialResult, TrialStatus

RESULT_ATTR = "result"
INTERRUPTED_ATTR = "interrupted"
REUSED_ATTR = "reused"
#: Statuses whose result an identical, re-proposed candidate takes over instead of training
#: again (failures may be transient, e.g. an OOM beside packed trials: those are retried).
REUSABLE = (TrialStatus.COMPLETE, TrialStatus.PRUNED)


class FrontPoint:
    """A trial on the Pareto front: its objective values (as told and minimised), result."""

    __slots__ = ("values", "minimised", "result")

    def __init__(self, values: list[float], minimised: list[float], result: TrialResult):
        self.values, self.minimised, self.result = values, minimised, result


class Ledger:
    """The finished trials of one study as this driver has read them (see the module doc)."""

    def __init__(
        self, directions: Sequence[str], values_of: Callable[[TrialResult], list[float | None]]
    ):
        """Start empty.

        Args:
            directions: ``maximize``/``minimize`` per objective.
            values_of: a result's objective values (``Study.values_of``).
        """
        self.directions, self.values_of = list(directions), values_of
        #: Parsed results of the finished trials that recorded one, by trial number.
        self.records: dict[int, TrialResult] = {}
        #: Reusable results by candidate key (the latest trial's where several share one).
        self.known: dict[str, TrialResult] = {}
        self._known_from: dict[str, int] = {}
        #: Finished trials that count towards ``n_trials`` (not interrupted, not reused).
        self.counted = 0
        #: Numbers of the finished trials that took over an earlier result.
        self.reused: set[int] = set()
        #: Non-dominated COMPLETE, non-reused trials with every objective known, by number.
        self.front: dict[int, FrontPoint] = {}
        #: Changes whenever :attr:`front` does (a cache key for its hypervolume).
        self.version = 0
        #: Per objective, the largest value among COMPLETE results (the reference point's).
        self.largest: list[float | None] = [None] * len(self.directions)
        #: The trials the last :meth:`sync` found unfinished (running or waiting), by number.
        self.unfinished: list[FrozenTrial] = []
        #: TrialResult validations so far (a counting seam for the cost regression test).
        self.parsed = 0
        self._done: set[int] = set()
        self._open: set[int] = set()
        self._next = 0

    def sync(self, trials: Sequence[FrozenTrial]) -> None:
        """Take in a read of every trial of the study (sorted by number, as Optuna returns).

        Only trials not yet seen finished are looked at: those the last read found
        unfinished and those numbered since. Optuna numbers a study's trials 0, 1, ... so a
        trial's number is its index; another list falls back to a scan by number.
        """
        n = len(trials)
        if n and trials[0].number == 0 and trials[-1].number == n - 1:
            fresh = [trials[i] for i in sorted(self._open) if i < n]
            fresh += trials[self._next :]
            self._next = max(self._next, n)
        else:
            fresh = [t for t in trials if t.number not in self._done]
            self._next = 0
        unfinished = []
        for t in fresh:
            if t.state.is_finished():
                self.add(t)
            else:
                unfinished.append(t)
        self.unfinished = unfinished
        self._open = {t.number for t in unfinished}

    def add(self, trial: FrozenTrial) -> None:
        """Take in one finished trial (a trial already taken in is ignored)."""
        number = trial.number
        if number in self._done or not trial.state.is_finished():
            return
        attrs = trial.user_attrs
        raw = attrs.get(RESULT_ATTR)
        result = None
        if raw is not None:
            result = TrialResult.model_validate(raw)
            self.parsed += 1
        self._take(number, result, bool(attrs.get(REUSED_ATTR)), bool(attrs.get(INTERRUPTED_ATTR)))

    def told(self, number: int, result: TrialResult, reused: bool) -> None:
        """Take in a trial this driver just finished with ``result`` (no read, no parse)."""
        if number not in self._done:
            self._take(number, result, reused, interrupted=False)

    def _take(
        self, number: int, result: TrialResult | None, reused: bool, interrupted: bool
    ) -> None:
        self._done.add(number)
        if reused:
            self.reused.add(number)
        elif not interrupted:
            self.counted += 1
        if result is None:
            return
        self.records[number] = result
        if result.status in REUSABLE:
            key = result.candidate.key()
            if self._known_from.get(key, -1) < number:
                self.known[key], self._known_from[key] = result, number
        if result.status is TrialStatus.COMPLETE:
            values = self.values_of(result)
            for i, v in enumerate(values):
                top = self.largest[i]
                if v is not None and (top is None or v > top):
                    self.largest[i] = v
            full = known(values)
            if not reused and full is not None:
                self._enter_front(number, full, result)

    def _enter_front(self, number: int, values: list[float], result: TrialResult) -> None:
        # The front of the trials so far is every point no other dominates; a point
        # dominated by any trial is dominated by a front point (dominance is transitive),
        # so comparing with the front alone keeps it exact, as pareto_front would find it.
        point = to_min([values], self.directions)[0]
        if any(dominates(p.minimised, point) for p in self.front.values()):
            return
        for n in [n for n, p in self.front.items() if dominates(point, p.minimised)]:
            del self.front[n]
        self.front[number] = FrontPoint(values, point, result)
        self.version += 1

    def result(self, trial: FrozenTrial) -> TrialResult | None:
        """A finished trial's result (taken in now if new); None when it recorded none."""
        self.add(trial)
        return self.records.get(trial.number)

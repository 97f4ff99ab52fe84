"""Checks of a study's end state after faults (bench/faults.py): nothing lost, nothing twice.

Every function reads Optuna trials as a driver left them: finished trials snapshot and
compared, candidates trained twice, trials left RUNNING, state/status disagreements and
interrupted trials re-queued other than once. :class:`Outcome` gathers one scenario's
findings and names the goals it missed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft import Candidate

#: The Optuna state each ``status`` user attribute comes with (tests/helpers.py check_states).
STATE_OF_STATUS = dict(COMPLETE="COMPLETE", INFEASIBLE="COMPLETE", PRUNED="PRUNED", FAILED="FAIL")


@dataclass
class Outcome:
    """What one scenario did and found (its goals: :meth:`missed`)."""

    scenario: str
    n_trials: int
    kills: int = 0
    kills_survived: int = 0  # kills whose study went on to finish n_trials
    studies: int = 0
    lost: int = 0
    trained_twice: int = 0
    running_left: int = 0
    disagreements: int = 0
    requeue_errors: int = 0
    counted: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    phases: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def missed(self) -> list[str]:
        """The goals this scenario missed, one line each (empty: all met)."""
        checks = [
            (self.kills_survived == self.kills, f"{self.kills - self.kills_survived} kills"),
            (self.lost == 0, f"{self.lost} finished trials lost"),
            (self.trained_twice == 0, f"{self.trained_twice} candidates trained twice"),
            (self.running_left == 0, f"{self.running_left} trials left RUNNING"),
            (self.disagreements == 0, f"{self.disagreements} state/status disagreements"),
            (self.requeue_errors == 0, f"{self.requeue_errors} re-queued != once"),
            (all(c == self.n_trials for c in self.counted), f"counted {self.counted}"),
        ]
        texts = [text for ok, text in checks if not ok] + self.failures
        return [f"{self.scenario}: {text}" for text in texts]


#: One engine per storage URL, kept across reads (a scenario polls its study many times).
_STORAGES: dict[str, optuna.storages.BaseStorage] = {}


def load_trials(url: str, name: str) -> list[FrozenTrial]:
    """The study's trials ([] while it does not exist yet)."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return []
    try:
        if url not in _STORAGES:  # one engine per storage, kept
            _STORAGES[url] = optuna.storages.RDBStorage(url)
        study = optuna.load_study(study_name=name, storage=_STORAGES[url])
        return study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 -- not created yet, or being created right now
        return []


def key(t: FrozenTrial) -> str | None:
    """The trial's candidate key (None before its candidate was recorded)."""
    raw = t.user_attrs.get("candidate")
    return None if raw is None else Candidate.model_validate(raw).key()


def snapshot(trials: list[FrozenTrial]) -> dict[int, tuple]:
    """{number: (state, status attribute, values)} of the finished trials."""
    return {
        t.number: (t.state.name, t.user_attrs.get("status"), tuple(t.values or ()))
        for t in trials
        if t.state.is_finished()
    }


def lost(before: dict[int, tuple], after: dict[int, tuple]) -> set[int]:
    """Trials finished in ``before`` that are missing or changed in ``after``."""
    return {n for n, v in before.items() if after.get(n) != v}


def trained(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Finished trials that trained (not reused) and ended COMPLETE or PRUNED."""
    return [
        t
        for t in trials
        if t.state.is_finished()
        and not t.user_attrs.get("reused")
        and t.user_attrs.get("status") in ("COMPLETE", "PRUNED")
    ]


def trained_twice(trials: list[FrozenTrial]) -> int:
    """Candidates with more than one trained trial."""
    return sum(1 for c in Counter(key(t) for t in trained(trials)).values() if c > 1)


def counted(trials: list[FrozenTrial]) -> int:
    """Finished trials that count towards n_trials (neither interrupted nor reused)."""
    skip = ("interrupted", "reused")
    return sum(t.state.is_finished() and not any(t.user_attrs.get(a) for a in skip) for t in trials)


def disagreements(trials: list[FrozenTrial]) -> list[int]:
    """Finished trials whose Optuna state and ``status`` attribute disagree.

    A trial without a status (no result) must be FAIL and interrupted, or a waiting copy of
    an interrupted one (``reused``), as tests/test_proposals.py holds.
    """
    return [
        t.number
        for t in trials
        if t.state.is_finished()
        and (
            STATE_OF_STATUS.get(t.user_attrs["status"]) != t.state.name
            if "status" in t.user_attrs
            else t.state != TrialState.FAIL
            or not (t.user_attrs.get("interrupted") or t.user_attrs.get("reused"))
        )
    ]


def requeue_errors(trials: list[FrozenTrial]) -> list[int]:
    """Interrupted trials not re-queued exactly once (none if unsampled or waiting)."""
    retries: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if "retry_of" in t.user_attrs:
            retries.setdefault(t.user_attrs["retry_of"], []).append(t)
    bad = []
    for t in (t for t in trials if t.user_attrs.get("interrupted")):
        sampled = "candidate" in t.user_attrs or "fixed_params" in t.system_attrs
        due = int(sampled and "waits_for" not in t.user_attrs)
        mine = retries.get(t.number, [])
        same = all(r.params == t.params for r in mine if "candidate" in r.user_attrs)
        if len(mine) != due or ("candidate" in t.user_attrs and not same):
            bad.append(t.number)
    return bad


def phase(trials: list[FrozenTrial], since: dt.datetime) -> str:
    """Where a kill landed, from the trials the killed run started."""
    mine = [t for t in trials if t.datetime_start and t.datetime_start >= since]
    running = [t for t in mine if t.state == TrialState.RUNNING]
    if any("result" in t.user_attrs for t in running):
        return "in tell"
    if any("candidate" in t.user_attrs for t in running):
        return "mid-trial"
    return "sampling" if running else "between trials" if mine else "start-up"


def evaluate(out: Outcome, trials: list[FrozenTrial], snaps: list, rc: int | None, kills: int):
    """Add one study's end state to ``out`` (``kills``: those it went through)."""
    out.studies += 1
    out.counted.append(counted(trials))
    if rc == 0 and out.counted[-1] == out.n_trials:
        out.kills_survived += kills
    final = snapshot(trials)
    out.lost += len(set().union(*(lost(s, final) for s in snaps)))
    out.trained_twice += trained_twice(trials)
    out.running_left += sum(t.state == TrialState.RUNNING for t in trials)
    bad, attrs = disagreements(trials), {t.number: t for t in trials}
    out.disagreements += len(bad)
    out.details.setdefault("disagreeing", []).extend(
        f"{n} {attrs[n].state.name} status={attrs[n].user_attrs.get('status')}" for n in bad[:5]
    )
    out.requeue_errors += len(requeue_errors(trials))
    interrupted = sum(bool(t.user_attrs.get("interrupted")) for t in trials)
    out.details["interrupted"] = out.details.get("interrupted", 0) + interrupted


# -- scenarios -----------------------------------------------------------------------------

"""Sampling a candidate before its trial exists, so that a re-proposal costs one write.

A converged TPE often re-proposes a known candidate (the driver then stores a copy that
takes over the known result). Sampled into a stored trial, each re-proposal cost the
trial's creation, one write per parameter, the sampler's own trial attributes, the
candidate and each field of the reused result. Sampled here, against the study's storage
for every read but into a trial kept in memory, the outcome is stored afterwards as one
complete trial, in one write, whichever it is (new, waiting on a running copy, reused).

:func:`draft` runs the study's sampler through the ordinary ``optuna.Trial`` over a copy of
the study whose storage is :class:`ScratchStorage`: reads go to the study's storage, and
what Optuna and the sampler write to the drafted trial (its parameters, TPE's relative
parameters, NSGA-II's generation) stays in the draft, to be stored with it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from autopeft.core.candidate import Candidate
    from autopeft.core.resolve import ResolvedSpace

#: The drafted trial's id and number: no stored trial has them (TPE's constant liar and the
#: pool samplers leave out the trial being sampled by its number).
DRAFT_ID = -1


class ScratchStorage:
    """The study's storage for every trial but the draft, which lives in memory."""

    def __init__(self, storage: Any, trial: FrozenTrial) -> None:
        self._storage, self.trial = storage, trial

    def __getattr__(self, name: str) -> Any:
        if name in ("_storage", "trial"):  # not set yet (copying)
            raise AttributeError(name)
        return getattr(self._storage, name)

    def get_trial(self, trial_id: int) -> FrozenTrial:  # noqa: D102 -- BaseStorage's
        return self.trial if trial_id == DRAFT_ID else self._storage.get_trial(trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:  # noqa: D102
        if trial_id == DRAFT_ID:
            return dict(self.trial.system_attrs)
        return self._storage.get_trial_system_attrs(trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:  # noqa: D102
        if trial_id == DRAFT_ID:
            return dict(self.trial.user_attrs)
        return self._storage.get_trial_user_attrs(trial_id)

    def set_trial_param(  # noqa: D102
        self, trial_id: int, name: str, internal: float, distribution: BaseDistribution
    ) -> None:
        if trial_id != DRAFT_ID:
            return self._storage.set_trial_param(trial_id, name, internal, distribution)
        self.trial.params[name] = distribution.to_external_repr(internal)
        self.trial.distributions[name] = distribution
        return None

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:  # noqa: D102
        if trial_id != DRAFT_ID:
            return self._storage.set_trial_system_attr(trial_id, key, value)
        self.trial.system_attrs[key] = value
        return None

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:  # noqa: D102
        if trial_id != DRAFT_ID:
            return self._storage.set_trial_user_attr(trial_id, key, value)
        self.trial.user_attrs[key] = value
        return None


@dataclass
class Draft:
    """A sampled candidate and the trial that would hold it, not stored yet."""

    trial: FrozenTrial
    candidate: Candidate

    def stored(
        self,
        study: optuna.Study,
        user_attrs: dict[str, Any],
        state: TrialState = TrialState.RUNNING,
        values: list[float] | None = None,
        system_attrs: dict[str, Any] | None = None,
    ) -> int:
        """Store the drafted trial in one write, as ``state``; returns its trial id.

        ``user_attrs`` and ``system_attrs`` add to what the sampling wrote.
        """
        now = datetime.now()
        trial = copy.copy(self.trial)
        trial.state, trial.values = state, values
        trial.datetime_start = now
        trial.datetime_complete = now if state.is_finished() else None
        trial.user_attrs = {**self.trial.user_attrs, **user_attrs}
        trial.system_attrs = {**self.trial.system_attrs, **(system_attrs or {})}
        return study._storage.create_new_trial(study._study_id, trial)


def draft(study: optuna.Study, space: ResolvedSpace) -> Draft:
    """Sample a candidate of ``space`` with the study's sampler into a trial in memory."""
    trial = FrozenTrial(
        number=DRAFT_ID,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=DRAFT_ID,
    )
    scratch = copy.copy(study)  # the same sampler, study id and trial cache
    scratch._storage = ScratchStorage(study._storage, trial)  # type: ignore[assignment]
    candidate = space.sample(optuna.Trial(scratch, DRAFT_ID))
    return Draft(trial, candidate)

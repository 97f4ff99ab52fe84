"""TPE that is told pruned trials' objective values at the rung where halving stopped them.

An experiment (``search_cost.py --ladders '...+fed'``), not a product sampler. Optuna's
multi-objective TPE learns nothing from a PRUNED trial: it has no values, and its place in
the good/bad split goes by trial number (pruned trials carry no intermediate values in a
multi-objective study). Under halving most trials are pruned, so the sampler learns from the
few that finish. This TPE reads the study through a view in which each pruned trial is
COMPLETE with its (rung accuracy, parameters, memory) point
(:meth:`autopeft.search.study.Study.pruned_values`). With ``+oracle`` the rung accuracy is
the final one, so the view is exactly what the sampler would know without halving: the
ceiling of telling the sampler more about pruned trials.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

Partial = Callable[[FrozenTrial], "tuple[list[float], float] | None"]


class PrunedAsComplete:
    """A read view of an Optuna study in which pruned trials are COMPLETE at their rung.

    Everything but the trial lists is the study's own; only samplers read it.
    """

    def __init__(self, study: optuna.Study, partial: Partial):
        self._study, self._partial = study, partial

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Sequence[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        shown = [self._shown(t) for t in trials]
        return [t for t in shown if states is None or t.state in states]

    def get_trials(
        self, deepcopy: bool = True, states: Sequence[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials()

    def _shown(self, trial: FrozenTrial) -> FrozenTrial:
        if trial.state != TrialState.PRUNED:
            return trial
        known = self._partial(trial)
        if known is None:  # pruned before any rung result was recorded
            return trial
        shown = copy.copy(trial)  # shallow: the storage's cached trial stays as it is
        shown.state = TrialState.COMPLETE
        shown._values = list(known[0])
        return shown


class FedTPE(optuna.samplers.BaseSampler):
    """The study's own sampler (the default TPE of ``autopeft.search.samplers``), reading the
    study through a :class:`PrunedAsComplete`."""

    def __init__(self, inner: optuna.samplers.BaseSampler, partial: Partial):
        self._inner, self._partial = inner, partial

    def _view(self, study: optuna.Study) -> Any:
        return PrunedAsComplete(study, self._partial)

    def infer_relative_search_space(self, study, trial):  # noqa: ANN001, ANN201
        return self._inner.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial, search_space):  # noqa: ANN001, ANN201
        return self._inner.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: ANN001, ANN201
        view = self._view(study)
        return self._inner.sample_independent(view, trial, param_name, param_distribution)

    def before_trial(self, study, trial):  # noqa: ANN001, ANN201
        self._inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):  # noqa: ANN001, ANN201
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def feed(study: Any) -> None:
    """Give an ``autopeft`` TPE study (:class:`~autopeft.search.study.Study`) a FedTPE."""
    if study.config.sampler.name != "tpe":
        name = study.config.sampler.name
        raise ValueError(f"+fed is for the tpe sampler, but the study uses {name!r}")
    study.optuna.sampler = FedTPE(study.optuna.sampler, study.pruned_values)

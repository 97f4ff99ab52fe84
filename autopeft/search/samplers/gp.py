"""GP: Optuna's Gaussian-process sampler (log expected hypervolume improvement)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

#: Above this many complete trials Optuna's GPSampler is fitted on this many: the front,
#: then a seeded random sample of the rest (its GPs model every objective and the budget
#: constraint, 4 fits on every trial: 8-12 s a proposal at 200 trials, bench/results/
#: sampler_cost.md).
FIT_ROWS = 128
#: Acquisition search of a large study: QMC samples of LogEHVI (Optuna's 128), random
#: candidates scored before the local searches (2,048) and local searches (10).
LARGE_QMC_SAMPLES, LARGE_PRELIMINARY, LARGE_LOCAL_SEARCH = 16, 512, 4


def capped_gp_sampler(seed: int | None, n_startup_trials: int) -> BaseSampler:
    """A ``GPSampler`` that fits at most :data:`FIT_ROWS` trials and searches less when large.

    Optuna has no public option for either: the rows are chosen in an override of
    ``GPSampler._sample_relative_impl`` and the search sizes are its private attributes
    (optuna 5.0). Where a later Optuna lacks them, it is the plain ``GPSampler``.
    """
    import random

    from optuna.samplers import GPSampler
    from optuna.study import StudyDirection

    from autopeft.search.acquisition import fit_subset, nondominated

    knobs = {
        "_n_qmc_samples_ehvi": LARGE_QMC_SAMPLES,
        "_n_preliminary_samples": LARGE_PRELIMINARY,
        "_n_local_search": LARGE_LOCAL_SEARCH,
    }

    class CappedGPSampler(GPSampler):
        """``GPSampler`` over at most :data:`FIT_ROWS` complete trials."""

        def _sample_relative_impl(self, study, completed_trials, running_trials, search_space):
            large = len(completed_trials) > FIT_ROWS
            saved = {k: getattr(self, k) for k in knobs if hasattr(self, k)}
            if large:
                signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
                feasible = [
                    i
                    for i, t in enumerate(completed_trials)
                    if all(v <= 0 for v in (t.constraints or {}).values())
                ]
                values = [
                    [s * v for s, v in zip(signs, completed_trials[i].values)] for i in feasible
                ]
                front = [feasible[i] for i in nondominated(values)] if values else []
                draws = random.Random(
                    None if seed is None else seed * 1_000_003 + len(completed_trials)
                )
                rows = fit_subset(front, len(completed_trials), FIT_ROWS, draws)
                completed_trials = [completed_trials[i] for i in rows]
                for k in saved:
                    setattr(self, k, knobs[k])
            try:
                return super()._sample_relative_impl(
                    study, completed_trials, running_trials, search_space
                )
            finally:
                for k, v in saved.items():
                    setattr(self, k, v)

    if not hasattr(GPSampler, "_sample_relative_impl"):
        return GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    return CappedGPSampler(seed=seed, n_startup_trials=n_startup_trials)


@register
class GP(SamplerSpec):
    """Optuna's ``GPSampler`` over the encoded parameters of the space."""

    name = "gp"
    summary = "GP: Optuna's Gaussian-process Bayesian optimisation"
    deterministic = True
    fit_seconds = 0.5

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A seeded ``GPSampler``, capped in large studies (:func:`capped_gp_sampler`)."""
        return capped_gp_sampler(inputs.cfg.seed, self.startup(inputs.cfg))

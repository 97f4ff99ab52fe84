"""GP: Optuna's Gaussian-process sampler (log expected hypervolume improvement)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


@register
class GP(SamplerSpec):
    """Optuna's ``GPSampler`` over the encoded parameters of the space."""

    name = "gp"
    summary = "GP: Optuna's Gaussian-process Bayesian optimisation"
    deterministic = True
    fit_seconds = 0.5

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A seeded ``GPSampler``."""
        from optuna.samplers import GPSampler

        return GPSampler(seed=inputs.cfg.seed, n_startup_trials=self.startup(inputs.cfg))

"""TPE: Optuna's multivariate tree-structured Parzen estimator (the default sampler)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


@register
class TPE(SamplerSpec):
    """Multivariate, grouped TPE with the constant liar for parallel workers."""

    name = "tpe"
    summary = "TPE: multivariate tree-structured Parzen estimator (the default)"
    # bench/results/search_quality_10seeds.md: random search's HV@100 in 37 trials with 5.
    default_startup = 5

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A seeded ``TPESampler``; running trials are pending (the constant liar)."""
        import optuna

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=inputs.cfg.seed,
            n_startup_trials=self.startup(inputs.cfg),
            multivariate=True,
            group=True,  # one group: every trial has every parameter (core/resolve.py)
            constant_liar=True,
        )

"""NSGA-II: Optuna's genetic algorithm, the start-up trials forming its first generation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


@register
class NSGA2(SamplerSpec):
    """``NSGAIISampler`` with ``n_startup_trials`` as the population size."""

    name = "nsga2"
    summary = "NSGA-II: genetic algorithm (n_startup_trials is the population size)"
    default_startup = 20

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A seeded ``NSGAIISampler``."""
        from optuna.samplers import NSGAIISampler

        # The first generation is the start-up: Optuna's 50 never leaves it in a 100-trial
        # study whose halving prunes most trials (only complete ones form generations).
        return NSGAIISampler(seed=inputs.cfg.seed, population_size=max(self.startup(inputs.cfg), 2))

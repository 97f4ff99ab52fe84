"""Random search: every parameter drawn uniformly, independently of the trials so far."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


@register
class RandomSearch(SamplerSpec):
    """Optuna's ``RandomSampler``: the baseline every other sampler must beat."""

    name = "random"
    summary = "random search: parameters drawn uniformly (the baseline)"

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A seeded ``RandomSampler``."""
        from optuna.samplers import RandomSampler

        return RandomSampler(seed=inputs.cfg.seed)

"""Random search: every parameter drawn uniformly, independently of the trials so far."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from autopeft.core.study_config import SamplerConfig
    from autopeft.search.pool import Oracle, Partial


@register
class RandomSearch(SamplerSpec):
    """Optuna's ``RandomSampler``: the baseline every other sampler must beat."""

    name = "random"
    summary = "random search: parameters drawn uniformly (the baseline)"

    def build(
        self,
        cfg: SamplerConfig,
        oracle: Oracle | None,
        metrics: list[str] | None,
        partial: Partial | None,
    ) -> BaseSampler:
        """A seeded ``RandomSampler``."""
        from optuna.samplers import RandomSampler

        return RandomSampler(seed=cfg.seed)

"""GP: Optuna's Gaussian-process sampler (log expected hypervolume improvement)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from autopeft.core.study_config import SamplerConfig
    from autopeft.search.pool import Oracle, Partial


@register
class GP(SamplerSpec):
    """Optuna's ``GPSampler`` over the encoded parameters of the space."""

    name = "gp"
    summary = "GP: Optuna's Gaussian-process Bayesian optimisation"
    deterministic = True
    fit_seconds = 0.5

    def build(
        self,
        cfg: SamplerConfig,
        oracle: Oracle | None,
        metrics: list[str] | None,
        partial: Partial | None,
    ) -> BaseSampler:
        """A seeded ``GPSampler``."""
        from optuna.samplers import GPSampler

        return GPSampler(seed=cfg.seed, n_startup_trials=self.startup(cfg))

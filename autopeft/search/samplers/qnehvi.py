"""qNEHVI: BoTorch's qLogNEHVI over a pool of unseen candidates, one GP fit per proposal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from autopeft.core.study_config import SamplerConfig
    from autopeft.search.pool import Oracle, Partial


@register
class QNEHVI(SamplerSpec):
    """:class:`autopeft.search.pool.PoolSampler` with a maximum-likelihood GP and q = 1."""

    name = "qnehvi"
    summary = "qNEHVI: BoTorch GP over unseen candidates, known objectives exact"
    # Chooses among unseen candidates: it re-proposes none, but a re-ask refits the model.
    deterministic = True
    pool = True
    fit_seconds = 1.5

    def build(
        self,
        cfg: SamplerConfig,
        oracle: Oracle | None,
        metrics: list[str] | None,
        partial: Partial | None,
    ) -> BaseSampler:
        """A :class:`~autopeft.search.pool.PoolSampler` (``gp`` surrogate, one per fit)."""
        from autopeft.search.pool import PoolSampler

        assert oracle is not None and metrics is not None  # make_sampler checked
        return PoolSampler(oracle, metrics, "gp", 1, self.startup(cfg), cfg.seed, partial)

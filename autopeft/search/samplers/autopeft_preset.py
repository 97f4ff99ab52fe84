"""The AutoPEFT paper's preset: SAAS GP + qNEHVI, 100 random trials, batches of 4."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


#: The AutoPEFT paper's schedule: 100 random initial trials, then the BO proposals.
AUTOPEFT_STARTUP = 100
#: The paper's batch: proposals made from one SAAS fit (a q-batch of qNEHVI).
AUTOPEFT_BATCH = 4


@register
class AutoPEFT(SamplerSpec):
    """:class:`autopeft.search.pool.PoolSampler` with a SAAS GP fitted by NUTS, q-batches.

    Past :data:`autopeft.search.pool.FIT_ROWS` trials NUTS fits that many rows (one compiled
    kernel, reused) and the pool is scored by analytic EHVI averaged over the MCMC draws
    (:func:`autopeft.search.acquisition.choose_large`).
    """

    name = "autopeft"
    summary = "AutoPEFT preset: SAAS GP + qNEHVI, 100 random trials, batches of 4"
    default_startup = AUTOPEFT_STARTUP
    deterministic = True
    pool = True
    fit_seconds = (
        10.0  # SAAS by NUTS: JAX compiles afresh for each fit (autopeft.search.acquisition.fit_gp)
    )
    default_batch_size = AUTOPEFT_BATCH

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A :class:`~autopeft.search.pool.PoolSampler` (``saas``, ``batch_size`` per fit)."""
        from autopeft.search.pool import PoolSampler

        oracle, metrics = inputs.oracle, inputs.metrics
        assert oracle is not None and metrics is not None  # make_sampler checked
        q = inputs.cfg.batch_size or AUTOPEFT_BATCH
        return PoolSampler(
            oracle, metrics, "saas", q, self.startup(inputs.cfg), inputs.cfg.seed, inputs.partial
        )

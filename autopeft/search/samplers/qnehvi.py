"""qNEHVI: BoTorch's qLogNEHVI over a pool of unseen candidates, one GP fit per proposal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft.search.samplers import register
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


@register
class QNEHVI(SamplerSpec):
    """:class:`autopeft.search.pool.PoolSampler` with a maximum-likelihood GP and q = 1.

    Past :data:`autopeft.search.pool.FIT_ROWS` trials the GP is fitted on that many and the
    pool scored by analytic EHVI (:func:`autopeft.search.acquisition.choose_large`).
    """

    name = "qnehvi"
    summary = "qNEHVI: BoTorch GP over unseen candidates, known objectives exact"
    # Chooses among unseen candidates: it re-proposes none, but a re-ask refits the model.
    deterministic = True
    pool = True
    fit_seconds = 1.5

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """A :class:`~autopeft.search.pool.PoolSampler` (``gp`` surrogate, one per fit)."""
        from autopeft.search.pool import PoolSampler

        oracle, metrics = inputs.oracle, inputs.metrics
        assert oracle is not None and metrics is not None  # make_sampler checked
        return PoolSampler(
            oracle, metrics, "gp", 1, self.startup(inputs.cfg), inputs.cfg.seed, inputs.partial
        )

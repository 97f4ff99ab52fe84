"""The contract every sampler implements (one file per sampler, one registration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from autopeft.core.study_config import SamplerConfig
    from autopeft.search.pool import Oracle, Partial

#: ``n_startup_trials`` of a sampler that declares no default of its own.
DEFAULT_STARTUP = 10


@dataclass(frozen=True)
class SamplerInputs:
    """What a sampler is built from."""

    #: The study's sampler section (its ``seed`` is this driver's seed).
    cfg: SamplerConfig
    #: The study's space, profile, budget and exact-cost predictor (pool samplers).
    oracle: Oracle | None = None
    #: The study's objective metrics, in order (pool samplers).
    metrics: list[str] | None = None
    #: A pruned trial's objective values and fidelity (for model fits).
    partial: Partial | None = None


class SamplerSpec:
    """A sampler a study can name: its traits as class attributes and a :meth:`build`.

    The traits are plain data, so validating a study (which reads ``name`` and ``pool``)
    imports no optuna; :meth:`build` imports what the sampler needs.
    """

    #: Registered name (the study's ``sampler.name``).
    name: ClassVar[str]
    #: One line for ``autopeft samplers``.
    summary: ClassVar[str]
    #: ``n_startup_trials`` when the study leaves it out (random trials before the model).
    default_startup: ClassVar[int] = DEFAULT_STARTUP
    #: Re-asked after proposing a known candidate, it proposes the same one again (after a
    #: model fit of seconds), so a random proposal replaces it at once
    #: (:func:`autopeft.search.samplers.repeat_patience`).
    deterministic: ClassVar[bool] = False
    #: Chooses among unseen candidates of the study's space with the known objectives exact
    #: (:mod:`autopeft.search.pool`): :meth:`build` needs the oracle and the objectives, and
    #: the study a measured objective to model (checked when the study file is read).
    pool: ClassVar[bool] = False
    #: Typical seconds of the model fit behind one proposal, on one CPU core with a few dozen
    #: trials (0: no fit worth counting). Tests and benchmarks give samplers that fit fewer
    #: proposals; the contract test marks a sampler's checks ``slow`` from 5 s.
    fit_seconds: ClassVar[float] = 0.0
    #: Proposals evaluated at once by the Ray executor when the study sets no
    #: ``sampler.batch_size`` (None: as many as resources allow).
    default_batch_size: ClassVar[int | None] = None

    def startup(self, cfg: SamplerConfig) -> int:
        """The study's ``n_startup_trials``, else this sampler's default."""
        return self.default_startup if cfg.n_startup_trials is None else cfg.n_startup_trials

    def build(self, inputs: SamplerInputs) -> BaseSampler:
        """The Optuna sampler for one study (``inputs.cfg.seed`` is this driver's seed)."""
        raise NotImplementedError

"""Samplers by name: a registry of :class:`SamplerSpec` types, one file per sampler.

Built-in samplers (``random``, ``tpe``, ``nsga2``, ``gp``, ``qnehvi``, ``autopeft``) live one
per file in this package and register with :func:`register`; third-party packages add
samplers through the ``autopeft.samplers`` entry-point group. Adding a sampler is adding a
file: the contract test (:mod:`autopeft.testing.sampler_contract`) runs every registered one.
Importing this package imports no optuna (specs import it in ``build``), so a study's sampler
name is validated against :func:`registry` without it.

The study records a ``budget`` constraint on every finished trial (Optuna 5's
``Trial.set_constraint``), which Optuna's samplers read, so over-budget and out-of-memory
candidates are learned as infeasible rather than proposed again; the pool samplers
(:mod:`autopeft.search.pool`) leave over-budget candidates out of their pools and fit only
feasible trials. Parallel workers are kept apart by pending-trial awareness: TPE's constant
liar; running trials enter qNEHVI as X_pending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autopeft.registry import Registry
from autopeft.search.samplers.base import SamplerInputs, SamplerSpec

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from autopeft.core.study_config import SamplerConfig
    from autopeft.search.pool import Oracle, Partial


_REGISTRY: Registry[SamplerSpec] = Registry("sampler", __name__, __path__, {"base"})
register = _REGISTRY.register


def registry() -> dict[str, SamplerSpec]:
    """All registered samplers by name (``autopeft samplers`` lists them)."""
    return _REGISTRY.all()


def get(name: str) -> SamplerSpec:
    """The sampler ``name`` (KeyError if unknown)."""
    return _REGISTRY.get(name)


def repeat_patience(cfg: SamplerConfig) -> int:
    """Re-proposals of known candidates in a row before a random proposal replaces the next.

    Stochastic samplers (TPE, NSGA-II) often propose something new when asked again; the
    deterministic ones do not.
    """
    spec = registry().get(cfg.name)
    return 1 if spec is not None and spec.deterministic else 3


def make_sampler(
    cfg: SamplerConfig,
    oracle: Oracle | None = None,
    metrics: list[str] | None = None,
    partial: Partial | None = None,
) -> BaseSampler:
    """Build the sampler named in the study.

    ``oracle`` and ``metrics`` (the space and the objectives) are needed by the pool samplers
    (``qnehvi``, ``autopeft``), which choose among unseen candidates with the known
    objectives exact (:mod:`autopeft.search.pool`); ``partial`` gives them pruned trials'
    rung results.

    Raises:
        ValueError: the name is not registered, or a pool sampler lacks the oracle.
    """
    spec = registry().get(cfg.name)
    if spec is None:
        raise ValueError(f"unknown sampler {cfg.name!r}")
    if spec.pool and (oracle is None or metrics is None):
        raise ValueError(f"the {cfg.name} sampler needs the study's space and objectives")
    return spec.build(SamplerInputs(cfg, oracle, metrics, partial))


def __getattr__(name: str) -> Any:
    # Names of the former samplers.py, derived from the registry (read lazily: computing
    # them at import would import every sampler file while this package is half made).
    if name == "DETERMINISTIC":
        return tuple(n for n, s in registry().items() if s.deterministic)
    if name == "STARTUP_DEFAULTS":
        return {n: s.default_startup for n, s in registry().items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SamplerInputs",
    "SamplerSpec",
    "get",
    "make_sampler",
    "register",
    "registry",
    "repeat_patience",
]

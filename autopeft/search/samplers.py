"""Samplers by name: random, TPE, NSGA-II, Optuna GP, BoTorch qNEHVI and the AutoPEFT preset.

The study records a ``budget`` constraint on every finished trial (Optuna 5's
``Trial.set_constraint``), which Optuna's samplers read, so over-budget and out-of-memory
candidates are learned as infeasible rather than proposed again; ``qnehvi`` and ``autopeft``
(:mod:`autopeft.search.pool`) leave over-budget candidates out of their pools and fit only
feasible trials. Parallel workers are kept apart by pending-trial awareness: TPE's constant
liar; running trials enter qNEHVI as X_pending.
"""

from __future__ import annotations

import warnings

import optuna

from autopeft.core.study_config import POOL_SAMPLERS, SamplerConfig
from autopeft.search.pool import Oracle, Partial, PoolSampler

#: The AutoPEFT paper's schedule: 100 random initial trials, then the BO proposals.
AUTOPEFT_STARTUP = 100
#: Deterministic model-based samplers: re-asked after proposing a known candidate they
#: propose it again (after a model fit of seconds), so a random proposal replaces it at once.
#: (``qnehvi`` and ``autopeft`` choose among unseen candidates: they re-propose none.)
DETERMINISTIC = ("gp", "qnehvi", "autopeft")
#: The paper's batch: proposals made from one SAAS fit (a q-batch of qNEHVI).
AUTOPEFT_BATCH = 4
#: ``n_startup_trials`` when the study leaves it out (NSGA-II: the population size). TPE's 5:
#: bench/results/search_quality_10seeds.md (random search's HV@100 in 37 trials).
STARTUP_DEFAULTS = {"autopeft": AUTOPEFT_STARTUP, "tpe": 5, "nsga2": 20}


def repeat_patience(cfg: SamplerConfig) -> int:
    """Re-proposals of known candidates in a row before a random proposal replaces the next.

    Stochastic samplers (TPE, NSGA-II) often propose something new when asked again; the
    deterministic ones do not.
    """
    return 1 if cfg.name in DETERMINISTIC else 3


def make_sampler(
    cfg: SamplerConfig,
    oracle: Oracle | None = None,
    metrics: list[str] | None = None,
    partial: Partial | None = None,
) -> optuna.samplers.BaseSampler:
    """Build the sampler named in the study.

    ``oracle`` and ``metrics`` (the space and the objectives) are needed by ``qnehvi`` and
    ``autopeft``, which choose among unseen candidates with the known objectives exact
    (:mod:`autopeft.search.pool`); ``partial`` gives them pruned trials' rung results.
    """
    seed, startup = cfg.seed, cfg.n_startup_trials
    if startup is None:
        startup = STARTUP_DEFAULTS.get(cfg.name, 10)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.name == "tpe":
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup,
            multivariate=True,
            group=True,  # one group: every trial has every parameter (core/resolve.py)
            constant_liar=True,
        )
    if cfg.name == "nsga2":
        # The first generation is the start-up: Optuna's 50 never leaves it in a 100-trial
        # study whose halving prunes most trials (only complete ones form generations).
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(startup, 2))
    if cfg.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if cfg.name in POOL_SAMPLERS:
        if oracle is None or metrics is None:
            raise ValueError(f"the {cfg.name} sampler needs the study's space and objectives")
        # The paper's SAAS fit yields a q-batch; one proposal per fit for the plain GP.
        q = (cfg.batch_size or AUTOPEFT_BATCH) if cfg.name == "autopeft" else 1
        surrogate = "saas" if cfg.name == "autopeft" else "gp"
        return PoolSampler(oracle, metrics, surrogate, q, startup, seed, partial)
    raise ValueError(f"unknown sampler {cfg.name!r}")

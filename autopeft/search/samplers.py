"""Samplers by name: random, TPE, NSGA-II, Optuna GP, BoTorch qNEHVI and the AutoPEFT preset.

The study records a ``budget`` constraint on every finished trial (Optuna 5's
``Trial.set_constraint``), which every sampler here reads, so over-budget and out-of-memory
candidates are learned as infeasible rather than proposed again. Parallel
workers are kept apart by pending-trial awareness: TPE's constant liar, BoTorch's
``consider_running_trials`` (running trials enter qNEHVI as X_pending).
"""

from __future__ import annotations

import warnings

import optuna

from autopeft.core.study_config import SamplerConfig

#: The AutoPEFT paper's schedule: 100 random initial trials, then the BO proposals.
AUTOPEFT_STARTUP = 100
#: Deterministic model-based samplers: re-asked after proposing a known candidate they
#: propose it again (after a model fit of seconds), so a random proposal replaces it at once.
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


def make_sampler(cfg: SamplerConfig) -> optuna.samplers.BaseSampler:
    """Build the sampler named in the study."""
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
    from optuna_integration import BoTorchSampler

    if cfg.name == "qnehvi":
        from optuna_integration.botorch import qnehvi_candidates_func

        return BoTorchSampler(
            candidates_func=RandomOnFailure(qnehvi_candidates_func),
            n_startup_trials=startup,
            consider_running_trials=True,
            seed=seed,
        )
    if cfg.name == "autopeft":
        return BoTorchSampler(
            candidates_func=RandomOnFailure(BatchedCandidates(cfg.batch_size or AUTOPEFT_BATCH)),
            n_startup_trials=startup,
            consider_running_trials=True,
            seed=seed,
        )
    raise ValueError(f"unknown sampler {cfg.name!r}")


class RandomOnFailure:
    """A ``candidates_func`` whose numerical failures become a random proposal.

    BoTorch's acquisition optimiser can fail on a degenerate posterior (NaN gradients raise
    ``OptimizationGradientError``); that must cost one model-based proposal, not the study
    (it ended a 200-trial ``autopeft`` benchmark run at trial 122).
    """

    def __init__(self, func):
        self.func = func
        self.failures = 0

    def __call__(self, train_x, train_obj, train_con, bounds, pending_x):
        """The wrapped proposal, or a uniform one within ``bounds`` if it raised."""
        import torch

        try:
            return self.func(train_x, train_obj, train_con, bounds, pending_x)
        except Exception as err:  # noqa: BLE001 -- any BO failure: propose at random instead
            self.failures += 1
            warnings.warn(
                f"model-based proposal failed ({type(err).__name__}: {err}); "
                "a random proposal replaces it",
                RuntimeWarning,
                stacklevel=2,
            )
            rng = torch.Generator().manual_seed(len(train_x))  # reproducible per history
            unit = torch.rand(bounds.shape[1], generator=rng, dtype=bounds.dtype)
            return (bounds[0] + (bounds[1] - bounds[0]) * unit).unsqueeze(0)


class BatchedCandidates:
    """A BoTorch ``candidates_func`` that proposes ``q`` configurations per SAAS fit.

    As in the AutoPEFT paper, one fully Bayesian fit yields a q-batch of qNEHVI proposals
    (chosen greedily, each conditioned on the ones before it); the sampler hands them out one
    per ``ask`` and fits again once they are used up. Measured at 110 trials on one (shared)
    CPU core: NUTS fits of 3 outcomes 48 s, acquisition 10 s for one proposal and 23 s for a
    batch of 4, so a proposal costs ~18 s instead of ~58 s.
    """

    def __init__(self, q: int = AUTOPEFT_BATCH):
        self.q = q
        self.queue: list = []
        self.bounds = None  # the search-space bounds the queued batch was fitted on
        self.fits = self.proposals = 0

    def __call__(self, train_x, train_obj, train_con, bounds, pending_x):
        """The next proposal of the current batch, fitting a new batch when it is used up."""
        import torch

        # Optuna's relative search space (the parameters every finished trial shares) can
        # change between asks under conditional spaces: a batch fitted on other bounds is void.
        if self.queue and not torch.equal(self.bounds, bounds):
            self.queue = []
        if not self.queue:
            batch = saas_qnehvi_candidates_func(
                train_x, train_obj, train_con, bounds, pending_x, q=self.q
            )
            self.queue, self.bounds = [row.unsqueeze(0) for row in batch], bounds.clone()
            self.fits += 1
        self.proposals += 1
        return self.queue.pop(0)


def saas_qnehvi_candidates_func(train_x, train_obj, train_con, bounds, pending_x, q=1):
    """``q`` candidates from qLogNEHVI over a SAAS fully Bayesian GP (the AutoPEFT surrogate).

    Mirrors ``optuna_integration.botorch.qnehvi_candidates_func`` (same constraint handling,
    reference point and normalisation) with ``SaasFullyBayesianSingleTaskGP`` fitted by NUTS
    instead of a single-task GP; the MCMC budget is small because trials, not the surrogate,
    are the expensive part.
    """
    import torch
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.objective import IdentityMCMultiOutputObjective
    from botorch.fit import fit_fully_bayesian_model_nuts
    from botorch.models import ModelListGP
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from botorch.utils.transforms import normalize, unnormalize

    n_obj = train_obj.size(-1)
    extra = {}
    train_y = train_obj
    if train_con is not None:
        train_y = torch.cat([train_obj, train_con], dim=-1)
        extra = {
            "objective": IdentityMCMultiOutputObjective(outcomes=list(range(n_obj))),
            "constraints": [(lambda z, i=i: z[..., n_obj + i]) for i in range(train_con.size(-1))],
        }
    x = normalize(train_x, bounds=bounds)
    pending = None if pending_x is None else normalize(pending_x, bounds=bounds)
    models = []
    for i in range(train_y.size(-1)):  # SAAS GPs are single-output: one per outcome
        gp = SaasFullyBayesianSingleTaskGP(
            x, train_y[:, i : i + 1], outcome_transform=Standardize(m=1)
        )
        fit_fully_bayesian_model_nuts(
            gp, warmup_steps=64, num_samples=32, thinning=8, disable_progbar=True
        )
        models.append(gp)
    # NUTS runs in JAX, which compiles afresh for every history length and keeps each
    # executable mapped: ~2,900 memory mappings per proposal exhaust vm.max_map_count (65,530)
    # after ~22 proposals and the process dies (bench/search_cost.py did). The fitted GPs are
    # torch; the compiled JAX code is not needed again.
    import jax

    jax.clear_caches()
    model = ModelListGP(*models)
    acqf = qLogNoisyExpectedHypervolumeImprovement(
        model=model,
        ref_point=(train_obj.min(dim=0).values - 1e-8).tolist(),
        X_baseline=x,
        prune_baseline=True,
        X_pending=pending,
        **extra,
    )
    unit = torch.zeros_like(bounds)
    unit[1] = 1
    cand, _ = optimize_acqf(
        acqf, bounds=unit, q=q, num_restarts=8, raw_samples=256, sequential=q > 1
    )
    return unnormalize(cand.detach(), bounds=bounds)

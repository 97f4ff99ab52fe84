"""Bayesian optimisation over a pool of unseen candidates, with the known objectives exact.

The ``qnehvi`` and ``autopeft`` samplers. A GP (a SAAS fully Bayesian one for ``autopeft``,
as in the AutoPEFT paper) models only what training measures -- the task metric, wall time.
Trainable parameters are exact before training (the method formulas) and memory is the memory
model's prediction, calibrated on the study's measurements, so neither is modelled: qLogNEHVI
runs over a :class:`botorch.models.model.ModelList` of the GPs and a deterministic model.

The acquisition is maximised over a pool of *distinct candidates not yet proposed* -- random
draws of the space plus mutations of the current front -- rather than over a continuous
relaxation of the encoded parameters. Why: with every objective a GP over the relaxed space,
qNEHVI kept choosing points that decode to the head-only candidate (every layer off, so any
sizes), whose parameter count it could not know is exactly the one already seen; ~58 of the
61 trials after the start-up of a 200-trial protocol run were random replacements of such
re-proposals (a protocol run of bench/search_cost.py; bench/LOG.md). A pool of unseen candidates
cannot re-propose, and over-budget candidates are left out of it.

Under successive halving most trials are pruned at a low rung. Their rung accuracy is still
evidence, so they are fitted too, with the fraction of the training they ran as one more input
(the GP learns how accuracy grows with training); proposals, pending trials and the front the
improvement is measured against sit at the full fidelity, 1.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any

import numpy
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study as OptunaStudy
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.core.candidate import Candidate
from autopeft.core.model_profile import ModelProfile
from autopeft.core.resolve import RandomSuggest, ResolvedSpace
from autopeft.core.space import Budget
from autopeft.core.study_config import KNOWN_METRICS

#: Exact parameters, predicted memory (MiB) and an over-budget reason (or None).
Predictor = Callable[[Candidate], tuple[int, float, str | None]]
#: A pruned trial's objective values where it stopped and the fraction of its training it ran
#: (None when it recorded none).
Partial = Callable[[FrozenTrial], tuple[list[float], float] | None]
#: Random draws and mutations of the front per fit (before de-duplication).
POOL_RANDOM, POOL_MUTANTS = 1024, 512
#: A greedy q-batch is chosen among the pool's best candidates by their own (q = 1) value:
#: each greedy step re-scores its choices with the earlier picks pending, so scoring 128
#: instead of ~1,500 cuts most of the cost of a SAAS batch (bench/results/acquisition_cpu.md).
PRESCREEN = 128
#: Monte Carlo samples of qLogNEHVI (BoTorch's default), shared out over a fully Bayesian
#: model's MCMC draws: each draw multiplies the box decompositions, which dominate the cost.
MC_SAMPLES = 128


class FixedSuggest:
    """A :class:`~autopeft.core.resolve.Suggest` that replays recorded parameter values."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """The recorded integer."""
        return self.params[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """The recorded real."""
        return self.params[name]

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """The recorded choice."""
        return self.params[name]


class Oracle:
    """What a sampler can know of a candidate without training it.

    ``predict`` is the executor's budget check (exact parameters, predicted memory, over-budget
    reason); the study starts with a driver-side one and the local executor replaces it with
    its runner's, which predicts at the task's real sequence length and device.
    """

    def __init__(
        self, space: ResolvedSpace, profile: ModelProfile, budget: Budget, predict: Predictor
    ):
        self.space, self.profile, self.budget, self.predict = space, profile, budget, predict

    def draw(self, rng: random.Random) -> dict[str, Any]:
        """Every parameter of a uniformly random candidate."""
        suggest = RandomSuggest()
        suggest.rng = rng
        self.space.sample(suggest)
        return suggest.params

    def candidate(self, params: dict[str, Any]) -> Candidate:
        """The candidate that ``params`` (a full assignment) decode to."""
        return self.space.sample(FixedSuggest(params))

    def known(self, candidate: Candidate) -> tuple[int, float, bool]:
        """Exact parameters, predicted memory, and whether the candidate is within budget.

        The parameter limit is checked here too: a driver-side predictor leaves the budget
        to the trial (:meth:`autopeft.search.study.Study.driver_budget`).
        """
        params, memory, over = self.predict(candidate)
        limit = self.budget.param_limit(self.profile.base_params)
        return params, memory, over is None and (limit is None or params <= limit)


def calibrate(predicted: list[float], measured: list[float]) -> tuple[float, float]:
    """Least-squares ``measured ~ a * predicted + b`` (a ratio with fewer than 3 points)."""
    n = len(predicted)
    if n == 0:
        return 1.0, 0.0
    mean_p, mean_m = sum(predicted) / n, sum(measured) / n
    var = sum((p - mean_p) ** 2 for p in predicted)
    if n < 3 or var <= 1e-12 * max(1.0, mean_p**2):
        return (mean_m / mean_p if mean_p else 1.0), 0.0
    a = sum((p - mean_p) * (m - mean_m) for p, m in zip(predicted, measured)) / var
    return a, mean_m - a * mean_p


class PoolSampler(BaseSampler):
    """qLogNEHVI over unseen candidates: GPs for measured objectives, exact for known ones.

    Args:
        oracle: the space, profile and budget of the study (and its executor's predictor).
        metrics: the study's objective metrics, in order.
        surrogate: ``saas`` (fully Bayesian SAAS GP fitted by NUTS) or ``gp`` (a single-task
            GP fitted by maximum likelihood).
        q: proposals per fit (a greedy q-batch, each conditioned on those before it).
        n_startup_trials: random trials (completed, pruned or running) before the first fit.
        seed: seeds the random start-up, the pools and the fits.
        partial: a pruned trial's values and fidelity (None: pruned trials are not fitted).
    """

    def __init__(
        self,
        oracle: Oracle,
        metrics: list[str],
        surrogate: str = "gp",
        q: int = 1,
        n_startup_trials: int = 10,
        seed: int | None = None,
        partial: Partial | None = None,
    ):
        self.oracle, self.metrics, self.surrogate, self.q = oracle, metrics, surrogate, q
        self.n_startup_trials, self.seed, self.partial = n_startup_trials, seed, partial
        self._random = RandomSampler(seed=seed)
        self.queue: list[dict[str, Any]] = []
        self.fits = self.proposals = self.failures = 0

    def reseed_rng(self) -> None:
        """Reseed the random fallback (Optuna calls this for forked workers)."""
        self._random.reseed_rng()

    def infer_relative_search_space(
        self, study: OptunaStudy, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Every parameter finished trials share (all of them: see core/resolve.py)."""
        return optuna.search_space.intersection_search_space(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        )

    def sample_independent(
        self,
        study: OptunaStudy,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Uniformly random: the start-up trials, and any proposal the model could not make."""
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: OptunaStudy, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The next model-based proposal ({} during the start-up or if the model failed)."""
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False)
        live = [t for t in trials if t.number != trial.number]
        started = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        if sum(t.state in started for t in live) < self.n_startup_trials:
            return {}
        # Each trial's candidate, decoded once per ask (failed trials may be retried).
        decoded = {
            t.number: self.oracle.candidate(t.params)
            for t in live
            if t.state != TrialState.FAIL and set(search_space) <= set(t.params)
        }
        taken = {c.key() for c in decoded.values()}
        while self.queue:  # the rest of the last fit's batch, unless taken meanwhile
            params = self.queue.pop(0)
            fits = set(params) == set(search_space)
            if fits and self.oracle.candidate(params).key() not in taken:
                self.proposals += 1
                return params
        try:
            self.queue = self._fit_and_choose(study, live, decoded, search_space, taken)
        except Exception as err:  # noqa: BLE001 -- a numerical BO failure costs one proposal
            self.failures += 1
            warnings.warn(
                f"model-based proposal failed ({type(err).__name__}: {err}); "
                "a random proposal replaces it",
                RuntimeWarning,
                stacklevel=2,
            )
            return {}
        if not self.queue:  # every candidate of the pool is known: let random search try
            return {}
        self.fits += 1
        self.proposals += 1
        return self.queue.pop(0)

    # -- the fit ------------------------------------------------------------------------------

    def _fit_and_choose(self, study, live, decoded, search_space, taken) -> list[dict[str, Any]]:
        import torch
        from botorch.utils.sampling import manual_seed
        from optuna._transform import _SearchSpaceTransform

        from autopeft.core.pareto import pareto_front

        signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        train, values, fidelity = self._training_rows(live, decoded, signs)
        if len(train) < 2:
            return []
        running = [t for t in live if t.state == TrialState.RUNNING and t.number in decoded]
        # Seeded studies draw the same pools and fits on a rerun; unseeded ones differ.
        draws = random.randrange(2**31) if self.seed is None else self.seed * 1_000_003 + len(live)
        rng = random.Random(draws)
        complete = train[: fidelity.count(1.0)]  # full-fidelity rows come first
        front = pareto_front(values[: len(complete) or len(train)], ["maximize"] * len(signs))
        parents = [train[i].params for i in front]
        pool = self._pool(rng, parents, list(search_space), taken)
        if not pool:
            return []
        exact = [i for i, m in enumerate(self.metrics) if m in KNOWN_METRICS]
        modelled = [i for i in range(len(self.metrics)) if i not in exact]
        if not modelled:
            raise ValueError("no measured objective to model (every objective is exact)")
        cands = [decoded[t.number] for t in train + running]
        exact_values = self._exact_values(complete, cands + [c for _, c in pool], exact, signs)

        trans = _SearchSpaceTransform(search_space)
        bounds = torch.from_numpy(trans.bounds).T
        span = (bounds[1] - bounds[0]).clamp_min(1e-12)

        def encode(rows: list[dict[str, Any]]) -> torch.Tensor:
            x = torch.from_numpy(numpy.array([trans.transform(p) for p in rows], dtype=float))
            return ((x - bounds[0]) / span).reshape(len(rows), len(bounds[0]))

        with manual_seed(draws % 2**31):
            chosen = choose(
                encode([t.params for t in train]),
                torch.tensor(values, dtype=torch.float64)[:, modelled],
                encode([t.params for t in running]) if running else None,
                encode([p for p, _ in pool]),
                exact_values,
                min(self.q, len(pool)),
                self.surrogate,
                torch.tensor(fidelity, dtype=torch.float64),
            )
        return [pool[i][0] for i in chosen]

    def _training_rows(self, live, decoded, signs):
        """One row per distinct candidate: its full-fidelity result, else its furthest rung.

        Returns the trials, their values (maximising signs) and the fraction of training each
        value was measured at. Re-proposed (reused) trials repeat a candidate: one counts.
        """
        best: dict[str, tuple[FrozenTrial, list[float], float]] = {}
        for t in live:
            if t.number not in decoded:
                continue
            if t.state == TrialState.COMPLETE:
                if any(v > 0 for v in (t.constraints or {}).values()):
                    continue  # infeasible: its values are placeholders
                row = (t, list(t.values), 1.0)
            elif t.state == TrialState.PRUNED and self.partial is not None:
                got = self.partial(t)
                if got is None or not 0.0 < got[1] < 1.0:
                    continue
                row = (t, *got)
            else:
                continue
            key = decoded[t.number].key()
            if key not in best or row[2] > best[key][2]:
                best[key] = row
        rows = sorted(best.values(), key=lambda r: r[2] < 1.0)  # stable: complete ones first
        values = [[s * v for s, v in zip(signs, r[1])] for r in rows]
        return [r[0] for r in rows], values, [r[2] for r in rows]

    def _pool(self, rng, parents, names, taken) -> list[tuple[dict[str, Any], Candidate]]:
        """Distinct, within-budget candidates not yet taken: random draws and front mutants."""
        rows = [self.oracle.draw(rng) for _ in range(POOL_RANDOM)]
        for _ in range(POOL_MUTANTS if parents else 0):
            child, donor = dict(rng.choice(parents)), self.oracle.draw(rng)
            for name in rng.sample(names, k=min(len(names), rng.choice((1, 1, 2, 3)))):
                child[name] = donor[name]
            rows.append(child)
        out, keys = [], set(taken)
        for params in rows:
            if set(params) != set(names):
                continue
            candidate = self.oracle.candidate(params)
            key = candidate.key()
            if key not in keys:
                keys.add(key)
                if self.oracle.known(candidate)[2]:
                    out.append((params, candidate))
        return out

    def _exact_values(self, complete, cands, exact, signs):
        """Exact objectives (maximising signs) of ``cands``, the ``complete`` trials' first.

        Memory is the predictor's, mapped onto the study's measurements by a linear fit (the
        identity when they are the predictions themselves).
        """
        import torch

        known = [self.oracle.known(c) for c in cands]
        cols = []
        for i in exact:
            metric = self.metrics[i]
            if metric == "trainable_params":
                col = [float(k[0]) for k in known]
            else:
                predicted = [k[1] for k in known]
                measured = [t.values[i] for t in complete]
                a, b = calibrate(predicted[: len(complete)], measured)
                col = [a * p + b for p in predicted]
            cols.append([signs[i] * v for v in col])
        return torch.tensor(cols, dtype=torch.float64).T.reshape(len(cands), len(exact))


def choose(x_train, y_train, x_pending, x_pool, exact, q, surrogate, fidelity=None) -> list[int]:
    """Indices of ``q`` pool rows maximising qLogNEHVI (greedy, each conditioned on the last).

    Args:
        x_train: encoded training candidates in [0, 1]^d.
        y_train: their measured objectives (maximised), one column per GP.
        x_pending: encoded running trials, or None.
        x_pool: encoded pool candidates.
        exact: exact objectives (maximised) of the training, pending and pool rows, in order.
        q: proposals wanted.
        surrogate: ``saas`` or ``gp``.
        fidelity: the fraction of training each training row was measured at, full-fidelity
            rows first (None: all 1). Below 1 anywhere, it becomes one more GP input and
            everything else is evaluated at 1.
    """
    import torch

    rows = torch.cat([x_train] + ([x_pending] if x_pending is not None else []) + [x_pool])
    x_fit, x_baseline, x_pending, x_pool = with_fidelity(x_train, x_pending, x_pool, fidelity)
    gps = [fit_gp(x_fit, y_train[:, i : i + 1], surrogate) for i in range(y_train.shape[1])]
    acqf = acquisition(gps, y_train, rows, exact, x_baseline, x_pending)
    return select(acqf, x_pool, q)


def with_fidelity(x_train, x_pending, x_pool, fidelity):
    """The GP's inputs, the baseline, pending and pool rows (a fidelity column if needed).

    Improvement is measured over the front of the complete trials, the one a study reports,
    and proposals and running trials sit at the full fidelity.
    """
    import torch

    if fidelity is None or not bool((fidelity < 1).any()):
        return x_train, x_train, x_pending, x_pool

    def at(x, f=1.0):
        if x is None:
            return None
        column = torch.as_tensor(f, dtype=x.dtype).expand(len(x)).reshape(-1, 1)
        return torch.cat([x, column], dim=-1)

    complete = int((fidelity >= 1).sum())
    return at(x_train, fidelity), at(x_train[: complete or len(x_train)]), at(x_pending), at(x_pool)


def acquisition(gps, y_train, rows, exact, x_baseline, x_pending, mc_samples=None):
    """The qLogNEHVI of the GPs and the exact objectives of ``rows`` (a nearest-row lookup).

    ``mc_samples`` (None: :data:`MC_SAMPLES` shared out over a fully Bayesian model's MCMC
    draws; a GP fitted by likelihood gets BoTorch's default, the same 128).
    """
    import torch
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.models.deterministic import GenericDeterministicModel
    from botorch.models.model import ModelList
    from botorch.sampling.get_sampler import get_sampler

    d = rows.shape[-1]

    def lookup(x: torch.Tensor) -> torch.Tensor:
        # The acquisition only sees training, pending and pool rows: read their exact values.
        index = torch.cdist(x[..., :d].reshape(-1, d), rows).argmin(dim=-1)
        return exact[index].reshape(*x.shape[:-1], exact.shape[-1])

    models = list(gps)
    if exact.shape[-1]:
        models.append(GenericDeterministicModel(lookup, num_outputs=exact.shape[-1]))
    model = ModelList(*models)
    draws = getattr(gps[0], "num_mcmc_samples", 1)
    if mc_samples is None and draws > 1:
        mc_samples = max(16, MC_SAMPLES // draws)
    sampler = None
    if mc_samples is not None:
        shape = torch.Size([mc_samples])
        sampler = get_sampler(model.posterior(x_baseline[:1]), sample_shape=shape)
    observed = torch.cat([y_train, exact[: len(y_train)]], dim=-1)
    return qLogNoisyExpectedHypervolumeImprovement(
        model=model,
        ref_point=(observed.min(dim=0).values - 1e-8).tolist(),
        X_baseline=x_baseline,
        sampler=sampler,
        prune_baseline=True,
        X_pending=x_pending,
    )


def select(acqf, x_pool, q: int, prescreen: int | None = None) -> list[int]:
    """Greedy q-batch of pool rows; for q > 1 among the ``prescreen`` best by own value.

    ``prescreen`` None: :data:`PRESCREEN`; 0: the whole pool.
    """
    import torch
    from botorch.optim import optimize_acqf_discrete

    keep = PRESCREEN if prescreen is None else prescreen
    choices = x_pool
    if q > 1 and 0 < keep < len(x_pool):
        with torch.no_grad():
            single = torch.cat([acqf(part.unsqueeze(1)) for part in x_pool.split(256)])
        choices = x_pool[single.topk(keep).indices]
    chosen, _ = optimize_acqf_discrete(acqf, q=q, choices=choices, max_batch_size=256, unique=True)
    return torch.cdist(chosen, x_pool).argmin(dim=-1).tolist()


def fit_gp(x, y, surrogate: str):
    """A GP of one outcome: SAAS by NUTS (small MCMC budget: trials are the expensive part)."""
    from botorch.models.transforms.outcome import Standardize

    if surrogate == "saas":
        from botorch.fit import fit_fully_bayesian_model_nuts
        from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

        gp = SaasFullyBayesianSingleTaskGP(x, y, outcome_transform=Standardize(m=1))
        fit_fully_bayesian_model_nuts(
            gp, warmup_steps=64, num_samples=32, thinning=8, disable_progbar=True
        )
        # NUTS runs in JAX, which compiles afresh for every history length and keeps each
        # executable mapped: ~2,900 memory mappings per fit exhaust vm.max_map_count (65,530)
        # after ~22 fits and the process dies (bench/search_cost.py did). The GP is torch.
        import jax

        jax.clear_caches()
        return gp
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    gp = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    return gp

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

A large study (more than :data:`FIT_ROWS` distinct trials) takes a cheaper path,
:func:`autopeft.search.acquisition.choose_large`: the GP's hyperparameters are fitted on the
front and a random sample of the rest, from the last fit's, its posterior conditioned on more
rows, and the pool is scored by analytic EHVI over the front of the posterior means -- one
box decomposition instead of one per Monte Carlo sample.
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
from autopeft.core.objectives import KNOWN_METRICS
from autopeft.core.resolve import RandomSuggest, ResolvedSpace
from autopeft.core.space import Budget
from autopeft.search import acquisition

#: Exact parameters, predicted memory (MiB) and an over-budget reason (or None).
Predictor = Callable[[Candidate], tuple[int, float, str | None]]
#: A pruned trial's objective values where it stopped and the fraction of its training it ran
#: (None when it recorded none).
Partial = Callable[[FrozenTrial], tuple[list[float], float] | None]
#: Random draws and mutations of the front per fit (before de-duplication).
POOL_RANDOM, POOL_MUTANTS = 1024, 512
#: A study with more distinct training rows than this is *large*: qLogNEHVI's cost grows with
#: the rows (a GP fit of ~900 L-BFGS steps, a box decomposition of the sampled front per MC
#: sample, a joint posterior with the baseline per candidate: 85-160 s a proposal at 500
#: trials), so the GP's hyperparameters are fitted on this many rows -- the observed front,
#: then a seeded random sample of the rest -- its posterior conditioned on all, and the pool
#: is scored by analytic EHVI over the posterior-mean front (``acquisition.choose_large``;
#: bench/results/sampler_cost.md measures both).
FIT_ROWS = 128
#: A large study's pool: random draws and front mutants (drawing, decoding and scoring them
#: is most of what a proposal costs once the fit is capped).
LARGE_POOL_RANDOM, LARGE_POOL_MUTANTS = 512, 256


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
        #: Rows the GP of the last fit was fitted on (FIT_ROWS at most in a large study).
        self.fit_rows = 0
        #: The last large fit's hyperparameters per modelled objective (its warm start).
        self.warm: dict[int, dict[str, Any]] = {}
        self._decoded: dict[int, tuple[dict[str, Any], Candidate]] = {}

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
        # Each trial's candidate (failed trials may be retried): finished ones decoded once.
        decoded = {
            t.number: self._decode(t)
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

    def _decode(self, trial: FrozenTrial) -> Candidate:
        """The trial's candidate, cached while its parameters stay the same."""
        hit = self._decoded.get(trial.number)
        if hit is not None and hit[0] == trial.params:
            return hit[1]
        candidate = self.oracle.candidate(trial.params)
        if trial.state.is_finished():
            self._decoded[trial.number] = (dict(trial.params), candidate)
        return candidate

    # -- the fit ------------------------------------------------------------------------------

    def _fit_and_choose(self, study, live, decoded, search_space, taken) -> list[dict[str, Any]]:
        import torch
        from botorch.utils.sampling import manual_seed
        from optuna._transform import _SearchSpaceTransform

        signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        train, values, fidelity = self._training_rows(live, decoded, signs)
        if len(train) < 2:
            return []
        large = len(train) > FIT_ROWS
        running = [t for t in live if t.state == TrialState.RUNNING and t.number in decoded]
        # Seeded studies draw the same pools and fits on a rerun; unseeded ones differ.
        draws = random.randrange(2**31) if self.seed is None else self.seed * 1_000_003 + len(live)
        rng = random.Random(draws)
        complete = train[: fidelity.count(1.0)]  # full-fidelity rows come first
        front = acquisition.nondominated(values[: len(complete) or len(train)])
        parents = [train[i].params for i in front]
        sizes = (LARGE_POOL_RANDOM, LARGE_POOL_MUTANTS) if large else (POOL_RANDOM, POOL_MUTANTS)
        pool = self._pool(rng, parents, list(search_space), taken, *sizes)
        if not pool:
            return []
        exact = [i for i, m in enumerate(self.metrics) if m in KNOWN_METRICS]
        modelled = [i for i in range(len(self.metrics)) if i not in exact]
        if not modelled:
            raise ValueError("no measured objective to model (every objective is exact)")
        cands = [decoded[t.number] for t in train + running]
        known = [self.oracle.known(c) for c in cands] + [k for _, _, k in pool]
        exact_values = self._exact_values(complete, known, exact, signs)

        trans = _SearchSpaceTransform(search_space)
        bounds = torch.from_numpy(trans.bounds).T
        span = (bounds[1] - bounds[0]).clamp_min(1e-12)

        def encode(rows: list[dict[str, Any]]) -> torch.Tensor:
            x = torch.from_numpy(numpy.array([trans.transform(p) for p in rows], dtype=float))
            return ((x - bounds[0]) / span).reshape(len(rows), len(bounds[0]))

        args = (
            encode([t.params for t in train]),
            torch.tensor(values, dtype=torch.float64)[:, modelled],
            encode([t.params for t in running]) if running else None,
            encode([p for p, _, _ in pool]),
            exact_values,
            min(self.q, len(pool)),
            self.surrogate,
            torch.tensor(fidelity, dtype=torch.float64),
        )
        with manual_seed(draws % 2**31):
            if large:
                pick = random.Random(draws + 1)
                rows = acquisition.fit_subset(front, len(train), FIT_ROWS, pick)
                seen = acquisition.fit_subset(front, len(train), acquisition.POSTERIOR_ROWS, pick)
                chosen = acquisition.choose_large(*args, rows=rows, warm=self.warm, seen=seen)
            else:
                chosen = acquisition.choose(*args)
        self.fit_rows = min(len(train), FIT_ROWS)
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

    def _pool(
        self, rng, parents, names, taken, draws=POOL_RANDOM, mutants=POOL_MUTANTS
    ) -> list[tuple[dict[str, Any], Candidate, tuple[int, float, bool]]]:
        """Distinct, within-budget candidates not yet taken: random draws and front mutants.

        Each with what the oracle knows of it (:meth:`Oracle.known`).
        """
        rows = [self.oracle.draw(rng) for _ in range(draws)]
        for _ in range(mutants if parents else 0):
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
                known = self.oracle.known(candidate)
                if known[2]:
                    out.append((params, candidate, known))
        return out

    def _exact_values(self, complete, known, exact, signs):
        """Exact objectives (maximising signs) of candidates, the ``complete`` trials' first.

        ``known``: what the oracle knows of each candidate (:meth:`Oracle.known`). Memory is
        the predictor's, mapped onto the study's measurements by a linear fit (the identity
        when they are the predictions themselves).
        """
        import torch

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
        return torch.tensor(cols, dtype=torch.float64).T.reshape(len(known), len(exact))

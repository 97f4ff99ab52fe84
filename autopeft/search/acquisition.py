"""The modelling half of the pool BO: GP fits, qLogNEHVI and the cheaper large-study path.

:class:`autopeft.search.pool.PoolSampler` builds the training rows, the pool and the exact
objectives; the functions here fit the GPs and choose among the pool's rows. :func:`choose`
is qLogNEHVI over a :class:`~botorch.models.model.ModelList` of the GPs and a deterministic
model of the exact objectives (greedy for q > 1); a study with more rows than
:data:`autopeft.search.pool.FIT_ROWS` takes :func:`choose_large` instead (hyperparameters
fitted on a subset and warm-started, the posterior conditioned on more rows, analytic EHVI
over the posterior-mean front: bench/results/sampler_cost.md measures both).
"""

from __future__ import annotations

import random
from typing import Any

import numpy

#: A greedy q-batch is chosen among the pool's best candidates by their own (q = 1) value:
#: each greedy step re-scores its choices with the earlier picks pending, so scoring 128
#: instead of ~1,500 cuts most of the cost of a SAAS batch (bench/results/acquisition_cpu.md).
PRESCREEN = 128
#: Monte Carlo samples of qLogNEHVI (BoTorch's default), shared out over a fully Bayesian
#: model's MCMC draws: each draw multiplies the box decompositions, which dominate the cost.
MC_SAMPLES = 128
#: Rows a large study's posterior is conditioned on (the front, then a random sample): one
#: Cholesky, but predicting at ~2,000 rows costs O(rows^2) each (0.8 s at 1,000 rows).
POSTERIOR_ROWS = 256
#: L-BFGS iterations of a large study's likelihood fit, started from the last fit's values.
FIT_MAXITER = 50


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


def nondominated(values: list[list[float]]) -> list[int]:
    """Indices of the rows no other row dominates (all maximised; ties are kept).

    :func:`autopeft.core.pareto.pareto_front` in numpy: it ranks every front, ~0.3 s at 500
    rows, where one comparison matrix finds the first.
    """
    v = numpy.asarray(values, dtype=float).reshape(len(values), -1)
    front = []
    for start in range(0, len(v), 256):  # bounded memory: 256 x n x m booleans at a time
        part = v[start : start + 256, None, :]
        beaten = ((v[None] >= part).all(-1) & (v[None] > part).any(-1)).any(-1)
        front += [start + i for i in numpy.flatnonzero(~beaten).tolist()]
    return front


def fit_subset(front: list[int], n: int, k: int, rng: random.Random) -> list[int]:
    """``k`` of ``n`` training rows, sorted: the front's, then a random sample of the rest.

    The front is where the improvement is measured (a random part of it if it has more than
    ``k`` rows); the rest tells the GP about the space around it.
    """
    if n <= k:
        return list(range(n))
    keep = set(rng.sample(front, k) if len(front) > k else front)
    rest = [i for i in range(n) if i not in keep]
    return sorted(keep | set(rng.sample(rest, k - len(keep))))


def choose_large(
    x_train,
    y_train,
    x_pending,
    x_pool,
    exact,
    q,
    surrogate,
    fidelity=None,
    *,
    rows,
    warm,
    seen=None,
) -> list[int]:
    """:func:`choose` for a large study: cheaper, within a second at 500 trials on one core.

    The GPs are fitted on the training ``rows`` only; a likelihood fit starts from ``warm``
    (which gets this fit's values) and its posterior is then conditioned on the rows ``seen``
    (None: every row; a SAAS GP keeps its ``rows``). The pool is scored by analytic EHVI (exact for
    one modelled objective with the rest known, no Monte Carlo) over the front of the GPs'
    posterior means at the complete trials. Running trials and a batch's earlier picks join
    that front at their posterior means (the "kriging believer"); a batch's later picks are
    among the :data:`PRESCREEN` best of the first.
    """
    import torch
    from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement
    from botorch.utils.multi_objective.box_decompositions.non_dominated import (
        FastNondominatedPartitioning,
    )
    from botorch.utils.multi_objective.pareto import is_non_dominated

    every = torch.cat([x_train] + ([x_pending] if x_pending is not None else []) + [x_pool])
    x_fit, x_baseline, x_pending, x_pool = with_fidelity(x_train, x_pending, x_pool, fidelity)
    index = torch.tensor(rows)
    gps = []
    for i in range(y_train.shape[1]):
        gp = fit_gp(x_fit[index], y_train[index, i : i + 1], surrogate, warm.get(i), True)
        if surrogate == "gp":
            warm[i] = {k: v for k, v in gp.state_dict().items() if not k.startswith("outcome")}
            cond = torch.tensor(seen) if seen is not None else torch.arange(len(x_fit))
            gp = condition_on_all(x_fit[cond], y_train[cond, i : i + 1], warm[i])
        gps.append(gp)
    model = model_list(gps, every, exact)

    def believed(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            means = [g.posterior(x).mean for g in gps]  # a fully Bayesian GP: per MCMC draw
        means = [m.mean(0) if m.dim() > 2 else m for m in means]
        return torch.cat(means + [known], dim=-1)

    n, p = len(x_train), 0 if x_pending is None else len(x_pending)
    points = believed(x_baseline, exact[: len(x_baseline)])
    if p:
        points = torch.cat([points, believed(x_pending, exact[n : n + p])])
    observed = torch.cat([y_train, exact[:n]], dim=-1)
    ref = observed.min(dim=0).values - 1e-8
    chosen: list[int] = []
    rows_left = torch.arange(len(x_pool))  # after the first pick: the PRESCREEN best
    for _ in range(q):
        points = points[is_non_dominated(points)]
        partitioning = FastNondominatedPartitioning(ref_point=ref, Y=points)
        # Typed for NondominatedPartitioning; EHVI reads only the cells, which the fast
        # algorithm gives with fewer boxes for 3 objectives.
        acqf = ExpectedHypervolumeImprovement(model, ref.tolist(), partitioning)  # type: ignore[arg-type]
        with torch.no_grad():
            value = torch.cat([acqf(x.unsqueeze(1)) for x in x_pool[rows_left].split(512)])
        if not bool(value.max() > 0):  # no candidate improves even by chance: the log-MC value
            value = fallback_values(model, ref, partitioning, x_pool[rows_left])  # ranks them
        if not chosen and q > 1 and 0 < PRESCREEN < len(rows_left):
            value, top = value.topk(PRESCREEN)
            rows_left = rows_left[top]
        best = int(rows_left[int(value.argmax())])
        chosen.append(best)
        keep = rows_left != best
        rows_left = rows_left[keep]
        points = torch.cat([points, believed(x_pool[best : best + 1], exact[n + p + best :][:1])])
    return chosen


def condition_on_all(x, y, hyperparameters):
    """A GP of every row with the hyperparameters fitted on some (no fit: one Cholesky).

    Fitting costs a Cholesky per likelihood step; conditioning on all the rows costs one, so
    the posterior sees more trials than the fit (:data:`autopeft.search.pool.FIT_ROWS`).
    """
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    gp = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
    gp.load_state_dict(hyperparameters, strict=False)
    return gp.eval()


def fallback_values(model, ref, partitioning, x_pool):
    """The pool rows' qLogEHVI (16 QMC samples): it ranks rows whose EHVI underflows to 0."""
    import torch
    from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
    from botorch.sampling.get_sampler import get_sampler

    sampler = get_sampler(model.posterior(x_pool[:1]), sample_shape=torch.Size([16]))
    acqf = qLogExpectedHypervolumeImprovement(model, ref.tolist(), partitioning, sampler=sampler)
    with torch.no_grad():
        return torch.cat([acqf(part.unsqueeze(1)) for part in x_pool.split(256)])


def model_list(gps, rows, exact):
    """The GPs and a deterministic model of the exact objectives of ``rows`` (a lookup)."""
    import torch
    from botorch.models.deterministic import GenericDeterministicModel
    from botorch.models.model import ModelList

    d = rows.shape[-1]

    def lookup(x: torch.Tensor) -> torch.Tensor:
        # The acquisition only sees training, pending and pool rows: read their exact values.
        index = torch.cdist(x[..., :d].reshape(-1, d), rows).argmin(dim=-1)
        return exact[index].reshape(*x.shape[:-1], exact.shape[-1])

    models = list(gps)
    if exact.shape[-1]:
        models.append(GenericDeterministicModel(lookup, num_outputs=exact.shape[-1]))
    return ModelList(*models)


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
    from botorch.sampling.get_sampler import get_sampler

    model = model_list(gps, rows, exact)
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


def fit_gp(x, y, surrogate: str, warm: dict[str, Any] | None = None, capped: bool = False):
    """A GP of one outcome: SAAS by NUTS (small MCMC budget: trials are the expensive part).

    ``capped`` (a large study's fit): a likelihood fit stops after :data:`FIT_MAXITER` steps,
    started from ``warm`` (the last fit's hyperparameters; those of another shape are not
    used), and NUTS keeps its compiled code, which the fixed number of rows lets the next
    fit reuse.
    """
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
        # A capped fit has FIT_ROWS rows every time: one executable, reused (compiling it
        # is ~60% of a fit).
        if not capped:
            import jax

            jax.clear_caches()
        return gp
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    gp = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
    options = None
    if capped:
        # Near its optimum L-BFGS spends most of its ~900 default steps creeping along flat
        # directions (lengthscales of inputs that do not matter).
        options = {"options": {"maxiter": FIT_MAXITER}}
    if warm is not None:
        own = gp.state_dict()
        if all(k in own and own[k].shape == v.shape for k, v in warm.items()):
            gp.load_state_dict(warm, strict=False)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp), optimizer_kwargs=options)
    return gp

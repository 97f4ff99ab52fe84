"""The pool samplers' large-study path: a capped, warm-started GP fit and analytic EHVI.

Tiny synthetic studies with the large-study threshold lowered, so the path runs in seconds
(bench/sampler_cost.py measures it at 200-1,000 trials).
"""

from __future__ import annotations

import random

import pytest
import torch

from autopeft import api
from autopeft.core.pareto import pareto_front
from autopeft.core.trial_result import TrialStatus
from autopeft.search import acquisition, blackbox, pool
from autopeft.search.local import run_local
from autopeft.search.study import Study

ROWS = 6


def config(name: str, sampler: str = "qnehvi"):
    return api.study_from_dict(
        {
            "name": name,
            "model": "minilm",
            "search_space": {
                "modules": {
                    "lora": {
                        "rank": [0, 2, 4, 8, 16],
                        "targets": {"choice": [["q", "v"], ["attn"]]},
                    },
                    "serial_adapter": {"size": [0, 8, 32]},
                },
                "layers": "search",
            },
            "training": {"steps": 30},
            "sampler": {"name": sampler, "n_startup_trials": 5, "seed": 3},
            "halving": {"enabled": False},
        }
    )


@pytest.fixture
def small_large(monkeypatch):
    """Studies of more than ROWS distinct trials take the large path; small pools."""
    monkeypatch.setattr(pool, "FIT_ROWS", ROWS)
    monkeypatch.setattr(acquisition, "POSTERIOR_ROWS", ROWS + 3)
    monkeypatch.setattr(pool, "POOL_RANDOM", 48)
    monkeypatch.setattr(pool, "POOL_MUTANTS", 16)
    monkeypatch.setattr(pool, "LARGE_POOL_RANDOM", 48)
    monkeypatch.setattr(pool, "LARGE_POOL_MUTANTS", 16)
    fits = []
    fit_gp = acquisition.fit_gp

    def spy(x, y, surrogate, warm=None, capped=False):
        fits.append((len(x), warm is not None, capped))
        return fit_gp(x, y, surrogate, warm, capped)

    monkeypatch.setattr(acquisition, "fit_gp", spy)
    condition = acquisition.condition_on_all

    def conditioned(x, y, hyperparameters):
        fits.append(("posterior", len(x)))
        return condition(x, y, hyperparameters)

    monkeypatch.setattr(acquisition, "condition_on_all", conditioned)
    return fits


def test_a_large_study_fits_at_most_fit_rows_warm_and_proposes_unseen_candidates(
    tmp_path, small_large, monkeypatch
):
    small = []

    def old_path(x_train, *args):  # the full qLogNEHVI (seconds even here): its first row
        small.append(len(x_train))
        return [0]

    monkeypatch.setattr(acquisition, "choose", old_path)
    study = Study(config("large"), root=tmp_path)
    run_local(study, 12, runner=blackbox.for_study(study), progress=False)
    sampler = study.optuna.sampler
    assert sampler.failures == 0 and sampler.fits == sampler.proposals == 7
    # Studies of ROWS or fewer trials take the old path with every row; larger ones fit
    # exactly ROWS, capped, each fit started from the last one's hyperparameters.
    assert small == list(range(5, ROWS + 1))
    fits = [f for f in small_large if f[0] != "posterior"]
    assert [n for n, _, _ in fits] == [ROWS] * 5
    assert [w for _, w, _ in fits] == [False] + [True] * 4
    assert all(capped for _, _, capped in fits)
    # ... and each posterior is conditioned on up to POSTERIOR_ROWS trials, with those values.
    posterior = [f[1] for f in small_large if f[0] == "posterior"]
    assert posterior == [min(n, ROWS + 3) for n in range(ROWS + 1, 12)]
    assert sampler.fit_rows == ROWS
    # Every proposal is a new candidate within the space and its budget.
    results = [r for _, r in study.results()]
    keys = [r.candidate.key() for r in results]
    assert len(keys) == len(set(keys)) == 12
    assert all(r.status is TrialStatus.COMPLETE for r in results)


def test_large_path_picks_the_candidate_the_model_says_dominates():
    # Accuracy rises with x0 and the known cost with x1: the one pool row at x0 = 1,
    # x1 = 0 beats every trial in both, in expectation; a random pick finds it 1 in 300.
    torch.manual_seed(0)
    x_train = torch.rand(40, 3, dtype=torch.float64) * 0.8 + 0.1
    y_train = x_train[:, :1] + 0.01 * torch.randn(40, 1, dtype=torch.float64)
    x_pool = torch.rand(300, 3, dtype=torch.float64) * 0.8 + 0.1
    best = 137
    x_pool[best] = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    x_pending = x_pool[:2] * 0 + 0.5  # two running trials, at their posterior mean
    exact = -torch.cat([x_train, x_pending, x_pool])[:, 1:2]
    rows = acquisition.fit_subset(
        acquisition.nondominated(torch.cat([y_train, exact[:40]], -1).tolist()),
        40,
        16,
        random.Random(0),
    )
    warm: dict = {}
    chosen = acquisition.choose_large(
        x_train, y_train, x_pending, x_pool, exact, 3, "gp", rows=rows, warm=warm
    )
    assert chosen[0] == best and len(set(chosen)) == 3
    assert set(warm) == {0} and "covar_module.raw_lengthscale" in warm[0]


def test_fit_subset_keeps_the_front_then_samples_the_rest():
    rng = random.Random(1)
    front = [3, 17, 40]
    rows = acquisition.fit_subset(front, 100, 12, rng)
    assert len(rows) == len(set(rows)) == 12 and rows == sorted(rows)
    assert set(front) <= set(rows) and all(0 <= i < 100 for i in rows)
    big = list(range(0, 100, 3))  # a front larger than the cap: part of it
    rows = acquisition.fit_subset(big, 100, 12, rng)
    assert len(rows) == 12 and set(rows) <= set(big)
    assert acquisition.fit_subset(front, 9, 12, rng) == list(range(9))  # small: every row


def test_nondominated_is_the_pareto_front_with_ties_kept():
    rng = random.Random(2)
    for n in (1, 7, 300, 600):  # 600 crosses the 256-row chunks
        values = [[rng.choice([0.1, 0.2, 0.3]), rng.random(), -rng.randrange(5)] for _ in range(n)]
        values += values[:3]  # duplicates of front rows stay non-dominated
        assert acquisition.nondominated(values) == pareto_front(values, ["maximize"] * 3)


def test_the_gp_sampler_fits_at_most_fit_rows_and_searches_less_in_a_large_study(
    tmp_path, monkeypatch
):
    from optuna.samplers import GPSampler

    from autopeft.search.samplers import gp

    monkeypatch.setattr(gp, "FIT_ROWS", 6)
    seen = []
    impl = GPSampler._sample_relative_impl

    def spy(self, study, completed, running, space):
        seen.append((len(completed), self._n_qmc_samples_ehvi, self._n_preliminary_samples))
        front = {t.number for t in study.best_trials}
        seen[-1] += (front <= {t.number for t in completed},)
        return impl(self, study, completed, running, space)

    monkeypatch.setattr(GPSampler, "_sample_relative_impl", spy)
    study = Study(config("gp-large", "gp"), root=tmp_path)
    run_local(study, 9, runner=blackbox.for_study(study), progress=False)
    default = (GPSampler()._n_qmc_samples_ehvi, GPSampler()._n_preliminary_samples)
    small = [(5, *default), (6, *default)]
    large = [(6, gp.LARGE_QMC_SAMPLES, gp.LARGE_PRELIMINARY)] * 2
    assert [s[:3] for s in seen] == small + large
    assert all(s[3] for s in seen)  # the front is always fitted
    sampler = study.optuna.sampler
    assert (sampler._n_qmc_samples_ehvi, sampler._n_preliminary_samples) == default

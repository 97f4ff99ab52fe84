"""Deferred promotion: every trial pauses at the first rung; the scheduler later promotes
the paused trial that adds the most to the front, judged at that rung (a prototype).

``halving_ceiling.py`` showed that a rule deciding at the rung cannot reach the 3x of issue
7.3: the trials that raise the front when they finish are later replaced by better ones, and
a rule deciding at the rung must let them finish. Here nothing is decided at the rung. Each
new trial trains to the first rung and pauses (a checkpoint; in the study it is PRUNED with
its rung point). After every ``every`` new trials the scheduler promotes the paused trial
whose rung point adds the most hypervolume to the rung points of the trials promoted so far
(greedy hypervolume improvement, like ``halving_ceiling.py``'s clairvoyant set, but online and
on rung accuracy); it resumes from its checkpoint to the full fidelity, costing the rest of
the steps. A paused trial that adds nothing at the rung is never promoted; when none adds
anything, the scheduler explores instead.

Flags (:data:`FLAGS`) change what the rung shows (``+oracle``: the final accuracy), what the
sampler is told (``+fed``), what a promotion costs (``+restart``) or how paused trials are
judged: by a regression of the promoted trials' final accuracy on their rung point
(``+predict``, a policy a real search could run), or by the surrogate's own posterior of the
final accuracy given the rung accuracy (``+bayes``: its mean; ``+ehv``: the hypervolume gain
expected over it). The posterior knows each configuration's true mean curve, so those two
bound what any predictor from the rung accuracy could give.

Runs are in ``search_cost.py``'s format, so ``search_cost.py --merge`` puts them beside the
other rows (same target, same seeds).

    OMP_NUM_THREADS=1 .venv/bin/python bench/promotion.py \\
        --data bench/results/real_trials_minilm_640.jsonl --features all,log_params \\
        --seeds 20 --jobs 2 --policies 0.125@4 0.125@6+oracle
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from collect_real_trials import bench_space, bench_study  # noqa: E402
from fed_tpe import feed  # noqa: E402
from halving_ceiling import gain  # noqa: E402
from search_cost import RESULTS, data_fidelity, real_trials, write_runs  # noqa: E402
from search_quality import box_volume, reference_point, run_all  # noqa: E402
from surrogate import F64, Surrogate, _with_bias, fit_ridge, for_study, ridge_loo  # noqa: E402

from autopeft.core.halving import RUNG_DIRECTIONS, rung_steps  # noqa: E402
from autopeft.core.pareto import hypervolume  # noqa: E402
from autopeft.search.proposals import Proposer  # noqa: E402
from autopeft.search.study import model_profile  # noqa: E402

#: Policy flags: the rungs see the final accuracy; TPE is told paused trials' rung points
#: (bench/fed_tpe.py); a promoted trial trains from scratch instead of its saved state;
#: paused trials are judged by their final accuracy as predicted from their rung point
#: (:func:`predictor`) against the promoted trials' final points; or by the surrogate's own
#: posterior mean of the final accuracy given the rung accuracy (:func:`posterior`):
#: the best any predictor from the rung point and the configuration can do; or by the
#: hypervolume they add on average over that posterior (:func:`expected_gain`), which values
#: a chance of a high final accuracy where the mean alone adds nothing.
FLAGS = ("oracle", "fed", "restart", "predict", "bayes", "ehv")
#: Kernel width of :func:`posterior`: the sampling error of an accuracy near 0.75 on
#: the 1,000 validation examples of the 640-step data. A narrower kernel would pick out the
#: very residual curve a trial was drawn with (the pool is finite): the oracle, not a bound.
POSTERIOR_WIDTH = (0.75 * 0.25 / 1000) ** 0.5


@dataclass(frozen=True)
class Policy:
    """``first@every[+flag]...`` (:data:`FLAGS`): first rung (fraction), new trials per
    promotion and flags."""

    first: float
    every: int
    oracle: bool = False
    fed: bool = False
    #: A promoted trial trains again from scratch (no checkpoint): it costs the full fidelity.
    restart: bool = False
    #: Judge paused trials by predicted final accuracy (:func:`predictor`).
    predict: bool = False
    #: Judge paused trials by the surrogate's posterior mean (:func:`posterior`).
    bayes: bool = False
    #: Judge paused trials by their expected gain over that posterior (:func:`expected_gain`).
    ehv: bool = False

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``'0.125@4+oracle'`` -> a policy."""
        shape, *flags = text.split("+")
        first, _, every = shape.partition("@")
        try:
            if set(flags) - set(FLAGS) or {"predict", "bayes"} <= set(flags):
                raise ValueError
            policy = cls(float(first), int(every or 4), **{f: True for f in flags})
            if not 0 < policy.first < 1 or policy.every < 1:
                raise ValueError
            return policy
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected first@every[+{'|+'.join(FLAGS)}] with 0 < first < 1, every >= 1 "
                f"and not both +predict and +bayes, such as 0.125@4, but got {text!r}"
            ) from None

    def label(self, fidelity: int) -> str:
        """The row label: ``promote-r80-every4[-flag]...``, flags in :data:`FLAGS`' order."""
        flags = "".join(f"-{f}" for f in FLAGS if getattr(self, f))
        return f"promote-r{round(self.first * fidelity)}-every{self.every}{flags}"


@dataclass(frozen=True)
class Run:
    """One search under a policy."""

    policy: Policy
    seed: int
    fidelity: int
    step_budget: int


#: Points of the Gaussian quadrature :meth:`predictor.outcomes` averages the gain over.
OUTCOME_NODES = 9
#: Promoted trials before the predictor is fitted (until then rung points are compared).
MIN_FIT = 6


class predictor:  # noqa: N801 (used as a function: predictor(rung, final)(point))
    """A point's final accuracy predicted from its rung point: ridge regression (penalty 1,
    standardised features) of the promoted trials' final accuracy on (rung accuracy, log
    params, log memory). ``spread`` is the root-mean-square leave-one-out error of the fit:
    with it the prediction is a Gaussian (:meth:`outcomes`), for ``+predict+ehv``."""

    def __init__(self, rung: list[list[float]], final: list[list[float]]):
        import torch

        x = self._features(rung)
        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-9)
        z = _with_bias((x - self.mean) / self.std)
        y = torch.tensor([f[0] for f in final], dtype=F64)
        self.w = fit_ridge(z, y, 1.0)
        self.spread = float(ridge_loo(z, y, 1.0).pow(2).mean().sqrt())

    @staticmethod
    def _features(points: list[list[float]]):
        import torch

        return torch.tensor(
            [[p[0], math.log(max(p[1], 1.0)), math.log(max(p[2], 1.0))] for p in points],
            dtype=F64,
        )

    def __call__(self, p: list[float]) -> list[float]:
        z = _with_bias((self._features([p]) - self.mean) / self.std)[0]
        return [float(z @ self.w), *p[1:]]

    def outcomes(self, p: list[float]):
        """Final accuracies and weights: Gauss-Hermite nodes of the Gaussian prediction."""
        nodes, weights = _quadrature()
        return (self(p)[0] + self.spread * nodes).clamp(0.0, 1.0), weights


@functools.cache
def _quadrature():
    """Gauss-Hermite nodes and weights (summing to 1) of the standard normal."""
    import numpy as np
    import torch

    nodes, weights = np.polynomial.hermite_e.hermegauss(OUTCOME_NODES)
    return torch.tensor(nodes, dtype=F64), torch.tensor(weights / weights.sum(), dtype=F64)


def posterior(
    surrogate: Surrogate, candidate, rung_acc: float, step: int, width: float = POSTERIOR_WIDTH
):
    """The final accuracies ``candidate`` may reach given its accuracy at ``step``, weighted.

    A surrogate trial's curve is one of a finite set: the candidate's learner curve plus one
    of the real learners' residual curves, or one of the real non-learners' flat curves, with
    the candidate's P(learns). Each is weighted by that probability and by how close its value
    at ``step`` is to ``rung_acc`` (a Gaussian of ``width``). It knows the configuration's
    true mean curve, which no real search does: its saving bounds what a better predictor at
    the rung could give. Returns (final accuracies, weights summing to 1), heaviest first,
    cut where the rest weigh under 0.1%.
    """
    import torch

    mean = torch.tensor(surrogate.learner_curve(candidate), dtype=F64)
    p = surrogate.p_learn(candidate)
    pools = [((mean + surrogate.residuals).clamp(0.0, 1.0), p)]
    if len(surrogate.flat_curves):
        pools.append((surrogate.flat_curves, 1.0 - p))
    logw, final = [], []
    for curves, prior in pools:
        if prior <= 0.0:
            continue
        at = torch.tensor([surrogate.at(c.tolist(), step) for c in curves], dtype=F64)
        logw.append(-0.5 * ((at - rung_acc) / width) ** 2 + math.log(prior / len(curves)))
        final.append(curves[:, -1])
    w, order = torch.softmax(torch.cat(logw), 0).sort(descending=True)
    keep = int((w.cumsum(0) < 0.999).sum()) + 1
    w = w[:keep] / w[:keep].sum()
    return torch.cat(final)[order[:keep]], w


def outcome_mean(outcomes) -> float:
    """The mean of ``(final accuracies, weights)``: for :func:`posterior`, its posterior mean."""
    finals, w = outcomes
    return float(w @ finals)


def expected_gain(outcomes, point: list[float], front, reference, base=None) -> float:
    """Hypervolume a paused trial adds to ``front`` on average over its ``outcomes``
    (``(final accuracies, weights)``); ``point`` gives its exact costs, ``base`` the
    front's hypervolume (computed if not given)."""
    finals, w = outcomes
    if base is None:
        base = hypervolume(front, reference, RUNG_DIRECTIONS)
    # The gain grows with the accuracy: nothing to add at the best outcome, nothing at all.
    if gain([float(finals.max()), *point[1:]], front, reference, base) <= 0.0:
        return 0.0
    return sum(
        float(wi) * gain([float(f), *point[1:]], front, reference, base) for f, wi in zip(finals, w)
    )


def scores(policy: Policy, paused: dict, promoted_rung, finished, reference, posterior_of):
    """What each paused trial would add to the front, as the policy judges it."""
    points = {n: p for n, (_, p, _) in paused.items()}
    by_final = len(finished) >= MIN_FIT if policy.predict else policy.ehv or policy.bayes
    if not by_final:
        # Until the predictor has enough promoted trials, or without one: rung against rung.
        rung_base = hypervolume(promoted_rung, reference, RUNG_DIRECTIONS)
        return {n: gain(p, promoted_rung, reference, rung_base) for n, p in points.items()}
    # Judged by a final accuracy, against the finished trials' front.
    base = hypervolume(finished, reference, RUNG_DIRECTIONS)
    if policy.predict:
        model = predictor(promoted_rung, finished)
        if policy.ehv:
            return {
                n: expected_gain(model.outcomes(p), p, finished, reference, base)
                for n, p in points.items()
            }
        return {n: gain(model(p), finished, reference, base) for n, p in points.items()}
    if policy.ehv:
        return {
            n: expected_gain(posterior_of(n), p, finished, reference, base)
            for n, p in points.items()
        }
    return {
        n: gain([outcome_mean(posterior_of(n)), *p[1:]], finished, reference, base)
        for n, p in points.items()
    }


def run_policy(run: Run, surrogate: Surrogate, root: str) -> dict:
    """Search until the step budget is spent; HV of the finished front after each event."""
    import torch

    from autopeft.core.trial_result import TrialStatus
    from autopeft.search.study import Study

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    policy, fidelity = run.policy, run.fidelity
    first = rung_steps(fidelity, [policy.first])[0]
    name = f"{policy.label(fidelity)}-s{run.seed}"
    config = bench_study(
        name,
        steps=fidelity,
        rungs=[policy.first, 1.0],
        space=bench_space(surrogate.with_lr),
        sampler={"name": "tpe", "seed": run.seed},
        halving={"enabled": False},
    )
    study = Study(config, root=root)
    if policy.fed:
        feed(study)
    runner = for_study(study, surrogate, seed=run.seed, oracle=policy.oracle)
    reference = reference_point(study)
    box = box_volume(reference)
    known = study.known_results()
    # trial number -> (params, rung point, candidate)
    paused: dict[int, tuple[dict, list[float], object]] = {}
    promoted_rung: list[list[float]] = []
    finished: list[list[float]] = []
    posteriors: dict = {}  # trial number -> its posterior (it does not change)

    def posterior_of(number: int):
        if number not in posteriors:
            _, point, candidate = paused[number]
            posteriors[number] = posterior(surrogate, candidate, point[0], first)
        return posteriors[number]

    hv, steps, statuses = [], [], []
    spent, since, started = 0, 0, time.perf_counter()
    while spent < run.step_budget:
        choice = None
        if since >= policy.every and paused:
            scored = scores(policy, paused, promoted_rung, finished, reference, posterior_of)
            best = max(scored, key=scored.get)
            choice = best if scored[best] > 0 else None
        if choice is not None:
            params, point, _ = paused.pop(choice)
            study.optuna.enqueue_trial(params, user_attrs={"promoted_from": choice})
            trial, candidate = study.ask()
            result = runner.run(candidate, None, {first})
            study.tell(trial, result)
            spent += fidelity if policy.restart else fidelity - first
            promoted_rung.append(point)
            finished.append(study.values_of(result))
            since = 0
        else:
            proposal = Proposer(study, n_trials=10**9, known=known).next()
            if isinstance(proposal, str):  # only known candidates: the space is exhausted
                break
            trial, candidate = proposal
            n_params, predicted, _ = runner.budget(candidate)
            rung: list[float] = []

            def pause(step: int, metrics: dict, rung=rung, rest=(n_params, predicted)) -> bool:
                rung[:] = [metrics["accuracy"], *rest]
                return False

            result = runner.run(candidate, pause, {first})
            study.tell(trial, result)
            known[candidate.key()] = result
            spent += result.steps
            if result.status is TrialStatus.PRUNED:
                paused[trial.number] = (dict(trial.params), rung, candidate)
                since += 1
        hv.append(hypervolume(finished, reference, RUNG_DIRECTIONS) / box)
        steps.append(spent)
        statuses.append(result.status.value)
    return {
        "part": "cost",
        "label": policy.label(fidelity),
        "halving": True,
        "seed": run.seed,
        "step_budget": run.step_budget,
        **{f"policy_{k}": v for k, v in asdict(policy).items()},
        "hv": hv,
        "steps": steps,
        "trials": len(hv),
        "pruned": statuses.count("PRUNED"),
        "promoted": len(finished),
        "reused": sum(1 for t in study.optuna.trials if t.user_attrs.get("reused")),
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    """Run the policies on the surrogate; write search_cost-format results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--features", type=lambda s: tuple(s.split(",")), default=("all",))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget-trials", type=int, default=60)
    parser.add_argument("--policies", type=Policy.parse, nargs="+", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="promotion_640")
    args = parser.parse_args()
    started = time.perf_counter()
    records = real_trials(args.data)
    surrogate = Surrogate(records, model_profile("minilm"), args.features)
    fidelity, _ = data_fidelity(records)
    budget = args.budget_trials * fidelity
    runs_in = [Run(p, s, fidelity, budget) for s in range(args.seeds) for p in args.policies]
    runs = run_all(
        runs_in,
        run_policy,
        args.jobs,
        lambda r, out: (
            f"{out['label']} seed {r.seed}: HV {out['hv'][-1]:.4f} trials {out['trials']} "
            f"promoted {out['promoted']} steps {out['steps'][-1]} {out['wall_s']:.1f} s"
        ),
        surrogate,
    )
    meta = {
        "rung_steps": sorted({rung_steps(fidelity, [p.first])[0] for p in args.policies}),
        "min_delta": 0.0,
        "rule": "deferred promotion (bench/promotion.py)",
    }
    write_runs(args, records, surrogate, runs, meta, started)


if __name__ == "__main__":
    main()

"""The local executor: trials in-process, one after another, with successive halving.

For tests, single GPUs and CPU laptops. The successive-halving decision is the same pure
rule the Ray scheduler uses (:mod:`autopeft.core.halving`), fed with the peers' rung values
stored in the study, so a resumed or parallel run decides from everything recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from autopeft import stop
from autopeft.core.candidate import Candidate
from autopeft.core.halving import HalvingRule, rung_steps
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search.proposals import DONE, EXHAUSTED, Proposer
from autopeft.search.study import REPEAT_LIMIT, Study

Listener = Callable[[int, TrialResult], None]
Report = Callable[[int, dict[str, float]], bool]


class Runner(Protocol):
    """What an executor needs from a trial runner (real training or a synthetic blackbox)."""

    def budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """Exact trainable parameters, predicted memory (MiB), over-budget reason or None."""

    def run(self, candidate: Candidate, report: Report | None, eval_at: set[int]) -> TrialResult:
        """Train and measure one candidate."""


class TrainingRunner:
    """The real runner: :func:`autopeft.train.trial.run_trial` over a loaded context."""

    def __init__(self, context):
        self.context = context

    @classmethod
    def for_study(cls, study: Study) -> TrainingRunner:
        """Load the study's model and task once (tokens cached in the study folder)."""
        from autopeft.train.trial import TrialContext

        ctx = TrialContext.create(study.config, cache_dir=study.folder / "cache")
        ctx.weights_dir = study.folder / "weights"
        return cls(ctx)

    def budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """See :func:`autopeft.train.trial.check_budget`."""
        from autopeft.train.trial import check_budget

        return check_budget(self.context, candidate)

    def run(self, candidate: Candidate, report: Report | None, eval_at: set[int]) -> TrialResult:
        """See :func:`autopeft.train.trial.run_trial`."""
        from autopeft.train.trial import run_trial

        return run_trial(self.context, candidate, report=report, eval_at=eval_at)


def halving_report(
    study: Study,
    trial_number: int,
    point_rest: list[float],
    rungs: list[int],
    rule: HalvingRule,
):
    """The ``report`` callback of one trial: record its rung value, then apply the rule."""
    rung_set = set(rungs[:-1])  # the last rung is the full fidelity: nothing to decide

    def report(step: int, metrics: dict[str, float]) -> bool:
        if step not in rung_set:
            return True
        point = [study.config.rung_score(metrics), *point_rest]
        peers, finished = study.rung_evidence(step, trial_number, outcomes=rule.stop_hopeless)
        study.record_rung(trial_number, step, point)
        return rule.should_continue(point, peers, finished)

    return report


def run_local(
    study: Study,
    n_trials: int,
    runner: Runner | None = None,
    halving: bool | None = None,
    on_result: Listener | None = None,
    progress: bool = True,
) -> Study:
    """Run trials until the study holds ``n_trials`` finished ones (resuming if it has some).

    Trials left RUNNING by a killed process are failed and their parameters re-queued first.
    ``halving`` overrides the study's ``halving.enabled``.
    """
    runner = runner or TrainingRunner.for_study(study)
    study.oracle.predict = runner.budget  # the BO samplers' exact parameters and memory
    cfg, hcfg = study.config.training, study.config.halving
    enabled = hcfg.enabled if halving is None else halving
    rule = HalvingRule.from_config(hcfg) if enabled else None
    rungs = rung_steps(cfg.steps, cfg.rungs) if rule else [cfg.steps]
    study.recover_interrupted()
    display = Progress(study, n_trials) if progress else None
    # A candidate trained (or training) anywhere in the study is not trained again.
    proposer = Proposer(study, n_trials)
    try:
        while True:
            stop.check()  # a Ctrl-C whose KeyboardInterrupt was swallowed ends the run here
            proposal = proposer.next()
            if proposal == EXHAUSTED:
                say_exhausted(study, n_trials)
                break
            if proposal == DONE:
                break
            if isinstance(proposal, str):  # WAIT: other drivers hold the remaining slots
                time.sleep(WAIT_POLL_S)
                continue
            trial, candidate = proposal
            params, predicted, _ = runner.budget(candidate)
            report = (
                halving_report(study, trial.number, [params, predicted], rungs, rule)
                if rule
                else None
            )
            result = runner.run(candidate, report, set(rungs))
            proposer.record(trial.number, result)
            if on_result:
                on_result(trial.number, result)
            if display:
                display.update(trial.number, result)
        proposer.drain()  # trials waiting on another driver's identical candidate
        if display:
            display.refresh()  # the final front and hypervolume
    except KeyboardInterrupt:
        proposer.interrupt()  # failed as interrupted and re-queued: the next run re-runs them
        raise
    finally:
        if display:
            display.close()
    return study


#: Seconds between looks at the study while other drivers hold the remaining trials.
WAIT_POLL_S = 1.0


def say_exhausted(study: Study, n_trials: int) -> None:
    """Why a search stopped before ``n_trials``: the sampler only proposes known candidates."""
    print(
        f"{study.config.name}: stopped at {study.n_done()} of {n_trials} trials: the sampler "
        f"proposed only already-trained candidates ({REPEAT_LIMIT} in a row, or all "
        f"{study.space_size:.0f} configurations of the space are known)",
        flush=True,
    )


class Progress:
    """A rich progress line: trials done, last result, front size, hypervolume.

    It shows the study's ledger (:class:`~autopeft.search.ledger.Ledger`), kept up to date
    by the driver's reads and tells, so it reads nothing per trial; the hypervolume, whose
    exact computation grows with the front, is recomputed only when the front changed and
    at most every :attr:`HV_EVERY_S` seconds (longer when it takes long), so it stays a
    small share of a fast search's time. :meth:`refresh` shows the final figures.
    """

    #: Least seconds between two hypervolume computations.
    HV_EVERY_S = 1.0
    #: The computations take at most about 1/HV_SHARE of the time (each waits that many
    #: times its own duration before the next).
    HV_SHARE = 20

    def __init__(self, study: Study, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.study = study
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.task = self.bar.add_task(
            study.config.name, total=total, completed=study.n_done(), info=""
        )
        self.started = time.perf_counter()
        self.hv: float | None = None
        self._hv_due = 0.0
        self._last = ""
        self.bar.start()

    def update(self, number: int, result: TrialResult) -> None:
        """Show a finished trial."""
        acc = result.metrics.get(self.study.config.task.metric)
        last = f"#{number} {result.status.value}" + (f" {acc:.3f}" if acc is not None else "")
        if result.status in (TrialStatus.FAILED, TrialStatus.INFEASIBLE) and result.error:
            last += f" ({result.error[:40]})"
        self._last = last
        self._show(final=False)

    def refresh(self) -> None:
        """Show the study as it is now, the hypervolume computed afresh if it changed."""
        self._show(final=True)

    def _show(self, final: bool) -> None:
        # The ledger as the driver's own reads and tells left it (it takes in each trial it
        # tells, and other drivers' trials at its next read): no read of its own.
        ledger = self.study.synced() if final else self.study.ledger
        now = time.perf_counter()
        if final or self.hv is None or now >= self._hv_due:
            # Of the ledger shown (no read); cached while the front is unchanged.
            self.hv = self.study.hypervolume(read=False)
            spent = time.perf_counter() - now
            self._hv_due = now + max(self.HV_EVERY_S, self.HV_SHARE * spent)
        info = f"front {len(ledger.front)}  HV {self.hv:.4g}  last {self._last}"
        self.bar.update(self.task, completed=ledger.counted, info=info)

    def close(self) -> None:
        """Stop the live display (quietly when the terminal hung up: nothing to draw on)."""
        try:
            self.bar.stop()
        except OSError:  # EIO after SIGHUP; the run still hands its trials back and exits
            pass

"""The local executor: trials in-process, one after another, with successive halving.

For tests, single GPUs and CPU laptops. The successive-halving decision is the same pure
rule the Ray scheduler uses (:mod:`autopeft.core.halving`), fed with the peers' rung values
stored in the study, so a resumed or parallel run decides from everything recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from autopeft.core.halving import HalvingRule, rung_steps
from autopeft.core.result import TrialResult, TrialStatus
from autopeft.search.study import Study
from autopeft.train.trial import TrialContext, check_budget, run_trial

Listener = Callable[[int, TrialResult], None]


def halving_report(
    study: Study,
    trial_number: int,
    point_rest: list[float],
    metric: str,
    rungs: list[int],
    rule: HalvingRule,
):
    """The ``report`` callback of one trial: record its rung value, then apply the rule."""
    rung_set = set(rungs[:-1])  # the last rung is the full fidelity: nothing to decide

    def report(step: int, metrics: dict[str, float]) -> bool:
        if step not in rung_set:
            return True
        point = [metrics[metric], *point_rest]
        peers = study.rung_points(step, exclude=trial_number)
        study.record_rung(trial_number, step, point)
        return rule.should_continue(point, peers)

    return report


def run_local(
    study: Study,
    n_trials: int,
    context: TrialContext | None = None,
    halving: bool | None = None,
    on_result: Listener | None = None,
    progress: bool = True,
) -> Study:
    """Run trials until the study holds ``n_trials`` finished ones (resuming if it has some).

    Trials left RUNNING by a killed process are failed and their parameters re-queued first.
    ``halving`` overrides the study's ``halving.enabled``.
    """
    ctx = context or TrialContext.create(study.config, cache_dir=study.folder / "cache")
    cfg, hcfg = study.config.training, study.config.halving
    enabled = hcfg.enabled if halving is None else halving
    rule = HalvingRule(eta=hcfg.eta, min_peers=hcfg.min_peers) if enabled else None
    rungs = rung_steps(cfg.steps, cfg.rungs) if rule else [cfg.steps]
    metric = study.config.task.metric
    study.recover_interrupted()
    display = _Progress(study, n_trials) if progress else None
    try:
        while study.n_done() < n_trials:
            trial, candidate = study.ask()
            params, predicted, _ = check_budget(ctx, candidate)
            report = (
                halving_report(study, trial.number, [params, predicted], metric, rungs, rule)
                if rule
                else None
            )
            result = run_trial(ctx, candidate, report=report, eval_at=set(rungs))
            study.tell(trial, result)
            if on_result:
                on_result(trial.number, result)
            if display:
                display.update(trial.number, result)
    finally:
        if display:
            display.close()
    return study


class _Progress:
    """A rich progress line: trials done, last result, front size, hypervolume."""

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
        self.bar.start()

    def update(self, number: int, result: TrialResult) -> None:
        front = self.study.front()
        acc = result.metrics.get(self.study.config.task.metric)
        last = f"#{number} {result.status.value}" + (f" {acc:.3f}" if acc is not None else "")
        if result.status in (TrialStatus.FAILED, TrialStatus.INFEASIBLE) and result.error:
            last += f" ({result.error[:40]})"
        info = f"front {len(front)}  HV {self.study.hypervolume():.4g}  last {last}"
        self.bar.update(self.task, completed=self.study.n_done(), info=info)

    def close(self) -> None:
        self.bar.stop()


def default_root() -> Path:
    """Where studies live by default."""
    return Path("studies")

"""The ``autopeft`` command line. Imports stay lazy so ``--help`` and ``validate`` are fast."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from autopeft import stop
from autopeft.cli_args import build_parser
from autopeft.cluster import STORAGE_ENV
from autopeft.core.secrets import masked


def _methods(args: argparse.Namespace) -> int:
    from autopeft import methods

    reg = methods.registry()
    width = max(len(n) for n in reg)
    for name, spec in sorted(reg.items()):
        print(f"{name:<{width}}  {spec.backend:<6}  {spec.summary}")
    print(f"\n{len(reg)} module types")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from autopeft import tasks
    from autopeft.core.study_config import COMMON_TASK_FIELDS

    for name, kind in sorted(tasks.registry().items()):
        metrics = ", ".join(
            f"{m} ({'higher' if d == 'maximize' else 'lower'} is better"
            + (", default)" if m == kind.default_metric else ")")
            for m, d in kind.metrics.items()
        )
        print(f"{name}: {kind.summary}")
        print(f"  metrics: {metrics}")
        print(f"  fields:  {', '.join(COMMON_TASK_FIELDS + kind.fields)}")
        print(f"  default task: {kind.default_task}")
    return 0


def _samplers(args: argparse.Namespace) -> int:
    from autopeft.search import samplers

    reg = samplers.registry()
    width = max(len(n) for n in reg)
    for name, spec in sorted(reg.items()):
        startup = "-" if spec.default_startup is None else str(spec.default_startup)
        print(f"{name:<{width}}  start-up {startup:>3}  {spec.summary}")
    print(f"\n{len(reg)} samplers")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from autopeft.api import check
    from autopeft.core.errors import ConfigError

    text, problems = check(args.file, args.model)
    print(text)
    if problems:  # after the summary: its parameter range shows how far off the budget is
        raise ConfigError(problems, source=args.file)
    return 0


def _run(args: argparse.Namespace) -> int:
    from autopeft.api import run
    from autopeft.study_tools import at_least_one

    if args.n_trials is not None:
        at_least_one("--n-trials", args.n_trials, "leave it out to run the study file's n_trials")
    with stop.handled():
        study = run(
            args.file,
            n_trials=args.n_trials,
            executor=args.executor,
            storage=args.storage,
            root=args.root,
            progress=not args.quiet,
            address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent,
        )
    _print_front(study)
    return 0


def _print_front(study) -> None:
    front = sorted(study.front_points(), key=lambda nr: nr[1].trainable_params)
    metric = study.config.task.metric
    print(
        f"\nPareto front of {study.config.name!r}: {len(front)} of {study.n_done()} trials "
        f"(storage {masked(study.storage_url)})"
    )
    print(f"{'trial':>5}  {metric:>8}  {'params':>10}  {'memory MiB':>10}  candidate")
    for number, r in front:
        mem = r.peak_memory_mb if r.peak_memory_mb is not None else r.predicted_memory_mb
        print(
            f"{number:>5}  {r.metrics.get(metric, float('nan')):>8.4f}  "
            f"{r.trainable_params:>10,}  {mem:>10.1f}  {r.candidate.describe()}"
        )
    if not front:
        note = _empty_front_note(study)
        if note:
            print(note)


def _empty_front_note(study) -> str | None:
    """Why the front is empty, in one line with what to do, or None without any result."""
    from autopeft.core.trial_result import TrialStatus
    from autopeft.study_tools import status_counts

    results = study.results()
    if not results:
        return None
    infeasible = [r for _, r in results if r.status is TrialStatus.INFEASIBLE]
    if len(infeasible) == len(results):
        example = f"; e.g. {infeasible[0].error}" if infeasible[0].error else ""
        return (
            f"note: all {len(results)} trials were over budget (INFEASIBLE{example}): relax "
            "search_space.budget (max_trainable_params, max_memory_mb) or search smaller "
            "candidates; `autopeft validate FILE` shows how much of the space fits"
        )
    return (
        f"note: no trial completed ({status_counts(study)}); see each trial's error with "
        "`autopeft export STUDY --trials trials.csv`"
    )


def _submit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autopeft.api import load
    from autopeft.cluster import ClusterJob, shell_script, slurm_script, staged_study, submit
    from autopeft.core.errors import ConfigError, Problem
    from autopeft.core.study_config import StudyConfig

    if args.hosts and not args.shell:
        # SLURM chooses the nodes; hosts given with a SLURM script would be ignored silently.
        raise _usage(
            "--hosts names the workers of a --shell script; SLURM picks its nodes",
            "--hosts",
            "add --shell for a script that starts workers on these hosts over ssh, or leave "
            "out --hosts and give --nodes",
        )
    config = load(args.file)  # validate before anything is written or submitted
    if not isinstance(config, StudyConfig):
        raise ConfigError(
            Problem(
                "search_space",
                "`submit` needs a study file, not a bare search space",
                hint="wrap it: name: ..., search_space: FILE",
            ),
            source=args.file,
        )
    job = ClusterJob(
        study_name=config.name,
        # The study travels inside the script: the head node may not see this machine's files.
        study_yaml=staged_study(Path(args.file)),
        storage=args.storage,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_node=args.cpus_per_node,
        time=args.time,
        partition=args.partition,
        account=args.account,
        python=args.python,
        hosts=tuple(h for h in (args.hosts or "").split(",") if h),
        port=args.port,
        head_address=args.head_address,
        root=args.root,
    )
    script = shell_script(job) if args.shell else slurm_script(job)
    out = Path(args.output or f"{config.name}-{'shell' if args.shell else 'slurm'}.sh")
    print(submit(script, out, args.now, shell=args.shell, storage=args.storage))
    return 0


def _export(args: argparse.Namespace) -> int:
    from autopeft import study_tools

    if args.best and args.trial is not None:
        raise _usage("--best and --trial both name the trial to export", "--best", "give one")
    if (args.best or args.trial is not None) and not args.output:
        raise _usage(f"--output DIR is needed with {'--best' if args.best else '--trial'}")
    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)
    if args.trials:
        print(f"wrote {study_tools.export_trials(study, args.trials)}")
    number = study_tools.best_trial(study) if args.best else args.trial
    if number is not None:
        out = study_tools.export_trial(study, number, args.output, retrain=args.retrain)
        print(f"wrote trial {number} to {out}; its README.md is the model card")
        print(study_tools.export_statement(out))
    if number is None and not args.trials:
        raise _usage("give --best or --trial N with -o DIR, and/or --trials FILE.csv|json|parquet")
    return 0


def _reeval(args: argparse.Namespace) -> int:
    from autopeft import study_tools

    # Before the study is opened or anything trained: a bad count used to train nothing (or
    # drop front points) and store a summary without a mean.
    study_tools.at_least_one("--top", args.top, "the number of front points to re-evaluate")
    study_tools.at_least_one("--seeds", args.seeds, "training seeds per front point, e.g. 5")
    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from autopeft.reeval import reeval

    say = None if args.quiet else progress
    with stop.handled():
        rows = reeval(study, top=args.top, seeds=args.seeds, progress=say)
    for row in rows:
        runs = row["seeds"]
        if row["mean"] is None:  # every seed failed: no metric to average
            errors = dict.fromkeys(r.get("error") or r["status"] for r in runs)  # in order
            print(f"trial {row['trial']}: all {len(runs)} seeds failed: {'; '.join(errors)}")
            continue
        failed = sum(row["metric"] not in r for r in runs)
        print(
            f"trial {row['trial']}: {row['metric']} {row['mean']:.4f} +- {row['std']:.4f} "
            f"over {len(runs) - failed} seeds"
            + (f" ({failed} failed)" if failed else "")
            + f"; {row['trained']} trained now, {row['reused']} measured before"
        )
    return 0


def _report(args: argparse.Namespace) -> int:
    from autopeft import study_tools
    from autopeft.report import write_report

    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)
    out = write_report(study, args.output or f"reports/{study.config.name}.html")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, self-contained: opens offline)")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from autopeft import study_tools
    from autopeft.dashboard import dashboard

    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)
    dashboard(study, host=args.host, port=args.port)
    return 0


def _usage(text: str, path: str = "arguments", hint: str | None = None):
    from autopeft.core.errors import ConfigError, Problem

    return ConfigError(Problem(path, text, hint=hint))


#: What a stop leaves behind, per command (one line instead of a traceback).
INTERRUPTED = {
    "run": "finished trials are kept; run the same command to resume",
    "reeval": "front points re-evaluated so far are kept in the study",
    "export": "the export may be incomplete; run the command again",
    "report": "no report was written",
    "submit": "run the command again",
}

#: How the line starts, per stop signal.
STOPPED_BY = {
    signal.SIGINT: "interrupted",
    signal.SIGTERM: "terminated (SIGTERM)",
    signal.SIGHUP: "hung up (SIGHUP)",
}


def interrupted(command: str) -> int:
    """Say in one line what a stop signal left behind; return the exit code.

    128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), what a
    shell reports for a tool the signal ended; 0 for ``dashboard``, which runs until stopped.
    After SIGHUP the terminal may be gone: a line nobody can read is dropped, not an error.
    """
    signum = stop.received()
    if command == "dashboard":
        line = "optuna-dashboard stopped"
    else:
        line = f"{STOPPED_BY.get(signum, signum.name)}: {INTERRUPTED.get(command, 'stopped')}"
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # EIO on a hung-up terminal; the exit code still tells
        _to_devnull()
    return 0 if command == "dashboard" else 128 + signum


def _to_devnull() -> None:
    """Point stdout and stderr at /dev/null, so the interpreter's final flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        os.dup2(devnull, stream.fileno())


#: Each command's function.
COMMANDS = {
    "methods": _methods,
    "tasks": _tasks,
    "samplers": _samplers,
    "validate": _validate,
    "run": _run,
    "submit": _submit,
    "export": _export,
    "reeval": _reeval,
    "report": _report,
    "dashboard": _dashboard,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autopeft`` console script."""
    from autopeft.core.errors import AutopeftError

    args = build_parser().parse_args(argv)
    stop.reset()
    if getattr(args, "storage", "") is None and args.command != "submit":
        # A URL with a password stays off command lines (and out of `ps`) this way.
        args.storage = os.environ.get(STORAGE_ENV) or None
    try:
        return COMMANDS[args.command](args)
    except AutopeftError as err:
        print(f"error: {masked(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted(args.command)
    except BrokenPipeError:
        # The reader went away (`autopeft methods | head`): stop quietly, as Unix tools do.
        _to_devnull()  # so the interpreter's final flush does not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())

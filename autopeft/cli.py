"""The ``autopeft`` command line. Imports stay lazy so ``--help`` and ``validate`` are fast."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from autopeft import __version__
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
    with _ctrl_c_stops_training():
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


@contextlib.contextmanager
def _ctrl_c_stops_training():
    """Ctrl-C stops a run even when its KeyboardInterrupt lands somewhere that drops it.

    See :mod:`autopeft.stop`; only the main thread can take signals, and the handler it had
    is put back afterwards.
    """
    from autopeft import stop

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop.REQUESTED.clear()
    previous = signal.signal(signal.SIGINT, stop.on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_front(study) -> None:
    front = sorted(study.front(), key=lambda nr: nr[1].trainable_params)
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

    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)
    if args.trials:
        print(f"wrote {study_tools.export_trials(study, args.trials)}")
    if args.trial is not None:
        if not args.output:
            raise _usage("--output DIR is needed with --trial")
        out = study_tools.export_trial(study, args.trial, args.output, retrain=args.retrain)
        print(f"wrote {out} (load it with autopeft.train.export.load_exported)")
    if args.trial is None and not args.trials:
        raise _usage("give --trial N -o DIR and/or --trials FILE.csv|json|parquet")
    return 0


def _reeval(args: argparse.Namespace) -> int:
    from autopeft import study_tools

    # Before the study is opened or anything trained: a bad count used to train nothing (or
    # drop front points) and store a summary without a mean.
    study_tools.at_least_one("--top", args.top, "the number of front points to re-evaluate")
    study_tools.at_least_one("--seeds", args.seeds, "training seeds per front point, e.g. 5")
    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)
    for row in study_tools.reeval(study, top=args.top, seeds=args.seeds):
        runs = row["seeds"]
        if row["mean"] is None:  # every seed failed: no metric to average
            errors = dict.fromkeys(r.get("error") or r["status"] for r in runs)  # in order
            print(f"trial {row['trial']}: all {len(runs)} seeds failed: {'; '.join(errors)}")
            continue
        failed = sum(row["metric"] not in r for r in runs)
        print(
            f"trial {row['trial']}: {row['metric']} {row['mean']:.4f} +- {row['std']:.4f} "
            f"over {len(runs) - failed} seeds" + (f" ({failed} failed)" if failed else "")
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

    study = study_tools.open_study(args.study, storage=args.storage, root=args.root)
    study_tools.dashboard(study, port=args.port)
    return 0


def _usage(text: str, path: str = "arguments", hint: str | None = None):
    from autopeft.core.errors import ConfigError, Problem

    return ConfigError(Problem(path, text, hint=hint))


def _study_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of every command that works on an existing study (read, never created)."""
    p.add_argument(
        "study", help="the study YAML, its folder (ROOT/NAME), or its name (looked up in --root)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help=f"storage URL (default: ${STORAGE_ENV}, else the study file's, else "
        "ROOT/NAME/study.db)",
    )
    p.add_argument(
        "--root",
        default=None,
        help="folder of study folders, as given to run (default: studies; a study folder "
        "given as STUDY is its own location)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="autopeft",
        description="Find the Pareto front of PEFT configurations: task accuracy vs trainable "
        "parameters vs peak memory.",
    )
    parser.add_argument("--version", action="version", version=f"autopeft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("methods", help="list the registered PEFT module types")
    p.set_defaults(func=_methods)
    p = sub.add_parser("tasks", help="list the task kinds, their metrics and task fields")
    p.set_defaults(func=_tasks)

    p = sub.add_parser(
        "validate",
        help="check a search-space or study file and summarise it on a model",
        description="Check a search-space or study file; print its parameters, number of "
        "configurations and the trainable-parameter range it spans on a model.",
    )
    p.add_argument("file", help="a search-space YAML or a study YAML")
    p.add_argument(
        "--model",
        default=None,
        help="bundled short name (minilm) or a local model folder; default: the study's "
        "model, or minilm for a bare space",
    )
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "run",
        help="run or resume a study and print its Pareto front",
        description="Run a study file: sample candidates, train them (with Pareto-aware "
        "successive halving), record every trial in the study's storage. On an existing "
        "study it resumes: finished trials are kept, interrupted ones re-run.",
    )
    p.add_argument("file", help="a study YAML")
    p.add_argument(
        "--n-trials", type=int, default=None, help="total trials, >= 1 (default: the file's)"
    )
    p.add_argument(
        "--executor", choices=["local", "ray"], default=None, help="default: the file's (local)"
    )
    p.add_argument("--address", default=None, help="Ray cluster: auto or ray://HOST:PORT")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray: CPUs per trial")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="Ray: GPU share per trial, e.g. 0.25 packs 4 trials per GPU (default: as many as "
        "memory at the largest predicted trial and CPUs allow, up to 16)",
    )
    p.add_argument("--max-concurrent", type=int, default=None, help="Ray: trials at once")
    p.add_argument(
        "--storage",
        default=None,
        help=f"Optuna storage URL (default: ${STORAGE_ENV}, else SQLite in the study folder)",
    )
    p.add_argument("--root", default="studies", help="folder of study folders (default: studies)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "submit",
        help="write (and submit) a cluster batch script that runs a study on Ray",
        description="Write a SLURM batch script (default) that starts a Ray head and workers "
        "on the allocation and runs the study with --executor ray; --now submits it with "
        "sbatch. --shell writes a plain-shell variant for machines without SLURM (workers "
        "started over ssh on --hosts).",
    )
    p.add_argument("file", help="a study YAML")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true", help="a SLURM sbatch script (default)")
    mode.add_argument("--shell", action="store_true", help="a plain-shell script (ssh)")
    p.add_argument("--nodes", type=int, default=1, help="SLURM nodes (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=None,
        help="GPUs per node (default: each node's GPUs as SLURM allocated them, else as Ray "
        "detects them; 0 for CPU-only)",
    )
    p.add_argument("--cpus-per-node", type=int, default=8, help="CPUs per node (default 8)")
    p.add_argument("--time", default="04:00:00", help="SLURM time limit (default 04:00:00)")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--account", default=None, help="SLURM account")
    p.add_argument(
        "--hosts", default=None, help="--shell: worker hosts, comma-separated (required)"
    )
    p.add_argument(
        "--head-address",
        default=None,
        help="the head's IPv4 address as the other nodes reach it (default: the address of "
        "the head's default route, detected where the script runs)",
    )
    p.add_argument("--port", type=int, default=6379, help="the Ray head's port (default 6379)")
    p.add_argument(
        "--storage",
        default=None,
        help="study storage URL the driver on the head can reach (default: SQLite in the "
        "study folder on the head); one with a password is read from $AUTOPEFT_STORAGE",
    )
    p.add_argument(
        "--root", default=None, help="autopeft run --root on the head (default: studies)"
    )
    p.add_argument("--python", default="python", help="Python on the nodes (default: python)")
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="script path (default: NAME-slurm.sh, or NAME-shell.sh with --shell)",
    )
    p.add_argument("--now", action="store_true", help="SLURM: submit with sbatch right away")
    p.set_defaults(func=_submit)

    p = sub.add_parser(
        "export",
        help="export a trial as a loadable adapter, or all trials as a table",
        description="--trial N -o DIR writes a COMPLETE trial's trained adapter: autopeft.json "
        "(the configuration and training recipe), trainable.safetensors, and for peft-backed "
        "methods a standard peft adapter folder (PeftModel.from_pretrained); DIR is new, empty "
        "or an earlier export (replaced). --retrain trains it at full fidelity first (also a "
        "FAILED or PRUNED trial). --trials FILE writes every trial (.csv/.json/.parquet).",
    )
    _study_arguments(p)
    p.add_argument("--trial", type=int, default=None, help="trial number")
    p.add_argument("-o", "--output", default=None, help="output folder for --trial")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train at full fidelity first (needed to export a trial that did not complete)",
    )
    p.add_argument("--trials", default=None, help="write all trials to FILE.csv|json|parquet")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "reeval",
        help="retrain the best front points with several seeds (mean/std)",
        description="Retrain the top-K front points (by the task metric) with --seeds "
        "training seeds and store per-seed metrics, mean and std in the study.",
    )
    _study_arguments(p)
    p.add_argument(
        "--top", type=int, default=5, help="front points to re-evaluate, >= 1 (default 5)"
    )
    p.add_argument("--seeds", type=int, default=5, help="training seeds, >= 1 (default 5)")
    p.set_defaults(func=_reeval)

    p = sub.add_parser(
        "report",
        help="write the study's self-contained HTML report",
        description="Write one HTML file (plotly embedded, opens offline): 2-D Pareto fronts "
        "per objective pair and a 3-D view, hypervolume over trials, seed robustness of the "
        "re-evaluated front points (autopeft reeval), placement heatmap, per-module summary, "
        "search cost, the trial table with failure reasons, and the study configuration.",
    )
    _study_arguments(p)
    p.add_argument("-o", "--output", default=None, help="HTML path (default reports/NAME.html)")
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard for a study on 127.0.0.1",
        description="Start optuna-dashboard for the study's storage and print its URL.",
    )
    _study_arguments(p)
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=_dashboard)
    return parser


#: What Ctrl-C leaves behind, per command (one line instead of a traceback).
INTERRUPTED = {
    "run": "interrupted: finished trials are kept; run the same command to resume",
    "reeval": "interrupted: front points re-evaluated so far are kept in the study",
    "export": "interrupted: the export may be incomplete; run the command again",
    "report": "interrupted: no report was written",
    "submit": "interrupted: run the command again",
    "dashboard": "optuna-dashboard stopped",
}


def interrupted(command: str) -> int:
    """Say in one line what a Ctrl-C left behind; return the exit code.

    130 (128 + SIGINT, what a shell reports for a tool stopped by Ctrl-C); 0 for
    ``dashboard``, which runs until Ctrl-C stops it.
    """
    print(INTERRUPTED.get(command, "interrupted"), file=sys.stderr)
    return 0 if command == "dashboard" else 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autopeft`` console script."""
    from autopeft.core.errors import AutopeftError

    args = build_parser().parse_args(argv)
    if getattr(args, "storage", "") is None and args.command != "submit":
        # A URL with a password stays off command lines (and out of `ps`) this way.
        args.storage = os.environ.get(STORAGE_ENV) or None
    try:
        return args.func(args)
    except AutopeftError as err:
        print(f"error: {masked(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted(args.command)
    except BrokenPipeError:
        # The reader went away (`autopeft methods | head`): stop quietly, as Unix tools do.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())

"""The ``autopeft`` command line. Imports stay lazy so ``--help`` and ``validate`` are fast."""

from __future__ import annotations

import argparse
import sys

from autopeft import __version__


def _methods(args: argparse.Namespace) -> int:
    from autopeft import methods

    reg = methods.registry()
    width = max(len(n) for n in reg)
    for name, spec in sorted(reg.items()):
        print(f"{name:<{width}}  {spec.backend:<6}  {spec.summary}")
    print(f"\n{len(reg)} module types")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from autopeft.api import validate

    print(validate(args.file, args.model))
    return 0


def _run(args: argparse.Namespace) -> int:
    from autopeft.api import run

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
    front = sorted(study.front(), key=lambda nr: nr[1].trainable_params)
    metric = study.config.task.metric
    print(
        f"\nPareto front of {study.config.name!r}: {len(front)} of {study.n_done()} trials "
        f"(storage {study.storage_url})"
    )
    print(f"{'trial':>5}  {metric:>8}  {'params':>10}  {'memory MiB':>10}  candidate")
    for number, r in front:
        mem = r.peak_memory_mb if r.peak_memory_mb is not None else r.predicted_memory_mb
        print(
            f"{number:>5}  {r.metrics.get(metric, float('nan')):>8.4f}  "
            f"{r.trainable_params:>10,}  {mem:>10.1f}  {r.candidate.describe()}"
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
    p.add_argument("--n-trials", type=int, default=None, help="total trials (default: the file's)")
    p.add_argument(
        "--executor", choices=["local", "ray"], default=None, help="default: the file's (local)"
    )
    p.add_argument("--address", default=None, help="Ray cluster: auto or ray://HOST:PORT")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray: CPUs per trial")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="Ray: GPU share per trial, e.g. 0.25 packs 4 trials per GPU (default: from the "
        "largest predicted memory)",
    )
    p.add_argument("--max-concurrent", type=int, default=None, help="Ray: trials at once")
    p.add_argument(
        "--storage", default=None, help="Optuna storage URL (default: SQLite in the study folder)"
    )
    p.add_argument("--root", default="studies", help="folder of study folders (default: studies)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autopeft`` console script."""
    from autopeft.core.errors import AutopeftError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AutopeftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

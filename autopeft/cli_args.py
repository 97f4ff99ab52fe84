"""The ``autopeft`` command line's arguments (kept apart from the commands, which import lazily)."""

from __future__ import annotations

import argparse

from autopeft import __version__
from autopeft.cluster import STORAGE_ENV


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

    sub.add_parser("methods", help="list the registered PEFT module types")
    sub.add_parser("tasks", help="list the task kinds, their metrics and task fields")
    sub.add_parser("samplers", help="list the registered samplers and their start-up defaults")

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

    p = sub.add_parser(
        "export",
        help="export a trial as a loadable adapter, or all trials as a table",
        description="--trial N -o DIR (or --best -o DIR: the front point best on the first "
        "objective) writes a COMPLETE trial's trained adapter: autopeft.json (the "
        "configuration, training recipe and what loads it), README.md (a model card), "
        "trainable.safetensors, and for peft-backed methods a standard peft adapter "
        "(PeftModel.from_pretrained; partial when autopeft's own modules are in the candidate: "
        "the export says so); DIR is new, empty or an earlier export (replaced). --retrain "
        "trains it at full fidelity first (also a FAILED or PRUNED trial). --trials FILE "
        "writes every trial (.csv/.json/.parquet).",
    )
    _study_arguments(p)
    p.add_argument("--trial", type=int, default=None, help="trial number")
    p.add_argument(
        "--best", action="store_true", help="the front point best on the first objective"
    )
    p.add_argument("-o", "--output", default=None, help="output folder for --trial/--best")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train at full fidelity first (needed to export a trial that did not complete)",
    )
    p.add_argument("--trials", default=None, help="write all trials to FILE.csv|json|parquet")

    p = sub.add_parser(
        "reeval",
        help="retrain the best front points with several seeds (mean/std)",
        description="Retrain the top-K front points (by the task metric) with --seeds "
        "training seeds (0..N-1) and store per-seed metrics, mean and std in the study. A "
        "seed already measured (by an earlier reeval, or the search itself for the study's "
        "training.seed) is not trained again: more --seeds later trains only the new ones.",
    )
    _study_arguments(p)
    p.add_argument(
        "--top", type=int, default=5, help="front points to re-evaluate, >= 1 (default 5)"
    )
    p.add_argument("--seeds", type=int, default=5, help="training seeds, >= 1 (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")

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

    p = sub.add_parser(
        "dashboard",
        help="serve optuna-dashboard for a study (default on 127.0.0.1:8080)",
        description="Start optuna-dashboard for the study's storage and print its URL. "
        "Objectives are labelled with their metric names. Nothing is written to the study.",
    )
    _study_arguments(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only, or through an "
        "SSH tunnel; 0.0.0.0: every interface, reachable from other machines)",
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return parser

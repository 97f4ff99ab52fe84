"""The search driver's cost per trial as the study grows, this checkout against a baseline.

What a local search costs besides training, per trial, with N trials already in the study:
the sampler's own calls, storage reads and writes, the define-by-run sampling of the
candidate, ``Study.tell``, the results / front / hypervolume bookkeeping (what the progress
display and the known-candidate checks read), the runner (the synthetic one of
``bench/overheads.py``: no training) and the rest of the driver loop (the proposer's claims
and lookups, the display). A study of N finished random trials over overheads.py's mixed
space is filled once (this checkout, SQLite) and copied for every arm (a SQLite file, or a
PostgreSQL database made from a template); each arm then runs ``run_local`` with the
progress display for a window of trials more in a child process started in its checkout
(its own ``autopeft`` first on the path), timing the components with wrappers around the
objects the public API reaches (exclusive times; storage calls inside the sampler count as
the sampler's). After the window, single calls of ``front_points``, ``hypervolume``,
``n_done`` and ``results`` are timed. An arm that runs past ``--budget-s`` stops there and
reports the trials it finished (or none).

Make the baseline with ``git worktree add /tmp/base <commit>``.

    OMP_NUM_THREADS=1 python -m bench.driver_cost --baseline /tmp/base --tmp /dev/shm

Results: bench/results/driver_cost.json and .md (``--name``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import autopeft
from bench.common import RESULTS, ROOT, git_commit, provenance, run_in_checkout, write_results
from bench.driver_cost_report import PARTS, markdown
from bench.overheads import SPACE, Synthetic

NAME = "driver-cost"
STORAGE_READS = tuple(
    "get_all_trials get_trial get_trial_id_from_study_id_trial_number get_study_user_attrs "
    "get_study_system_attrs get_study_directions _get_stale_trial_ids".split()
)
STORAGE_WRITES = tuple(
    "create_new_trial set_trial_param set_trial_state_values set_trial_user_attr "
    "set_trial_system_attr set_study_user_attr finish_trial".split()
)
SAMPLER_CALLS = tuple(
    "infer_relative_search_space sample_relative sample_independent before_trial "
    "after_trial".split()
)
#: Study methods that read results, the front and the hypervolume (both checkouts' names).
LEDGER_CALLS = tuple(
    "results known_results front_points hypervolume reference_point n_done synced "
    "pruned_values".split()
)


def study_config(sampler: str) -> Any:
    """The study every arm opens: overheads.py's mixed space, no halving, seed 0."""
    return autopeft.study_from_dict(
        {
            "name": NAME,
            "model": "minilm",
            "search_space": SPACE,
            "halving": {"enabled": False},
            "sampler": {"name": sampler, "seed": 0},
        }
    )


# -- the child: one arm ----------------------------------------------------------------------


class OutOfTime(BaseException):
    """The arm's time is up (a BaseException: no ``except Exception`` in the driver eats it)."""


class Clock:
    """Exclusive time per category of the wrapped calls made by the main thread."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.stack: list[list[Any]] = []
        self.sampling = 0  # depth inside the sampler: its storage reads are its own cost
        self.main = threading.get_ident()

    def wrap(self, owner: Any, name: str, category: str) -> None:
        """Time ``owner.name`` (a class's function or an instance's bound method)."""
        real = getattr(owner, name, None)
        if real is None or getattr(real, "_timed", False):
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.sampling or threading.get_ident() != self.main:
                return real(*args, **kwargs)
            self.calls[name] += 1
            if name == "get_all_trials":  # (study_id, deepcopy=True, states=None)
                deep = kwargs.get("deepcopy", args[1] if len(args) > 1 else True)
                self.calls["deep_copied_reads"] += bool(deep)
            frame = [time.perf_counter(), 0.0]
            self.stack.append(frame)
            self.sampling += category == "sampler"
            try:
                out = real(*args, **kwargs)
                if name == "get_all_trials":
                    self.calls["rows_read"] += len(out)
                return out
            finally:
                self.sampling -= category == "sampler"
                self.stack.pop()
                elapsed = time.perf_counter() - frame[0]
                self.totals[category] += elapsed - frame[1]
                if self.stack:
                    self.stack[-1][1] += elapsed

        timed._timed = True  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def snapshot(self) -> dict[str, Any]:
        """The totals and call counts so far."""
        return {"totals": dict(self.totals), "calls": dict(self.calls)}


def instrument(study: Any, runner: Synthetic) -> Clock:
    """Wrap the sampler classes, the storage, the study's methods, the space and the runner."""
    import optuna

    clock = Clock()
    for cls in {type(study.optuna.sampler), optuna.samplers.RandomSampler}:
        for name in SAMPLER_CALLS:
            clock.wrap(cls, name, "sampler")
    storage = study.optuna._storage
    for name in STORAGE_READS:
        clock.wrap(storage, name, "storage_read")
    for name in STORAGE_WRITES:
        clock.wrap(storage, name, "storage_write")
    clock.wrap(autopeft.Study, "tell", "tell")
    clock.wrap(autopeft.Study, "store_reused", "tell")  # a drafted re-proposal (not in older code)
    for name in LEDGER_CALLS:
        clock.wrap(autopeft.Study, name, "ledger")
    clock.wrap(study.space, "sample", "define_by_run")
    clock.wrap(runner, "run", "runner")
    clock.wrap(runner, "budget", "runner")
    validate = autopeft.TrialResult.model_validate

    def counted(obj: Any, *args: Any, **kwargs: Any) -> Any:
        clock.calls["result_validations"] += 1
        return validate(obj, *args, **kwargs)

    autopeft.TrialResult.model_validate = counted  # type: ignore[method-assign]
    return clock


@contextlib.contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`OutOfTime` in the main thread after ``seconds``."""

    def ring(signum: int, frame: Any) -> None:
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed_call(fn: Callable[[], Any], seconds: float) -> float | None:
    """Milliseconds of one call of ``fn`` (None: it ran past ``seconds``)."""
    start = time.perf_counter()
    try:
        with alarm(seconds):
            fn()
    except OutOfTime:
        return None
    return round(1000 * (time.perf_counter() - start), 2)


def per_trial(first: dict[str, Any], last: dict[str, Any], trials: int) -> dict[str, Any]:
    """Milliseconds and counts per trial between two snapshots ``trials`` trials apart."""
    wall = last["t"] - first["t"]
    parts = {p: last["totals"].get(p, 0.0) - first["totals"].get(p, 0.0) for p in PARTS}
    parts["driver_loop"] = wall - sum(v for k, v in parts.items() if k != "driver_loop")
    calls = {k: v - first["calls"].get(k, 0) for k, v in last["calls"].items()}
    reads = sum(calls.get(n, 0) for n in STORAGE_READS)
    writes = sum(calls.get(n, 0) for n in STORAGE_WRITES)
    return {
        "ms": {"total": round(1000 * wall / trials, 2)}
        | {p: round(1000 * v / trials, 2) for p, v in parts.items()},
        "per_trial": {
            "asks": calls.get("create_new_trial", 0) / trials,
            "storage_reads": reads / trials,
            "storage_writes": writes / trials,
            "rows_read": calls.get("rows_read", 0) / trials,
            "deep_copied_reads": calls.get("deep_copied_reads", 0) / trials,
            "result_validations": calls.get("result_validations", 0) / trials,
        },
        "calls_per_trial": {k: round(v / trials, 2) for k, v in sorted(calls.items())},
    }


def worker(spec: dict[str, Any]) -> None:
    """Run one arm (in its checkout's process) and write its JSON to ``spec['out']``."""
    config = study_config(spec["sampler"])
    study = autopeft.Study(config, root=spec["root"], storage=spec["url"])
    runner = Synthetic(study)
    clock = instrument(study, runner)
    marks: list[dict[str, Any]] = []

    def tick(number: int, result: Any) -> None:
        marks.append({"t": time.perf_counter(), **clock.snapshot()})

    start = time.perf_counter()
    stopped = False
    try:
        with alarm(spec["budget_s"]):
            autopeft.run_local(
                study, spec["n"] + spec["window"], runner=runner, on_result=tick, progress=True
            )
    except OutOfTime:
        stopped = True
    out: dict[str, Any] = {
        "autopeft": str(Path(autopeft.__file__).parent),
        "trials": len(marks),
        "stopped_by_budget": stopped,
        "first_trial_s": round(marks[0]["t"] - start, 2) if marks else None,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }
    if len(marks) >= 2:  # from the first trial's end: the start-up (one-off reads) is apart
        out |= per_trial(marks[0], marks[-1], len(marks) - 1)
    probe_s = spec["probe_s"]
    out["probes_ms"] = {
        "front_points": timed_call(study.front_points, probe_s),
        "hypervolume": timed_call(study.hypervolume, probe_s),
        "n_done": timed_call(study.n_done, probe_s),
        "results": timed_call(study.results, probe_s),
    }
    Path(spec["out"]).write_text(json.dumps(out))


# -- the parent: fill, copy, run the arms ----------------------------------------------------


def fill(root: Path, sizes: list[int]) -> dict[int, Path]:
    """SQLite files of the study with N finished random trials, for each N (this checkout).

    Files already in ``root`` (``--keep``) are used as they are.
    """
    files = {n: root / f"fill-{n}.db" for n in sizes}
    if all(path.is_file() for path in files.values()):
        return files
    shutil.rmtree(root / "fill", ignore_errors=True)  # grown from empty to each N in turn
    study = autopeft.Study(study_config("random"), root=root / "fill")
    runner = Synthetic(study)
    for n in sorted(sizes):
        start = time.perf_counter()
        autopeft.run_local(study, n, runner=runner, progress=False)
        shutil.copy(root / "fill" / NAME / "study.db", files[n])
        print(f"filled {n} trials in {time.perf_counter() - start:.0f} s", flush=True)
    return files


class Postgres:
    """Template databases of the filled studies on one throw-away server; a copy per arm."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine

        self.url = url
        self.admin = create_engine(url, isolation_level="AUTOCOMMIT")
        self.count = 0

    def _db(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def template(self, n: int, sqlite: Path) -> None:
        """Database ``fill_N`` holding the study of ``sqlite`` (kept if the server has it)."""
        import optuna
        from sqlalchemy import text

        with self.admin.connect() as conn:
            query = text("SELECT 1 FROM pg_database WHERE datname = :name")
            if conn.execute(query, {"name": f"fill_{n}"}).first():
                return
            conn.execute(text(f"CREATE DATABASE fill_{n}"))
        source = optuna.storages.RDBStorage(f"sqlite:///{sqlite}")
        target = optuna.storages.RDBStorage(self._db(f"fill_{n}"))
        optuna.copy_study(from_study_name=NAME, from_storage=source, to_storage=target)
        for storage in (source, target):
            storage.engine.dispose()  # a template must have no open sessions

    @contextlib.contextmanager
    def copy(self, n: int) -> Iterator[str]:
        """The URL of a fresh database copied from ``fill_N`` (dropped afterwards)."""
        from sqlalchemy import text

        self.count += 1
        name = f"arm_{self.count}"
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE fill_{n}"))
        try:
            yield self._db(name)
        finally:
            with self.admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def run_arm(checkout: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """One arm in a child process started in ``checkout`` (its packages first on the path)."""
    # The child imports ``checkout``'s autopeft but this checkout's ``bench`` package: the
    # helpers this script needs may postdate the baseline (its bench lacked run_in_checkout).
    bench = Path(__file__).resolve().parent
    code = (
        "import importlib.util, json, sys\n"
        f"pkg = importlib.util.spec_from_file_location('bench', {str(bench / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(bench)!r}])\n"
        "sys.modules['bench'] = importlib.util.module_from_spec(pkg)\n"
        "pkg.loader.exec_module(sys.modules['bench'])\n"
        f"spec = importlib.util.spec_from_file_location('driver_cost', {str(__file__)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.worker(json.loads(sys.argv[1]))\n"
    )
    limit = spec["budget_s"] + 4 * spec["probe_s"] + 600  # start-up reads and the probes
    done = run_in_checkout(checkout, code, json.dumps(spec), timeout=limit)
    if isinstance(done, str):
        return {"error": done}
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    return json.loads(Path(spec["out"]).read_text())


def run_all(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every arm: storage x N x sampler x checkout, the two checkouts back to back."""
    from bench.faults import postgres

    checkouts = {"baseline": args.baseline.resolve(), "this": ROOT}
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    files = fill(args.keep or work, args.sizes)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        server = None
        if "postgresql" in args.storages:
            server = Postgres(stack.enter_context(postgres(args.postgres)))
            for n, path in files.items():
                server.template(n, path)
        for storage in args.storages:
            for n in args.sizes:
                for sampler in args.samplers:
                    if sampler != "random" and n > args.model_max:
                        continue
                    for label, checkout in checkouts.items():
                        root = work / f"arm-{len(rows)}"
                        with contextlib.ExitStack() as arm:
                            if storage == "sqlite":
                                (root / NAME).mkdir(parents=True)
                                shutil.copy(files[n], root / NAME / "study.db")
                                url = f"sqlite:///{root / NAME / 'study.db'}"
                            else:
                                assert server is not None
                                url = arm.enter_context(server.copy(n))
                            spec = {
                                "url": url,
                                "root": str(root),
                                "n": n,
                                "window": args.window,
                                "sampler": sampler,
                                "budget_s": args.budget_s,
                                "probe_s": args.probe_s,
                                "out": str(work / f"arm-{len(rows)}.json"),
                            }
                            result = run_arm(checkout, spec)
                        shutil.rmtree(root, ignore_errors=True)
                        row = {"storage": storage, "n": n, "sampler": sampler, "code": label}
                        rows.append(row | result)
                        print(json.dumps(rows[-1]), flush=True)
    return rows


def commit_ms(folder: Path, n: int = 40) -> float:
    """Median milliseconds of one SQLite commit of a one-row insert in ``folder`` (fsync)."""
    import sqlite3
    import statistics

    path = Path(tempfile.mkdtemp(dir=folder)) / "probe.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER)")
    times = []
    for i in range(n):
        start = time.perf_counter()
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        conn.commit()
        times.append(time.perf_counter() - start)
    conn.close()
    shutil.rmtree(path.parent, ignore_errors=True)
    return round(1000 * statistics.median(times), 2)


def main() -> None:
    """Fill, run every arm in both checkouts, write the tables."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.driver_cost", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--baseline", type=Path, required=True, help="a checkout to compare to")
    ap.add_argument("--sizes", default="1000,10000", help="finished trials before the window")
    ap.add_argument("--samplers", default="random,tpe")
    ap.add_argument(
        "--model-max", type=int, default=1000, help="largest N for samplers other than random"
    )
    ap.add_argument("--storages", default="sqlite,postgresql")
    ap.add_argument("--window", type=int, default=30, help="trials measured per arm")
    ap.add_argument("--budget-s", type=float, default=300.0, help="seconds per arm's window")
    ap.add_argument("--probe-s", type=float, default=60.0, help="seconds per probe call")
    ap.add_argument("--postgres", help="a server URL (default: scripts/postgres.sh starts one)")
    ap.add_argument("--tmp", type=Path, help="folder for the studies (e.g. /dev/shm)")
    ap.add_argument(
        "--keep",
        type=Path,
        help="keep the filled studies here and reuse them (with --postgres: its templates)",
    )
    ap.add_argument("--name", default="driver_cost")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.samplers = args.samplers.split(",")
    args.storages = args.storages.split(",")
    if args.tmp:
        tempfile.tempdir = str(args.tmp)  # the studies and the PostgreSQL server's data
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="driver-cost-"))
    try:
        rows = run_all(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        **provenance(),
        "baseline": git_commit(args.baseline.resolve()),
        "this": git_commit(ROOT),
        "window": args.window,
        "budget_s": args.budget_s,
        "probe_s": args.probe_s,
        "tmp": str(args.tmp or tempfile.gettempdir()),
        "disk": str(ROOT / "studies"),
        "commit_ms": {
            "tmp": commit_ms(Path(args.tmp or tempfile.gettempdir())),
            "disk": commit_ms(ROOT / "studies"),
        },
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }
    text = markdown(rows, meta)
    write_results(args.out / args.name, {"meta": meta, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()

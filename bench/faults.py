"""Fault injection: SIGKILLs, Ctrl-C and concurrent drivers against ``autopeft run``.

A tiny real study runs as ``python -m autopeft.cli run STUDY.yaml --root ROOT --quiet`` in its
own process group. ``kill-*``: SIGKILLs of the group at seeded random delays (start-up,
sampling, mid-trial, between trials), each followed by a restart; a run that ends before its
kill was its study's last and the next kill goes to a fresh study (a *round*). ``ctrl-c-*``:
SIGINT to the group mid-trial (as a terminal sends it), then a resume. ``drivers-N``: N local
drivers started together on one PostgreSQL study. Finished trials are snapshot after each
kill; each study is checked at its end (:meth:`Outcome.missed`); exit 1 if a goal is missed.
Run: ``OMP_NUM_THREADS=1 python -m bench.faults`` (~10 min on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import psutil
import yaml
from optuna.trial import FrozenTrial, TrialState

from bench.common import RESULTS, ROOT, provenance, write_results
from bench.fault_checks import (
    Outcome,
    evaluate,
    key,
    load_trials,
    phase,
    requeue_errors,
    snapshot,
    trained,
)

SCENARIOS = ("kill-local", "kill-ray", "ctrl-c-local", "ctrl-c-ray", "drivers-2", "drivers-3")
INTERRUPTED_LINE = "interrupted: finished trials are kept; run the same command to resume"
SPEC = {
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {
        "modules": {"lora": {"rank": [2, 4, 8, 16]}, "serial_adapter": {"size": [0, 4, 8, 16]}},
        "layers": "search",
    },
    "training": {"steps": 20, "batch_size": 8, "eval_every": 20, "eval_examples": 32},
    "sampler": {"name": "tpe", "n_startup_trials": 4},
    "halving": {"enabled": False},
}
ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE")}
ENV |= {"TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV |= {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}  # as tests/test_ray.py
#: First guesses (s) of a run's start-up and of one trial, refined from what the runs show.
GUESS = {"local": (6.5, 1.0), "ray": (9.0, 2.0)}
EARLY = 0.3  # share of the kills drawn inside the start-up estimate
LATE_TRIALS = 4  # the others fall up to this many trial lengths after the start-up
RUN_TIMEOUT_S = 600


class Driver:
    """One ``autopeft run`` in its own session; its descendants are found by a token."""

    def __init__(self, study: Path, executor: str, storage: str | None = None) -> None:
        self.token = uuid.uuid4().hex
        self.ray_tmp = tempfile.mkdtemp(prefix="apf-", dir="/tmp") if executor == "ray" else None
        cmd = [sys.executable, "-m", "autopeft.cli", "run", str(study), "--root", str(study.parent)]
        cmd += ["--quiet"] + (["--executor", "ray"] if executor == "ray" else [])
        cmd += ["--storage", storage] if storage else []
        env = dict(os.environ, **ENV, APF_FAULTS_TOKEN=self.token)
        if self.ray_tmp:
            env["RAY_TMPDIR"] = self.ray_tmp
        self.err = tempfile.TemporaryFile(mode="w+")
        self.started, self.t0, self.created = dt.datetime.now(), time.perf_counter(), time.time()
        out, new_group = subprocess.DEVNULL, True
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=out, stderr=self.err, start_new_session=new_group
        )
        self.children: list[psutil.Process] = []
        self.left: list[str] = []

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the driver's whole process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stderr(self) -> str:
        """Everything the driver wrote to stderr."""
        self.err.seek(0)
        return self.err.read()

    def remember_children(self) -> None:
        """Note the driver's descendants now, to look for them after it exits."""
        with contextlib.suppress(psutil.Error):
            self.children = psutil.Process(self.proc.pid).children(recursive=True)

    def ours(self) -> list[psutil.Process]:
        """Live processes of this run: children, the token in their environment, the Ray dir."""
        found = {p.pid: p for p in self.children}
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                in_cmd = self.ray_tmp and self.ray_tmp in " ".join(p.info["cmdline"] or [])
                if in_cmd or p.environ().get("APF_FAULTS_TOKEN") == self.token:
                    found[p.pid] = p
        found.pop(self.proc.pid, None)  # the driver itself is waited for
        return [p for p in found.values() if alive(p)]

    def reap(self, grace: float) -> int:
        """Wait ``grace`` s for the run's processes to end, SIGKILL the rest; their count."""
        deadline = time.time() + grace
        while (left := self.ours()) and time.time() < deadline:
            time.sleep(0.25)
        self.left = []  # "pid name (seconds from the driver's start to the process's)"
        for p in left:
            with contextlib.suppress(psutil.Error):
                self.left.append(f"{p.pid} {p.name()} ({p.create_time() - self.created:.0f} s)")
                p.kill()
        self.err.close()
        if self.ray_tmp:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return len(left)


def alive(p: psutil.Process) -> bool:
    """Whether ``p`` still runs (a zombie does not)."""
    with contextlib.suppress(psutil.Error):
        return p.status() != psutil.STATUS_ZOMBIE
    return False


def write_study(folder: Path, name: str, n_trials: int) -> tuple[Path, str]:
    """Write the study file; returns it and the SQLite URL a run with ``--root folder`` uses."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **SPEC, "n_trials": n_trials}))
    return path, f"sqlite:///{folder / name / 'study.db'}"


def run_to_end(driver: Driver, out: Outcome, what: str) -> int | None:
    """Wait for a run meant to finish; a failure or timeout is recorded."""
    rc = driver.wait(RUN_TIMEOUT_S)
    if rc is None:
        driver.signal(signal.SIGKILL)
        driver.wait(30)
    if rc != 0:
        out.failures.append(f"{what} exited {rc}: {driver.stderr().strip()[-500:]}")
    return rc


def first_start(trials: list[FrozenTrial], since: dt.datetime) -> float | None:
    """Seconds from ``since`` to the first trial started after it (None: none started)."""
    starts = [t.datetime_start for t in trials if t.datetime_start and t.datetime_start >= since]
    return (min(starts) - since).total_seconds() if starts else None


def run_kills(executor: str, kills: int, n_trials: int, rng: random.Random, work: Path) -> Outcome:
    """``kills`` SIGKILLs of the driver's process group at random delays, restarts, final runs."""
    out = Outcome(f"kill-{executor}", n_trials)
    t0, trial_s = time.perf_counter(), GUESS[executor][1]
    startups: list[float] = []
    snaps: list[dict] = []
    study, rounds, left, delays, round_kills = None, 0, 0, [], 0
    leftovers: list[str] = []
    while out.kills < kills:
        if study is None:
            rounds += 1
            study = write_study(work / f"kill-{executor}", f"kill-{executor}-r{rounds}", n_trials)
            snaps, round_kills = [], 0
        est = statistics.median(startups) if startups else GUESS[executor][0]
        late = rng.random() >= EARLY
        delay = est + rng.uniform(0.0, LATE_TRIALS * trial_s) if late else rng.uniform(0.2, est)
        driver = Driver(study[0], executor)
        rc = driver.wait(delay)
        if rc is None:
            driver.signal(signal.SIGKILL)
            driver.wait(30)
            out.kills, round_kills = out.kills + 1, round_kills + 1
            delays.append(round(delay, 1))
            trials = load_trials(study[1], study[0].stem)
            snaps.append(snapshot(trials))
            where = phase(trials, driver.started)
            out.phases[where] = out.phases.get(where, 0) + 1
            # A start-up still running at a late kill lasts longer: count the delay as a floor
            # (else the estimate learns only from the runs that got past their start-up).
            got = first_start(trials, driver.started)
            startups += [got or delay] if got or late else []
            spans = [
                t.datetime_complete - t.datetime_start
                for t in trained(trials)
                if t.datetime_complete and t.datetime_start
            ]
            trial_s = statistics.median(s.total_seconds() for s in spans) if spans else trial_s
        else:  # it finished before its kill: the round's final run
            if rc != 0:
                out.failures.append(f"run exited {rc}: {driver.stderr().strip()[-500:]}")
            trials = load_trials(study[1], study[0].stem)
            startups += [s for s in [first_start(trials, driver.started)] if s]
            evaluate(out, trials, snaps, rc, round_kills)
            study = None
        left += driver.reap(15.0)
        leftovers += driver.left
    if study is not None:  # the last round's run to completion
        driver = Driver(study[0], executor)
        rc = run_to_end(driver, out, "final run")
        left += driver.reap(15.0)
        evaluate(out, load_trials(study[1], study[0].stem), snaps, rc, round_kills)
    out.wall_s = time.perf_counter() - t0
    out.details.update(
        rounds=rounds,
        delays_s=delays,
        startup_s=round(statistics.median(startups), 1) if startups else None,
        trial_s=round(trial_s, 2),
        procs_left_15s_after_kill=left,
        left_after_kill=leftovers[:10],
    )
    return out


def wait_mid_trial(url: str, name: str, driver: Driver, min_done: int, timeout: float) -> set[int]:
    """Trials seen training at two looks >= 0.15 s apart once ``min_done`` finished (or none)."""
    lock = Path(url[len("sqlite:///") :] + ".lock") if url.startswith("sqlite") else None
    deadline, seen = time.time() + timeout, set[int]()
    while time.time() < deadline and driver.proc.poll() is None:
        # SQLite is read only once the driver holds the study: no race creating its schema.
        trials = load_trials(url, name) if lock is None or lock.exists() else []
        done = sum(t.state.is_finished() for t in trials)
        running = {
            t.number
            for t in trials
            if t.state == TrialState.RUNNING
            and "candidate" in t.user_attrs
            and not {"result", "waits_for"} & t.user_attrs.keys()
        }
        if done >= min_done and running & seen:
            return running & seen
        seen = running
        time.sleep(0.15)
    return set()


def run_ctrl_c(executor: str, n_trials: int, work: Path) -> Outcome:
    """SIGINT to the process group mid-trial; check the exit; resume to completion."""
    out = Outcome(f"ctrl-c-{executor}", n_trials, kills=1)
    t0 = time.perf_counter()
    study, url = write_study(work / f"ctrl-c-{executor}", f"ctrl-c-{executor}", n_trials)
    driver = Driver(study, executor)
    # After the first trial: later ones leave too few behind a Ctrl-C delayed by the load.
    seen = wait_mid_trial(url, study.stem, driver, min_done=1, timeout=300)
    driver.remember_children()
    driver.signal(signal.SIGINT)
    sent = time.perf_counter()
    rc = driver.wait(120)
    exit_s = time.perf_counter() - sent
    if rc is None:
        driver.signal(signal.SIGKILL)
        driver.wait(30)
    lines = [line for line in driver.stderr().splitlines() if line.strip()]
    at_exit = len(driver.ours())
    left = driver.reap(5.0)
    trials = load_trials(url, study.stem)
    by_number = {t.number: t for t in trials}
    interrupted = [t.number for t in trials if t.user_attrs.get("interrupted")]
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    unfinished = [  # trained at the Ctrl-C and neither told a result nor marked interrupted
        n
        for n in seen
        if by_number[n].state == TrialState.RUNNING
        or not {"result", "interrupted"} & by_number[n].user_attrs.keys()
    ]
    checks = [
        (bool(seen), f"no trial seen training: {lines[-3:]}"),
        (rc == 130, f"exit code {rc}, not 130"),
        (lines == [INTERRUPTED_LINE], f"stderr is not the one line: {lines[-5:]}"),
        (left == 0, f"{left} processes left 5 s after the exit"),
        (bool(interrupted), "no trial marked interrupted"),
        (not running, f"trials {running} RUNNING after the exit"),
        (not unfinished, f"trials {unfinished}, training at the Ctrl-C, not finished"),
        (not requeue_errors(trials), f"re-queued != once: {requeue_errors(trials)}"),
    ]
    out.failures += [text for ok, text in checks if not ok]
    out.details.update(
        ctrl_c_at_s=round(sent - t0, 1),
        exit_code=rc,
        exit_s=round(exit_s, 2),
        stderr_lines=lines[-5:],
        seen_training=sorted(seen),
        interrupted_at_ctrl_c=interrupted,
        procs_at_exit=at_exit,
        procs_left_5s=left,
        left_after_exit=driver.left,
    )
    driver = Driver(study, executor)
    rc = run_to_end(driver, out, "resume")
    out.details["resume_s"] = round(time.perf_counter() - driver.t0, 1)
    driver.reap(15.0)
    evaluate(out, load_trials(url, study.stem), [snapshot(trials)], rc, 1)
    out.wall_s = time.perf_counter() - t0
    return out


@contextlib.contextmanager
def postgres(url: str | None = None) -> Iterator[str]:
    """``url`` if given, else the URL of a server scripts/postgres.sh starts (and stops)."""
    if url:
        yield url
        return
    # Not under a private temp dir: as root the server runs as `postgres`, which must reach it.
    parent = Path(tempfile.mkdtemp(prefix="autopeft-faults-pg-"))
    os.chmod(parent, 0o777)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PGPORT=str(port), PGDATA_DIR=str(parent / "data"))
    script = ROOT / "scripts" / "postgres.sh"
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
    try:
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr.strip()}")
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)


def run_drivers(n_drivers: int, url: str, n_trials: int, work: Path) -> Outcome:
    """``n_drivers`` local drivers started together on one PostgreSQL study."""
    out = Outcome(f"drivers-{n_drivers}", n_trials)
    t0 = time.perf_counter()
    name = f"drivers{n_drivers}-{uuid.uuid4().hex[:8]}"
    study, _ = write_study(work / f"drivers-{n_drivers}", name, n_trials)
    drivers = [Driver(study, "local", url) for _ in range(n_drivers)]
    rcs = [run_to_end(d, out, f"driver {i}") for i, d in enumerate(drivers)]
    left = sum(d.reap(5.0) for d in drivers)
    trials = load_trials(url, name)
    evaluate(out, trials, [], 0 if set(rcs) == {0} else 1, 0)
    by_driver: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        by_driver.setdefault(t.user_attrs.get("driver", -1), []).append(t)
    trains = {d: len({key(t) for t in trained(by_driver.get(d, []))}) for d in range(n_drivers)}
    firsts = {
        d: key(next(t for t in by_driver[d] if "candidate" in t.user_attrs))
        for d in range(n_drivers)
        if any("candidate" in t.user_attrs for t in by_driver.get(d, []))
    }
    differ = len(set(firsts.values())) == n_drivers
    out.failures += [f"first proposals do not all differ: {firsts}"] * (not differ)
    out.failures += [f"{left} processes left after the drivers exited"] * bool(left)
    out.details.update(
        exit_codes=rcs,
        distinct_trained_per_driver=trains,
        first_proposals_differ=differ,
        reused=sum(bool(t.user_attrs.get("reused")) for t in trials),
        waited=sum("waits_for" in t.user_attrs for t in trials),
    )
    out.wall_s = time.perf_counter() - t0
    return out


# -- report --------------------------------------------------------------------------------


def table(outcomes: list[Outcome]) -> str:
    """The results as a Markdown table."""
    rows = [
        "| scenario | kills survived | finished trials lost | trained twice | left RUNNING "
        "| state/status disagreements | re-queue errors | counted / n_trials | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        kills = f"{o.kills_survived}/{o.kills}" if o.kills else "-"
        rows.append(
            f"| {o.scenario} | {kills} | {o.lost} | {o.trained_twice} | {o.running_left} "
            f"| {o.disagreements} | {o.requeue_errors} "
            f"| {', '.join(map(str, o.counted))} / {o.n_trials} | {o.wall_s:.0f} |"
        )
    return "\n".join(rows)


def header() -> dict[str, str]:
    """Provenance of this run, with the CPU, memory and load it started under."""
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((ln.split(":")[1].strip() for ln in info if "model name" in ln), "")
    return provenance() | {
        "cpu": f"{os.cpu_count()} cores ({cpu or platform.processor()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM",
        "load_average_at_start": f"{os.getloadavg()[0]:.1f}",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios, print and write the results; 1 if a goal was missed."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs per executor")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    p.add_argument("--seed", type=int, default=0, help="of the kill delays")
    p.add_argument("--n-trials", type=int, default=12)
    p.add_argument("--postgres", default=None, help="a PostgreSQL URL (default: start one)")
    p.add_argument("--out", type=Path, default=RESULTS / "faults.md", help="results .md")
    p.add_argument("--keep", type=Path, default=None, help="keep the studies in this folder")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := set(chosen) - set(SCENARIOS):
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    meta, rng, outcomes, t0 = header(), random.Random(args.seed), [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="apf-faults-") as tmp, contextlib.ExitStack() as pg:
        work, url = args.keep or Path(tmp), None
        for s in chosen:
            kind, _, arg = s.rpartition("-")
            if kind == "kill":
                outcomes.append(run_kills(arg, args.kills, args.n_trials, rng, work))
            elif kind == "ctrl-c":
                outcomes.append(run_ctrl_c(arg, args.n_trials, work))
            else:
                url = url or pg.enter_context(postgres(args.postgres))
                outcomes.append(run_drivers(int(arg), url, args.n_trials, work))
            print(f"{s}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    missed = [m for o in outcomes for m in o.missed()]
    verdict = "**All goals met.**" if not missed else "**Missed:** " + "; ".join(missed)
    details = "\n".join(
        f"- `{o.scenario}`: {f'kill phases {o.phases}; ' if o.phases else ''}"
        f"{json.dumps(o.details, default=str)}"
        for o in outcomes
    )
    meta["minutes"] = f"{(time.perf_counter() - t0) / 60:.1f}"
    text = (
        "# Fault injection: SIGKILL, Ctrl-C and concurrent drivers (`bench/faults.py`)\n\n"
        f"{meta['cpu']}; load average at start {meta['load_average_at_start']}; "
        f"{meta['minutes']} min in all.\n\n{table(outcomes)}\n\n"
        "Goals: every kill survived (its study finished n_trials), 0 finished trials lost, 0 "
        "candidates trained twice, 0 trials RUNNING, 0 state/status disagreements, 0 "
        f"re-queue errors, counted = n_trials. {verdict}\n\n## Details\n\n{details}\n"
    )
    print(text)
    data = {"meta": meta, "outcomes": [asdict(o) for o in outcomes]}
    write_results(args.out.with_suffix(""), data, text)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

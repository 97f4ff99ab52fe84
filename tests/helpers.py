"""Checks shared by the search tests (local and Ray executors)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
from optuna.trial import TrialState

from autopeft.core.candidate import Candidate
from autopeft.core.pareto import dominates, to_min
from autopeft.core.trial_result import TrialStatus
from autopeft.search.study import Study


def wait_mid_trial(db, name: str, proc, min_done: int, timeout: float) -> None:
    """Return once ``min_done`` trials finished and one has been training for two polls.

    A reused trial (a re-proposed known candidate) is RUNNING only for an instant, and a trial
    being sampled has no candidate yet: the same sampled trial seen RUNNING twice, 0.3 s
    apart, is really training, so a kill now interrupts it.
    """
    deadline, seen = time.time() + timeout, set()
    while time.time() < deadline and proc.poll() is None:
        done, running = 0, set()
        if db.exists():
            try:
                trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials
                done = sum(t.state.is_finished() for t in trials)
                running = {
                    t.number
                    for t in trials
                    if t.state == TrialState.RUNNING and "candidate" in t.user_attrs
                }
            except Exception:  # noqa: BLE001 -- the study may not be created yet
                pass
        if done >= min_done and running & seen:
            return
        seen = running
        time.sleep(0.3)


def check_handed_back(db: Path, name: str) -> list:
    """A stopped run left nothing RUNNING: the trials it stopped are failed as interrupted,
    each with a sampled candidate queued once again; returns the stopped trials."""
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("interrupted")]
    assert stopped and all(t.state == TrialState.FAIL for t in stopped)
    retries = sorted(t.user_attrs["retry_of"] for t in trials if t.state == TrialState.WAITING)
    assert retries == sorted(t.number for t in stopped if "candidate" in t.user_attrs)
    return stopped


def counted_trials(trials: list) -> list:
    """Trials that count towards ``n_trials``: neither interrupted (re-run) nor reused."""
    return [
        t for t in trials if not (t.user_attrs.get("interrupted") or t.user_attrs.get("reused"))
    ]


def check_front(study: Study) -> None:
    results = dict(study.results())
    front = study.front_points()
    assert front, "a front exists"
    done = [r for r in results.values() if r.status is TrialStatus.COMPLETE]
    pts = to_min([study.values_of(r) for r in done], study.directions)
    for number, r in front:
        assert r.status is TrialStatus.COMPLETE
        me = to_min([study.values_of(r)], study.directions)[0]
        assert not any(dominates(p, me) for p in pts), f"trial {number} is dominated"
    # The same front from Optuna's own constraint-aware best_trials.
    reused = {t.number for t in study.optuna.trials if t.user_attrs.get("reused")}
    assert {t.number for t in study.optuna.best_trials} - reused == {n for n, _ in front}


STATES = {
    "COMPLETE": TrialState.COMPLETE,
    "INFEASIBLE": TrialState.COMPLETE,
    "PRUNED": TrialState.PRUNED,
    "FAILED": TrialState.FAIL,
}


def check_states(study: Study) -> None:
    """Optuna's state and autopeft's status agree on every trial.

    A trial without a result is only an interrupted one or a copy of one (FAIL), or one
    queued again (WAITING).
    """
    for t in study.optuna.get_trials(deepcopy=False):
        status = t.user_attrs.get("status")
        if status is None:
            if t.state == TrialState.WAITING:
                continue
            assert t.state == TrialState.FAIL, (t.number, t.state)
            assert t.user_attrs.get("interrupted") or t.user_attrs.get("reused"), t.number
            continue
        expected = STATES[status]
        assert t.state == expected, (t.number, status, t.state)
        if status == "INFEASIBLE":
            assert t.constraints == {"budget": 1.0}
        if status == "PRUNED":
            assert t.values is None


def check_dashboard(study: Study) -> None:
    """The study's storage opens in optuna-dashboard with every trial and its state."""
    from optuna_dashboard import wsgi

    app = wsgi(optuna.storages.RDBStorage(study.storage_url))

    def get(path):
        out = {}

        def start(status, headers, exc_info=None):
            out["status"] = status

        env = {"PATH_INFO": path}
        setup_testing_defaults(env)
        body = b"".join(app(env, start))
        assert out["status"].startswith("200"), out["status"]
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == [study.config.name]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert detail["objective_names"] == study.metrics  # named objectives, not values_0, ...
    shown = {t["number"]: t["state"].lower() for t in detail["trials"]}
    stored = {t.number: t.state.name.lower() for t in study.optuna.trials}
    assert shown == stored
    attrs = {a["key"] for t in detail["trials"] for a in t["user_attrs"]}
    assert {"status", "result", "candidate"} <= attrs


class Enumerate:
    """A Suggest that walks every branch of a define-by-run space (depth-first odometer)."""

    def __init__(self):
        self.path: list[tuple[int, int]] = []  # (chosen index, number of options) per decision
        self.pos = 0

    def _pick(self, options: list) -> object:
        if self.pos < len(self.path):
            idx, _ = self.path[self.pos]
        else:
            idx = 0
            self.path.append((0, len(options)))
        self.pos += 1
        return options[idx]

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._pick(list(range(low, high + 1, step)))

    def suggest_float(self, name, low, high, log=False):
        raise AssertionError("no floats in enumerated spaces")

    def suggest_categorical(self, name, choices):
        return self._pick(list(choices))

    def advance(self) -> bool:
        del self.path[self.pos :]
        self.pos = 0
        while self.path:
            idx, n = self.path[-1]
            if idx + 1 < n:
                self.path[-1] = (idx + 1, n)
                return True
            self.path.pop()
        return False


def enumerate_all(resolved) -> list[Candidate]:
    walker, out = Enumerate(), []
    while True:
        out.append(resolved.sample(walker))
        if not walker.advance():
            return out


def jsonl_task(folder, rows: list[dict], name: str = "rows.jsonl") -> dict:
    """A causal-LM ``task`` section over ``rows`` written as JSONL under ``folder``."""
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"kind": "causal_lm", "path": str(path), "max_length": 32}


def check_resumed(running: list, after: optuna.Study, completes: bool = False) -> None:
    """Trials RUNNING when a driver was killed are finished by the resumed run.

    One killed inside ``tell`` (its result recorded, its state not yet: a window that widens
    on a loaded machine) is finished from its result; any other is failed, marked
    ``interrupted`` and re-run once (``retry_of``), unless it was killed while sampling.
    ``completes``: the re-runs must have completed.
    """
    for t in running:
        now = after.trials[t.number]
        if "result" in t.user_attrs:
            assert now.state.is_finished() and "interrupted" not in now.user_attrs
            continue
        assert now.user_attrs["interrupted"] is True
        retries = [r for r in after.trials if r.user_attrs.get("retry_of") == t.number]
        if "candidate" not in t.user_attrs:  # killed while sampling: nothing to re-run
            assert not retries
            continue
        assert len(retries) == 1 and retries[0].params == t.params
        if completes:
            assert retries[0].state == TrialState.COMPLETE


#: Makes the pty the controlling terminal of the new session (as a login shell's is), so
#: closing its other end hangs the run up; then becomes the autopeft CLI.
_OWN_TERMINAL = (
    "import fcntl, runpy, signal, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    # A terminal's shell starts a command with the default dispositions, whatever started
    # pytest (`nohup` ignores SIGHUP; a background job, SIGINT).
    "signal.signal(signal.SIGHUP, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "sys.argv = ['autopeft', *sys.argv[1:]]; runpy.run_module('autopeft.cli', run_name='__main__')"
)


class Terminal:
    """A pty running one command; what it prints is read as it comes (a full pty blocks)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``autopeft ARGS`` in a new terminal (``env``: default, this one's)."""
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _OWN_TERMINAL, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=Path(__file__).resolve().parents[1],
            env=env or dict(os.environ, OMP_NUM_THREADS="1"),
            start_new_session=True,
        )
        os.close(slave)
        self.output = bytearray()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: every process let go of the terminal
                    return
                if not chunk:
                    return
                self.output += chunk

    def close(self) -> None:
        """Close the terminal's window: the kernel hangs up its session (SIGHUP)."""
        self._closing.set()
        self._reader.join()
        os.close(self.master)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        if not self._closing.is_set():
            self._reader.join(timeout=10)
            self.close()
        return code

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r", "\n")

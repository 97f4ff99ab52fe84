"""The Ray Tune executor: a real tiny-model study, dashboard view, kill-and-resume."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import api
from autopeft.core.candidate import Candidate
from autopeft.core.trial_result import TrialStatus
from autopeft.search.study import Study, rung_attr
from tests.helpers import (
    Terminal,
    check_dashboard,
    check_front,
    check_handed_back,
    check_resumed,
    check_states,
    counted_trials,
    wait_mid_trial,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group("ray")]

STUDY = {
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {
        "modules": {"lora": {"rank": [2, 4, 8, 16]}, "serial_adapter": {"size": [0, 4, 8, 16]}},
        "layers": "search",
    },
    "training": {
        "steps": 30,
        "batch_size": 8,
        "eval_every": 30,
        "eval_examples": 64,
        "rungs": [0.34, 1.0],
    },
    "sampler": {"name": "tpe", "n_startup_trials": 4},
    "halving": {"eta": 2, "min_peers": 2},
}


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_real_tiny_study_on_ray_with_reused_actors(local_ray, tmp_path):
    from autopeft.search.ray import _RUNNERS, run_ray

    study = Study(api.study_from_dict({"name": "ray-e2e", **STUDY}), root=tmp_path)
    run_ray(study, 8)  # the default progress display on (it once broke Tune's pickling)
    assert study.n_done() == 8
    results = dict(study.results())
    statuses = [r.status for r in results.values()]
    assert statuses.count(TrialStatus.COMPLETE) >= 3
    # Every trained trial passed the rung (step 10) through the scheduler, which recorded it
    # (a trial identical to an earlier one reuses its result and trains nothing).
    trained = [t for t in study.optuna.trials if not t.user_attrs.get("reused")]
    assert trained and all(rung_attr(10) in t.user_attrs for t in trained)
    assert all(s in (TrialStatus.COMPLETE, TrialStatus.PRUNED) for s in statuses), statuses
    for r in results.values():
        assert r.trainable_params == api.candidate_trainable_params(r.candidate, study.profile)
        if r.status is TrialStatus.COMPLETE:
            assert r.steps == 30 and r.peak_memory_mb > 0
        else:
            assert r.steps == 10
    check_states(study)
    check_front(study)
    check_dashboard(study)
    # Two worker processes at most trained all trials: actors (and their loaded model) reused.
    workers = {t.user_attrs.get("worker_pid") for t in study.optuna.trials} - {None}
    assert 1 <= len(workers) <= 2, workers
    assert not _RUNNERS  # the driver itself trained nothing


def test_causal_lm_study_on_ray_halves_on_the_loss(local_ray, tmp_path):
    from autopeft.search.ray import run_ray

    spec = {
        "name": "ray-sft",
        "model": "tiny-llama",
        "task": {"kind": "causal_lm", "max_length": 32},
        "search_space": {"modules": {"lora": {"rank": [2, 4, 8], "targets": ["q", "v", "o"]}}},
        "training": {"steps": 12, "batch_size": 8, "eval_every": 12, "eval_examples": 16},
        "halving": {"eta": 2, "min_peers": 2},
    }
    spec["training"]["rungs"] = [0.5, 1.0]
    study = Study(api.study_from_dict(spec), root=tmp_path)
    run_ray(study, 3, progress=False)
    assert study.n_done() == 3
    results = [r for _, r in study.results()]
    assert all(r.status in (TrialStatus.COMPLETE, TrialStatus.PRUNED) for r in results)
    done = [r for r in results if r.status is TrialStatus.COMPLETE]
    assert done and all(r.head_params == 0 and "eval_loss" in r.metrics for r in done)
    # The scheduler saw the loss signed so that higher is better.
    points = study.rung_points(6)
    assert points and all(p[0] < 0 for p in points)
    check_states(study)
    check_front(study)


@pytest.mark.parametrize("rung_metric", [None, "loss"])
def test_pareto_halving_scheduler_prunes_on_ray(local_ray, tmp_path, rung_metric):
    from autopeft.search.ray import run_ray

    spec = {
        "name": "ray-halving",
        **STUDY,
        "training": {**STUDY["training"], "steps": 90, "rungs": [0.34, 0.67, 1.0]},
        "halving": {**STUDY["halving"], "metric": rung_metric},
    }
    study = Study(api.study_from_dict(spec), root=tmp_path)
    run_ray(study, 16, runner="blackbox")  # the default progress display on
    statuses = [r.status for _, r in study.results()]
    assert statuses.count(TrialStatus.PRUNED) >= 3, statuses
    checked = 0
    for n, r in study.results():
        if r.status is TrialStatus.PRUNED:
            assert study.optuna.trials[n].state == TrialState.PRUNED and r.steps in (31, 60)
        # The scheduler ranked the trial by the rung metric (higher is better): the blackbox's
        # loss is 1 - accuracy, so the two metrics give opposite signs. (A trial pruned at
        # the second rung keeps only that evaluation.)
        point = study.optuna.trials[n].user_attrs.get(rung_attr(31))
        at_rung = [h for h in r.history if h["step"] == 31]
        if point is not None and at_rung:
            checked += 1
            assert point[0] == (-at_rung[0]["loss"] if rung_metric else at_rung[0]["accuracy"])
    assert checked >= 3
    check_states(study)


def test_kill_and_resume_ray_driver(tmp_path):
    import yaml

    study_file = tmp_path / "study.yaml"
    spec = {"name": "ray-resume", **STUDY, "halving": {"enabled": False}, "n_trials": 8}
    study_file.write_text(yaml.safe_dump(spec))
    cmd = [
        sys.executable,
        "-m",
        "autopeft.cli",
        "run",
        str(study_file),
        "--root",
        str(tmp_path),
        "--executor",
        "ray",
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    db = tmp_path / "ray-resume" / "study.db"
    wait_mid_trial(db, "ray-resume", proc, min_done=2, timeout=300)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    before = optuna.load_study(study_name="ray-resume", storage=f"sqlite:///{db}")
    finished = {t.number: t.params for t in before.trials if t.state == TrialState.COMPLETE}
    running = [t for t in before.trials if t.state == TrialState.RUNNING]
    assert len(finished) >= 2 and any("candidate" in t.user_attrs for t in running)

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    after = optuna.load_study(study_name="ray-resume", storage=f"sqlite:///{db}")
    for number, params in finished.items():
        assert after.trials[number].state == TrialState.COMPLETE
        assert after.trials[number].params == params
    counted = counted_trials(after.trials)
    assert sum(t.state.is_finished() for t in counted) == 8
    assert all(t.state != TrialState.RUNNING for t in after.trials)
    check_resumed(running, after)
    assert_trained_once(after.trials)


def assert_trained_once(trials) -> None:
    """No candidate was trained (to a result) by two trials."""
    keys = [
        Candidate.model_validate(t.user_attrs["candidate"]).key()
        for t in trials
        if t.user_attrs.get("status") in ("COMPLETE", "PRUNED") and not t.user_attrs.get("reused")
    ]
    assert len(keys) == len(set(keys)), "a candidate was trained twice"


def ray_processes(tmpdir: str) -> list[int]:
    """Live processes of the Ray whose temp dir is under ``tmpdir``."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(tmpdir in arg for arg in p.info["cmdline"] or ()):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def cli_run(file, root, *extra) -> list[str]:
    return [sys.executable, "-m", "autopeft.cli", "run", str(file), "--root", str(root), *extra]


def ray_env(tmpdir: str) -> dict[str, str]:
    return dict(
        os.environ, OMP_NUM_THREADS="1", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_TMPDIR=tmpdir
    )


NOISE = ("Token authentication", "save not implemented", "Traceback", "Tuner.restore")


@pytest.mark.parametrize(
    "signum, line",
    [
        (signal.SIGINT, "interrupted"),  # Ctrl-C: to the terminal's whole process group
        (signal.SIGTERM, "terminated (SIGTERM)"),  # kill, a scheduler: ray.init's own handler
    ],
)
def test_a_stop_signal_under_ray_stops_like_the_local_executor(signum, line, tmp_path):
    file = _write_long_study(tmp_path, "ray-ctrl-c")
    tmpdir = tempfile.mkdtemp(prefix="apr-", dir="/tmp")  # short: Ray's socket paths
    # The default progress display on, as a user runs it; a terminal's Ctrl-C goes to the
    # whole foreground process group.
    proc = subprocess.Popen(
        cli_run(file, tmp_path, "--executor", "ray"),
        env=ray_env(tmpdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    db = tmp_path / "ray-ctrl-c" / "study.db"
    wait_mid_trial(db, "ray-ctrl-c", proc, min_done=0, timeout=300)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert ray_processes(tmpdir)  # the local Ray this run started
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)  # the driver only: it must stop its Ray itself
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert err.strip().splitlines() == [
        f"{line}: finished trials are kept; run the same command to resume"
    ]
    _check_ray_gone(tmpdir)
    check_handed_back(db, "ray-ctrl-c")
    shutil.rmtree(tmpdir, ignore_errors=True)


def _write_long_study(tmp_path: Path, name: str) -> Path:
    import yaml

    file = tmp_path / "study.yaml"
    long = {**STUDY["training"], "steps": 3000, "eval_every": 3000}
    spec = {"name": name, **STUDY, "training": long, "halving": {"enabled": False}}
    file.write_text(yaml.safe_dump({**spec, "n_trials": 3}))
    return file


def _check_ray_gone(tmpdir: str) -> None:
    deadline = time.time() + 20
    while ray_processes(tmpdir) and time.time() < deadline:
        time.sleep(0.5)
    assert not ray_processes(tmpdir), "Ray processes outlived the driver"


def _ignores_hang_up(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile
        return True
    ignored = int(next(x for x in status.splitlines() if x.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGHUP - 1)))


def test_closing_the_terminal_of_a_ray_run_hands_its_trials_back(tmp_path):
    file = _write_long_study(tmp_path, "ray-hup")
    tmpdir = tempfile.mkdtemp(prefix="apr-", dir="/tmp")
    run = ["run", str(file), "--root", str(tmp_path), "--executor", "ray"]
    term = Terminal(run, env=ray_env(tmpdir))  # the progress display on, in its terminal
    db = tmp_path / "ray-hup" / "study.db"
    wait_mid_trial(db, "ray-hup", term.proc, min_done=0, timeout=300)
    assert term.proc.poll() is None, term.text[-3000:]
    # The local Ray's processes ignore the hang-up: dying with the terminal, they would take
    # the driver down while it hands its trials back. The driver stops them itself.
    started = ray_processes(tmpdir)
    assert started and all(_ignores_hang_up(pid) for pid in started)
    term.close()
    assert term.wait(timeout=120) == 128 + signal.SIGHUP
    _check_ray_gone(tmpdir)
    check_handed_back(db, "ray-hup")
    shutil.rmtree(tmpdir, ignore_errors=True)


def test_cli_on_a_running_cluster_shows_progress_without_noise(local_ray, tmp_path):
    import yaml

    file = tmp_path / "study.yaml"
    spec = {"name": "ray-address", **STUDY, "halving": {"enabled": False}, "n_trials": 2}
    file.write_text(yaml.safe_dump(spec))
    address = local_ray.get_runtime_context().gcs_address
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    out = subprocess.run(
        cli_run(file, tmp_path, "--executor", "ray", "--address", address),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2/2" in out.stdout and "front" in out.stdout and "HV" in out.stdout  # progress
    assert "Pareto front of 'ray-address'" in out.stdout
    assert not [n for n in NOISE if n in out.stdout + out.stderr], out.stderr[-3000:]
    assert local_ray.is_initialized()  # the cluster itself was left running


def test_concurrent_ray_trials_never_train_one_candidate_twice(local_ray, tmp_path):
    from autopeft.search.ray import run_ray

    spec = {"name": "ray-dupes", **STUDY, "halving": {"enabled": False}}
    study = Study(api.study_from_dict(spec), root=tmp_path)
    scratch = optuna.create_study().ask()  # a candidate's parameters, outside the study
    study.space.sample(scratch)
    for _ in range(3):  # the sampler proposes one candidate three times in a row
        study.optuna.enqueue_trial(scratch.params)
    run_ray(study, 3, runner="blackbox", max_concurrent=3, progress=False)
    trials = study.optuna.get_trials()
    assert_trained_once(trials)
    # The enqueued candidate: one trial trains it; the other two wait for that trial (or, had
    # it already ended, take its result). Later random draws of this small space may repeat
    # another running candidate too, so only the enqueued one's copies are counted.
    key = study.oracle.candidate(scratch.params).key()
    same = [t for t in trials if Candidate.model_validate(t.user_attrs["candidate"]).key() == key]
    trained = [t for t in same if not t.user_attrs.get("reused")]
    assert len(same) == 3 and len(trained) == 1, [t.user_attrs for t in same]
    copies = [t for t in same if "waits_for" in t.user_attrs]
    assert copies and all(t.user_attrs["waits_for"] == trained[0].number for t in copies)
    assert all(t.state.is_finished() for t in trials)
    assert study.n_done() == 3


def test_a_local_ray_listens_on_the_loopback_only():
    script = textwrap.dedent(
        """
        import psutil, ray
        from autopeft.search.ray import _start_ray
        _start_ray(None)
        me = psutil.Process()
        listening = {
            c.laddr.ip
            for p in [me, *me.children(recursive=True)]
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        ray.shutdown()
        print(sorted(listening))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    addresses = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 -- our own output
    assert addresses and set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
    assert "Token authentication" not in out.stderr


@pytest.mark.parametrize(
    ("worst_mb", "gpu_mb", "cpus_per_gpu", "cpus_per_trial", "trials_per_gpu"),
    [
        (1_000, 143_000, 16, 1, 16),  # small trials on an H200 with 16 cores: 16
        (1_000, 143_000, 16, 2, 8),  # two CPUs a trial: the cores limit it
        (1_000, 143_000, 64, 1, 16),  # never more than MAX_TRIALS_PER_GPU
        (10_000, 80_000, 16, 1, 5),  # 80 GB / (10 GB x 1.3 headroom + 0.5 GB context)
        (400, 8_192, 16, 1, 7),  # 15 by the allocator alone: the 16 contexts would not fit
        (4_000, 80_000, 7, 1, 7),  # 7 shares of 1/7 must still fit on one GPU
        (70_000, 80_000, 16, 1, 1),  # a trial that needs most of the GPU gets all of it
    ],
)
def test_gpu_share_packs_as_many_trials_as_memory_and_cpus_allow(
    worst_mb, gpu_mb, cpus_per_gpu, cpus_per_trial, trials_per_gpu
):
    from autopeft.search.ray import gpu_share

    share = gpu_share(worst_mb, gpu_mb, cpus_per_gpu, cpus_per_trial)
    assert int(1 / share + 1e-9) == trials_per_gpu
    assert share * trials_per_gpu <= 1.0  # Ray places n shares on one GPU only if they sum <= 1
    assert share == 1.0 or share * (trials_per_gpu + 1) > 1.0

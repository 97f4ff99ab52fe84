"""The Ray Tune executor: a real tiny-model study, dashboard view, kill-and-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import api
from autopeft.core.result import TrialStatus
from autopeft.search.study import Study, rung_attr
from tests.helpers import check_dashboard, check_front, check_states, counted_trials, wait_mid_trial

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
    run_ray(study, 8, progress=False)
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


def test_pareto_halving_scheduler_prunes_on_ray(local_ray, tmp_path):
    from autopeft.search.ray import run_ray

    spec = {
        "name": "ray-halving",
        **STUDY,
        "training": {**STUDY["training"], "steps": 90, "rungs": [0.34, 0.67, 1.0]},
    }
    study = Study(api.study_from_dict(spec), root=tmp_path)
    run_ray(study, 16, runner="blackbox", progress=False)
    statuses = [r.status for _, r in study.results()]
    assert statuses.count(TrialStatus.PRUNED) >= 3, statuses
    for n, r in study.results():
        if r.status is TrialStatus.PRUNED:
            assert study.optuna.trials[n].state == TrialState.PRUNED and r.steps in (31, 60)
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
    for t in running:
        assert after.trials[t.number].user_attrs["interrupted"] is True
        retries = [r for r in after.trials if r.user_attrs.get("retry_of") == t.number]
        if "candidate" not in t.user_attrs:  # killed while sampling: nothing to re-run
            assert not retries
            continue
        assert len(retries) == 1 and retries[0].params == t.params


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

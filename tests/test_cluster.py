"""Cluster runs: PostgreSQL study storage shared by drivers, a multi-node Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import api
from autopeft.core.candidate import Candidate
from autopeft.core.trial_result import TrialStatus
from autopeft.search.study import Study
from tests.helpers import counted_trials

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def study_config(name: str, **extra):
    return api.study_from_dict(
        {
            "name": name,
            "model": "tiny-bert",
            "task": {"name": "sms_spam", "max_length": 32},
            "search_space": {
                "modules": {
                    "lora": {"rank": [2, 4, 8, 16]},
                    "serial_adapter": {"size": [0, 4, 8, 16]},
                },
                "layers": "search",
            },
            "training": {"steps": 40, "batch_size": 8, "eval_every": 40, "eval_examples": 64},
            "sampler": {"name": "tpe", "n_startup_trials": 4},
            "halving": {"enabled": False},
        }
        | extra
    )


DRIVER = textwrap.dedent(
    """
    import sys
    from autopeft import api
    from autopeft.search import blackbox
    from autopeft.search.local import run_local
    from autopeft.search.study import Study

    name, url, root, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cfg = api.study_from_dict({
        "name": name, "model": "minilm",
        "search_space": {"modules": {"lora": {"rank": [0, 2, 4, 8, 16, 32]},
                                      "serial_adapter": {"size": [0, 8, 32]}}, "layers": "search"},
        "halving": {"enabled": False}, "sampler": {"name": "tpe", "n_startup_trials": 4},
    })
    study = Study(cfg, root=root, storage=url, heartbeat=(1, 5))
    run_local(study, n, runner=blackbox.for_study(study, delay_s=0.05), progress=False)
    """
)


@pytest.mark.parametrize("drivers", [2, 3])
def test_concurrent_drivers_share_one_postgres_study_exactly(postgres_url, tmp_path, drivers):
    name, n = f"drivers-{drivers}-{uuid.uuid4().hex[:8]}", 24
    cmd = [sys.executable, "-c", DRIVER, name, postgres_url, str(tmp_path), str(n)]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(drivers)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    study = optuna.load_study(study_name=name, storage=postgres_url)
    trials = study.trials
    assert all(t.state != TrialState.RUNNING for t in trials)  # nothing left hanging
    assert all(t.state.is_finished() for t in trials)  # every asked trial was told
    assert len(counted_trials(trials)) == n  # exactly n_trials, not one more per driver
    assert not any(t.user_attrs.get("interrupted") for t in trials)
    trained = [
        Candidate.model_validate(t.user_attrs["candidate"]).key()
        for t in trials
        if t.user_attrs.get("status") == "COMPLETE" and not t.user_attrs.get("reused")
    ]
    assert len(trained) == len(set(trained)), "two drivers trained one candidate"
    # Each driver drew from its own random stream: their first proposals differ.
    firsts = {}
    for t in trials:
        firsts.setdefault(t.user_attrs["driver"], t.user_attrs["candidate"])
    assert sorted(firsts) == list(range(drivers))
    assert len({json.dumps(c, sort_keys=True) for c in firsts.values()}) == drivers


def test_ray_cluster_with_postgres_survives_a_lost_worker_node(postgres_url, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from autopeft.search.ray import run_ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    name, n = f"ray-cluster-{uuid.uuid4().hex[:8]}", 10
    study = Study(study_config(name), root=tmp_path, storage=postgres_url)
    removed, lost = threading.Event(), threading.Event()

    def remove_a_node_mid_study():
        # Only once both nodes have finished trials: on a loaded machine the second node's
        # worker can start late, and losing it before then would test nothing.
        while not removed.is_set():
            trials = study.optuna.get_trials(deepcopy=False)
            done = sum(t.state.is_finished() for t in trials)
            nodes = {t.user_attrs.get("worker_node") for t in trials} - {None}
            if done >= 3 and len(nodes) >= 2:
                cluster.remove_node(workers[1])
                lost.set()
                removed.set()
                return
            time.sleep(0.2)

    killer = threading.Thread(target=remove_a_node_mid_study, daemon=True)
    killer.start()
    try:
        run_ray(study, n, max_failures=2, progress=False)
    finally:
        removed.set()
        ray.shutdown()
        cluster.shutdown()
    assert killer.is_alive() is False and lost.is_set()  # a node was lost mid-study
    trials = study.optuna.get_trials(deepcopy=False)
    counted = counted_trials(trials)
    assert sum(t.state.is_finished() for t in counted) == n
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert all("result" in t.user_attrs for t in counted)
    nodes = {t.user_attrs.get("worker_node") for t in trials} - {None}
    assert len(nodes) >= 2, nodes  # trials ran on more than one node
    done = [r for _, r in study.results() if r.status is TrialStatus.COMPLETE]
    assert len(done) >= n - 2  # a trial on the lost node is retried elsewhere or FAILED


@pytest.mark.parametrize("write", ["create_new_trial", "set_trial_state_values"])
def test_a_ctrl_c_inside_a_shared_trial_write_leaves_only_the_other_driver_running(
    postgres_url, tmp_path, monkeypatch, write
):
    # The write that makes a trial RUNNING commits, then SIGINT lands before the driver holds
    # the trial's id: a new trial (create) or a queued retry taken (set_trial_state_values).
    from autopeft.search.proposals import Proposer

    name = f"ctrl-c-{uuid.uuid4().hex[:8]}"
    other = Study(study_config(name), root=tmp_path / "a", storage=postgres_url)
    ours = Study(study_config(name), root=tmp_path / "b", storage=postgres_url)
    proposed = Proposer(other, 10).next()
    assert not isinstance(proposed, str)
    if write == "set_trial_state_values":
        ours.optuna.enqueue_trial(proposed[0].params)
    storage = ours.optuna._storage
    real = getattr(storage, write)

    def committed_then_interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, write, committed_then_interrupted)
    proposer = Proposer(ours, 10)
    with pytest.raises(KeyboardInterrupt):
        proposer.next()
    monkeypatch.undo()
    proposer.interrupt()
    trials = ours.optuna.get_trials(deepcopy=False)
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    assert running == [proposed[0].number]  # the other, live driver's trial only
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["interrupted"] is True
    assert failed[0].user_attrs["driver"] == ours.driver != other.driver


def test_a_trial_whose_driver_died_before_its_first_heartbeat_is_recovered(postgres_url, tmp_path):
    # A driver SIGKILLed between the write that creates its trial and the trial's first
    # heartbeat leaves a RUNNING trial that never beats; Optuna's stale check skips it.
    from autopeft.search import scratch
    from autopeft.search.proposals import DRIVER_ATTR, Proposer

    name = f"unbeaten-{uuid.uuid4().hex[:8]}"
    dead = Study(study_config(name), root=tmp_path / "a", storage=postgres_url)
    created = scratch.draft(dead.optuna, dead.space).stored(
        dead.optuna, {DRIVER_ATTR: dead.driver}
    )  # RUNNING and marked with its driver, as Proposer stores one; no heartbeat follows
    orphan = dead.optuna._storage.get_trial_number_from_id(created)
    grace = 2
    alive = Study(
        study_config(name), root=tmp_path / "b", storage=postgres_url, heartbeat=(1, grace)
    )
    proposed = Proposer(alive, 10).next()  # a live driver's trial: it beats
    assert not isinstance(proposed, str)
    recovering = Study(
        study_config(name), root=tmp_path / "c", storage=postgres_url, heartbeat=(1, grace)
    )

    def states():
        trials = recovering.optuna.get_trials(deepcopy=False)
        return {t.number: t.state for t in trials}

    assert recovering.recover_interrupted() == []  # just seen: not yet past the grace
    assert states()[orphan] == TrialState.RUNNING
    time.sleep(grace + 1)
    recovering.recover_interrupted()
    assert states() == {orphan: TrialState.FAIL, proposed[0].number: TrialState.RUNNING}
    failed = recovering.optuna.trials[orphan]
    assert failed.user_attrs["interrupted"] is True and failed.user_attrs["driver"] == dead.driver

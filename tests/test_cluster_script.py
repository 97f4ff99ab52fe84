"""`autopeft submit --shell` scripts run end to end: a real two-node Ray cluster on this machine.

The script's ssh is replaced by a stand-in that runs the worker's command here, so the
script starts a Ray head and one Ray worker (each with its own port and temp folder), waits
for both, runs a tiny study on them and stops both nodes, also when the run fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from optuna.trial import TrialState

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.xdist_group("ray"),
    pytest.mark.timeout(300),
]

STUDY = {
    "name": "cluster-script",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [2, 4, 8]}}},
    "training": {"steps": 6, "batch_size": 8, "eval_every": 6, "eval_examples": 16},
    "halving": {"enabled": False},
    "n_trials": 3,
}

# ssh stand-in: skip the options and the host, run the remote command here (environment kept).
SSH = """#!/usr/bin/env bash
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in -o|-p|-i|-l|-F) shift 2 ;; *) shift ;; esac
done
shift
exec bash -c "$*"
"""


def free_port() -> int:
    # Never 6379: other tests run Ray (on its default port) at the same time.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_processes(marks: list[str], port: int) -> list[str]:
    """Command lines of the processes that belong to this test's Ray nodes."""
    port_re = re.compile(rf"[:=]{port}\b")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.info["pid"] != os.getpid() and (
            any(m in cmd for m in marks) or port_re.search(cmd)
        ):
            found.append(f"{proc.info['pid']}: {cmd[:160]}")
    return found


@pytest.fixture
def cluster(tmp_path):
    """A --shell script for one fake ssh host, plus its environment and clean-up checks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(SSH)
    (bin_dir / "ssh").chmod(0o755)
    port = free_port()
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    script, root = tmp_path / "job.sh", tmp_path / "studies"
    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "submit", str(study), "--shell"]
        + ["--hosts", "fake-worker", "--head-address", "127.0.0.1", "--port", str(port)]
        + ["--cpus-per-node", "1", "--python", sys.executable, "--root", str(root)]
        + ["-o", str(script)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    # Short paths: Ray's unix sockets live under its temp folder and must stay < 108 chars.
    head_tmp = tempfile.mkdtemp(prefix="aph-", dir="/tmp")
    worker_tmp = tempfile.mkdtemp(prefix="apw-", dir="/tmp")
    job_tmp = tempfile.mkdtemp(prefix="apj-", dir="/tmp")
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        OMP_NUM_THREADS="1",
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
        TMPDIR=job_tmp,
        AUTOPEFT_HEAD_TIMEOUT="90",
        AUTOPEFT_NODES_TIMEOUT="90",
        AUTOPEFT_RAY_HEAD_ARGS=f"--temp-dir={head_tmp} --include-dashboard=false "
        "--disable-usage-stats",
        AUTOPEFT_RAY_WORKER_ARGS=f"--temp-dir={worker_tmp}",
    )
    env.pop("AUTOPEFT_STORAGE", None)
    env.pop("RAY_ADDRESS", None)
    marks = [head_tmp, worker_tmp]
    yield {"script": script, "env": env, "root": root, "marks": marks, "port": port}
    left = ray_processes(marks, port)
    for line in left:  # a failed test must not leave Ray running beside the other tests
        with_pid = int(line.split(":", 1)[0])
        try:
            psutil.Process(with_pid).kill()
        except psutil.Error:
            pass
    for folder in (head_tmp, worker_tmp, job_tmp):
        shutil.rmtree(folder, ignore_errors=True)


def run_script(cluster: dict, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        ["bash", str(cluster["script"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**cluster["env"], **env},
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script's trap stops its Ray nodes
        stdout, stderr = proc.communicate(timeout=90)
        pytest.fail(f"the script ran over 200 s\n{stdout[-3000:]}\n{stderr[-5000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def assert_no_ray_left(cluster: dict) -> None:
    deadline = time.monotonic() + 15  # processes may take a moment to exit after their parent
    while (left := ray_processes(cluster["marks"], cluster["port"])) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not left, "\n".join(left)
    # The job's staging folder (study file, ssh pipes) is gone too.
    assert not list(Path(cluster["env"]["TMPDIR"]).glob("autopeft-job.*"))


def test_shell_script_runs_a_study_on_two_ray_nodes_and_stops_them(cluster):
    out = run_script(cluster)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    assert "autopeft: 2 of 2 Ray nodes joined (2 CPUs" in out.stdout, out.stdout[-3000:]
    assert "Pareto front of 'cluster-script'" in out.stdout
    db = cluster["root"] / STUDY["name"] / "study.db"
    trials = optuna.load_study(study_name=STUDY["name"], storage=f"sqlite:///{db}").trials
    trained = [t for t in trials if not t.user_attrs.get("reused")]
    assert len(trained) == 3, [(t.state, t.user_attrs) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs.get("worker_node") for t in trained)
    assert_no_ray_left(cluster)


def test_shell_script_stops_its_ray_nodes_when_the_run_fails(cluster):
    # The cluster comes up; then the driver fails on an unusable storage URL.
    out = run_script(cluster, AUTOPEFT_STORAGE="bogus://nowhere")
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-5000:]
    assert "autopeft: 2 of 2 Ray nodes joined" in out.stdout
    assert "not a usable storage URL" in out.stderr
    assert "autopeft: stopping the Ray nodes" in out.stderr
    assert_no_ray_left(cluster)
    assert not Path(cluster["root"], STUDY["name"], "study.db").exists()

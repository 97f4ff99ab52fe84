"""`autopeft submit`: SLURM and plain-shell batch scripts (content, bash syntax, and their
steps run with stand-ins for python, ssh, srun and scontrol; the real two-node run is in
test_cluster_script.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from autopeft import api
from autopeft.cluster import has_password, masked, staged_study

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "quickstart" / "study.yaml"

# Stand-ins: each logs its arguments (one line per call) and does the least the script needs.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >>"$FAKE_LOG"
case "$1 $2 $3" in
  "-m autopeft.cluster_node host-ip") echo "${FAKE_HOST_IP:-192.0.2.77}" ;;
  "-m autopeft.cli run") cp "$4" "$FAKE_LOG.study.yaml"
    echo "run-env AUTOPEFT_STORAGE=${AUTOPEFT_STORAGE:-}" >>"$FAKE_LOG" ;;
  "-m autopeft.cluster_node wait-nodes")  # until every node's `ray start` ran, as the real one
    for _ in $(seq 100); do
      (($(grep -c "^python -m ray.scripts.scripts start" "$FAKE_LOG") >= $5)) && break
      sleep 0.1
    done ;;
esac
"""
FAKE_SSH = """#!/usr/bin/env bash
echo "ssh $*" >>"$FAKE_LOG"
while [[ $1 == -* ]]; do case $1 in -o) shift 2 ;; *) shift ;; esac; done
shift
exec bash -c "$*"
"""
FAKE_SRUN = """#!/usr/bin/env bash
echo "srun $*" >>"$FAKE_LOG"
while [[ $1 == -* ]]; do case $1 in -w) shift 2 ;; *) shift ;; esac; done
exec "$@"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
printf '%s\\n' ${FAKE_NODES:-n1 n2 n3}
"""


def submit(*args, cwd, study=STUDY):
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "submit", str(study), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def run_with_fakes(script: Path, tmp_path: Path, **env: str):
    """Run a generated script with the stand-ins first on PATH; returns (result, log lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (
        ("python", FAKE_PYTHON),
        ("ssh", FAKE_SSH),
        ("srun", FAKE_SRUN),
        ("scontrol", FAKE_SCONTROL),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOPEFT_", "RAY_"))}
    full = base | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "SLURM_JOB_NODELIST": "n[1-3]",
    }
    out = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=full | env, timeout=60
    )
    return out, log.read_text().splitlines()


def test_slurm_script_dry_run(tmp_path):
    script = tmp_path / "job.sh"
    out = submit(
        "--slurm",
        "--nodes",
        "3",
        "--gpus-per-node",
        "4",
        "--partition",
        "gpu",
        "--storage",
        "postgresql://user@db:5432/autopeft",
        "-o",
        str(script),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert f"sbatch {script}" in out.stdout
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for line in (
        "#SBATCH --nodes=3",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --job-name=quickstart",
        "#SBATCH --ntasks-per-node=1",
        "gpus=4",
        "storage=${AUTOPEFT_STORAGE:-postgresql://user@db:5432/autopeft}",
    ):
        assert line in text.splitlines()
    # Bounded readiness checks instead of fixed sleeps; no `hostname --ip-address`.
    assert "health-check" in text and "autopeft.cluster_node wait-nodes" in text
    assert "sleep 1" not in text and "hostname --ip-address" not in text
    # The study travels inside the script, not as a path of the machine that wrote it.
    assert str(STUDY) not in text and "name: quickstart" in text
    assert script.stat().st_mode & 0o111


def test_slurm_script_starts_the_head_here_and_workers_on_the_other_nodes(tmp_path):
    script = tmp_path / "job.sh"
    out = submit("--nodes", "3", "--cpus-per-node", "4", "-o", str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --gpus" not in script.read_text()  # GPUs: what the allocation has
    res, calls = run_with_fakes(script, tmp_path, SLURMD_NODENAME="n2", SLURM_GPUS_ON_NODE="2")
    assert res.returncode == 0, res.stderr
    sruns = [c for c in calls if c.startswith("srun ")]
    assert len(sruns) == 3 and all("--cpus-per-task=4" in c for c in sruns)
    # The head is the node the batch script runs on; the others are workers. (By content, not
    # position: the fakes log from background steps, in whatever order a loaded machine runs.)
    (head,) = [c for c in sruns if "--head" in c]
    assert " -w n2 " in head and "--head --node-ip-address=192.0.2.77" in head
    assert {c.split(" -w ")[1].split()[0] for c in sruns if c != head} == {"n1", "n3"}
    starts = [c for c in calls if c.startswith("python -m ray.scripts.scripts start")]
    assert len(starts) == 3 and all("--num-cpus=4" in c and "--block" in c for c in starts)
    assert all("--num-gpus=2" in c for c in starts)  # from $SLURM_GPUS_ON_NODE, not 0
    heads = [c for c in starts if "--head" in c]
    assert len(heads) == 1 and all(
        "--address=192.0.2.77:6379" in c for c in starts if "--head" not in c
    )
    assert any("wait-nodes 192.0.2.77:6379 3" in c for c in calls)
    run = [c for c in calls if "autopeft.cli run" in c]
    assert len(run) == 1 and "--executor ray --address 192.0.2.77:6379 --quiet" in run[0]
    assert "--storage" not in run[0]  # none given: the study folder's SQLite on the head
    assert api.load(tmp_path / "calls.log.study.yaml").name == "quickstart"


def test_gpus_default_to_what_each_node_has(tmp_path):
    script = tmp_path / "job.sh"
    out = submit("--shell", "--hosts", "w1", "-o", str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "gpus=" in script.read_text().splitlines()  # empty: Ray detects them
    res, calls = run_with_fakes(script, tmp_path)
    assert res.returncode == 0, res.stderr
    starts = [c for c in calls if c.startswith("python -m ray.scripts.scripts start")]
    assert len(starts) == 2 and not any("--num-gpus" in c for c in starts)
    out = submit(
        "--shell", "--hosts", "w1", "--gpus-per-node", "0", "-o", str(script), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    res, calls = run_with_fakes(script, tmp_path)
    assert res.returncode == 0, res.stderr
    starts = [c for c in calls if c.startswith("python -m ray.scripts.scripts start")]
    assert sum("--num-gpus=0" in c for c in starts) == 2  # an explicit 0 is kept


def test_shell_script_for_machines_without_slurm(tmp_path):
    script = tmp_path / "job.sh"
    out = submit(
        "--shell",
        "--hosts",
        "gpu1,gpu2",
        "--gpus-per-node",
        "2",
        "--port",
        "6500",
        "--root",
        "/shared/studies",
        "--python",
        "python",
        "-o",
        str(script),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "#SBATCH" not in text and "set -euo pipefail" in text and "trap cleanup EXIT" in text
    res, calls = run_with_fakes(script, tmp_path)
    assert res.returncode == 0, res.stderr
    ssh = [c for c in calls if c.startswith("ssh ")]
    assert len(ssh) == 2 and " gpu1 " in ssh[0] and " gpu2 " in ssh[1]
    starts = [c for c in calls if c.startswith("python -m ray.scripts.scripts start")]
    assert sum("--head --node-ip-address=192.0.2.77 --port=6500" in c for c in starts) == 1
    assert all("--num-gpus=2" in c for c in starts)
    assert sum("--address=192.0.2.77:6500" in c for c in starts) == 2
    # The Ray token goes to the workers over ssh's input, never on a command line.
    assert not any("RAY_AUTH_TOKEN=" in c for c in calls)
    run = [c for c in calls if "autopeft.cli run" in c]
    assert len(run) == 1 and "--root /shared/studies" in run[0]
    assert "autopeft: stopping the Ray nodes" in res.stderr


def test_loopback_head_address_is_refused_when_there_are_workers(tmp_path):
    script = tmp_path / "job.sh"
    assert submit("--shell", "--hosts", "w1", "-o", str(script), cwd=tmp_path).returncode == 0
    res, calls = run_with_fakes(script, tmp_path, FAKE_HOST_IP="127.0.1.1")
    assert res.returncode == 1
    assert "127.0.1.1 (a loopback address)" in res.stderr and "--head-address" in res.stderr
    assert not any("ray.scripts.scripts" in c or c.startswith("ssh") for c in calls)
    # Given on purpose (all nodes on one machine), it is used as given.
    out = submit(
        "--shell", "--hosts", "w1", "--head-address", "127.0.0.1", "-o", str(script), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    res, calls = run_with_fakes(script, tmp_path, FAKE_HOST_IP="127.0.1.1")
    assert res.returncode == 0, res.stderr
    assert any("--address=127.0.0.1:6379" in c for c in calls)
    # SLURM: refused for three nodes; a job of one node has no workers, so it may.
    assert submit("-o", str(script), cwd=tmp_path).returncode == 0
    res, calls = run_with_fakes(script, tmp_path, FAKE_HOST_IP="127.0.1.1", SLURMD_NODENAME="n1")
    assert res.returncode == 1 and "loopback" in res.stderr
    res, calls = run_with_fakes(
        script, tmp_path, FAKE_HOST_IP="127.0.1.1", FAKE_NODES="n1", SLURMD_NODENAME="n1"
    )
    assert res.returncode == 0, res.stderr
    assert any("wait-nodes 127.0.1.1:6379 1" in c for c in calls)


def test_a_password_in_the_storage_url_stays_out_of_the_script(tmp_path):
    script = tmp_path / "job.sh"
    url = "postgresql+psycopg2://user:s3cret@db:5432/autopeft"
    out = submit("--shell", "--hosts", "w1", "--storage", url, "-o", str(script), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "s3cret" not in script.read_text() and "s3cret" not in out.stdout
    assert "export AUTOPEFT_STORAGE=" in out.stdout and "user:PASSWORD@db" in out.stdout
    assert script.stat().st_mode & 0o777 == 0o700  # names the database's user and host
    res, calls = run_with_fakes(script, tmp_path)
    assert res.returncode == 1 and "export AUTOPEFT_STORAGE=" in res.stderr
    assert not any("ray.scripts.scripts" in c for c in calls)  # refused before any Ray
    res, calls = run_with_fakes(script, tmp_path, AUTOPEFT_STORAGE=url)
    assert res.returncode == 0, res.stderr
    # The driver reads it from the environment: on its command line `ps` would show it.
    assert [c for c in calls if "autopeft.cli run" in c]
    assert not any(url in c for c in calls if not c.startswith("run-env"))
    assert f"run-env AUTOPEFT_STORAGE={url}" in calls


def test_submit_now_hands_a_storage_password_to_sbatch_in_the_environment(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/usr/bin/env bash\nprintf %s "$AUTOPEFT_STORAGE" >"$(dirname "$0")/env"\n'
        'echo "Submitted batch job 42"\n'
    )
    (bin_dir / "sbatch").chmod(0o755)
    url = "postgresql://user:s3cret@db/autopeft"
    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "submit", str(STUDY), "--now", "--storage", url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Submitted batch job 42"
    assert (bin_dir / "env").read_text() == url
    assert "s3cret" not in (tmp_path / "quickstart-slurm.sh").read_text()


def test_storage_url_passwords_are_found_and_masked():
    assert has_password("postgresql://u:p@h/db") and has_password("mysql://h/db?password=x")
    assert not has_password("postgresql://u@h/db") and not has_password("sqlite:///a.db")
    assert not has_password(None)
    assert masked("postgresql://u:p@h:1/db") == "postgresql://u:PASSWORD@h:1/db"


def test_the_staged_study_loads_anywhere_as_the_original(tmp_path):
    here = tmp_path / "project"
    (here / "data").mkdir(parents=True)
    (here / "data" / "t.csv").write_text("text,label\na,0\nb,1\n")
    (here / "space.yaml").write_text("modules: {lora: {rank: [2, 4]}}\n")
    study = here / "study.yaml"
    study.write_text(
        "name: staged\nmodel: tiny-bert\nsearch_space: space.yaml\ntask: {path: data/t.csv}\n"
    )
    text = staged_study(study)
    assert "rank" in text and str(here / "data" / "t.csv") in text
    elsewhere = tmp_path / "elsewhere" / "staged.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(text)
    assert api.load(elsewhere) == api.load(study)
    # A self-contained study is embedded as written, comments included.
    assert staged_study(STUDY) == STUDY.read_text()


def test_bad_cluster_settings_are_clear_errors(tmp_path):
    for args, words in (
        (["--head-address", "head.example"], "--head-address: the head's IPv4 address"),
        (["--port", "80"], "--port: 1024 <= port <= 65535 must hold"),
        (["--gpus-per-node", "-1"], "--gpus-per-node: gpus-per-node >= 0 must hold"),
    ):
        out = submit(*args, "-o", str(tmp_path / "job.sh"), cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert words in out.stderr, out.stderr


def test_submit_now_without_slurm_is_a_clear_error(tmp_path):
    out = submit("--now", "-o", str(tmp_path / "job.sh"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "sbatch is not on PATH" in out.stderr


def test_submit_validates_the_study_first(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch_space: {modules: {lorra: {}}}\n")
    out = submit(cwd=tmp_path, study=bad)
    assert out.returncode == 2 and "unknown module type 'lorra'" in out.stderr
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"modules": {"lora": {"rank": [2]}}}))
    out = submit(cwd=tmp_path, study=space)
    assert out.returncode == 2 and "needs a study file" in out.stderr
    assert not list(tmp_path.glob("*.sh"))

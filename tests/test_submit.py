"""`autopeft submit`: SLURM and plain-shell batch scripts (content and bash syntax)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "quickstart" / "study.yaml"


def submit(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "submit", str(STUDY), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


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
    ):
        assert line in text.splitlines()
    assert "ray.scripts.scripts start --head" in text
    assert 'start --address="$address"' in text and 'for node in "${nodes[@]:1}"' in text
    run = [line for line in text.splitlines() if "autopeft.cli run" in line]
    assert len(run) == 1
    assert str(STUDY) in run[0] and "--executor ray" in run[0] and '--address "$address"' in run[0]
    assert "--storage postgresql://user@db:5432/autopeft" in run[0]
    assert script.stat().st_mode & 0o111


def test_shell_script_for_machines_without_slurm(tmp_path):
    script = tmp_path / "job.sh"
    out = submit(
        "--shell", "--hosts", "gpu1,gpu2", "--gpus-per-node", "2", "-o", str(script), cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "#SBATCH" not in text
    ssh = [line for line in text.splitlines() if line.startswith("ssh ")]
    assert len(ssh) == 2 and ssh[0].startswith("ssh gpu1 ") and ssh[1].startswith("ssh gpu2 ")
    assert "--executor ray" in text and "trap " in text


def test_submit_now_without_slurm_is_a_clear_error(tmp_path):
    out = submit("--now", "-o", str(tmp_path / "job.sh"), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "sbatch is not on PATH" in out.stderr


def test_submit_validates_the_study_first(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch_space: {modules: {lorra: {}}}\n")
    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "submit", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "unknown module type 'lorra'" in out.stderr
    assert not list(tmp_path.glob("*.sh"))

"""bench/sft_speed.py --smoke: every arm that ran is in the results file with positive times."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_run_writes_every_arm_with_positive_step_times(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "bench/sft_speed.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sft_speed_smoke.json").read_text())
    have_trl = importlib.util.find_spec("trl") is not None
    expected = {"A", "B", "C"} if have_trl else {"A", "B"}
    assert set(result["arms"]) == expected
    if not have_trl:
        assert "trl is not installed: skipping arm C" in done.stdout
    for arm in result["arms"].values():
        assert arm["timed_steps"] == 3
        assert arm["median_ms"] > 0 and arm["mean_ms"] > 0 and arm["min_ms"] > 0
        assert arm["ratio_vs_bare"] > 0
    # The same batches and loss mask: autopeft's loop and the bare loop compute the very same
    # first loss; TRL's fused LM head the same up to float rounding.
    first = {k: v["first_step_loss"] for k, v in result["arms"].items()}
    assert first["A"] == first["B"]
    if have_trl:
        assert first["C"] == pytest.approx(first["B"], rel=1e-4)
        check = result["trl_tokens_vs_autopeft"]
        assert check["same_input_ids"] == check["same_labels"] == check["rows"]
    for key in ("date", "git_commit", "command", "versions", "machine"):
        assert result[key]
    md = (tmp_path / "sft_speed_smoke.md").read_text()
    assert "| A: autopeft train_and_eval |" in md and "| B: bare PyTorch loop |" in md


@pytest.mark.slow
def test_without_trl_the_trl_arm_is_skipped_with_one_line(tmp_path):
    shadow = tmp_path / "shadow" / "trl"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('trl hidden by the test')\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(shadow.parent),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "bench/sft_speed.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    skipped = [line for line in done.stdout.splitlines() if "trl is not installed" in line]
    assert skipped == [
        "trl is not installed: skipping arm C (TRL SFTTrainer); `pip install trl` runs it"
    ]
    result = json.loads((tmp_path / "sft_speed_smoke.json").read_text())
    assert set(result["arms"]) == {"A", "B"} and result["trl_tokens_vs_autopeft"] is None


@pytest.mark.slow
def test_lockstep_smoke_times_a_and_b_step_by_step(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "bench/sft_speed.py", "--smoke", "--lockstep", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sft_speed_smoke.json").read_text())
    assert result["mode"] == "lockstep" and set(result["arms"]) == {"A", "B"}
    for arm in result["arms"].values():
        assert arm["timed_steps"] == 3 and arm["median_ms"] > 0 and arm["median_cpu_ms"] > 0
    assert result["arms"]["A"]["first_step_loss"] == result["arms"]["B"]["first_step_loss"]

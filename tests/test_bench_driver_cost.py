"""bench/driver_cost.py's arms: a baseline checkout older than this checkout's bench helpers."""

from __future__ import annotations

import os
from pathlib import Path

from bench import driver_cost as dc
from bench.driver_cost_report import summary

ROOT = Path(__file__).resolve().parents[1]


def test_an_arm_runs_the_baselines_autopeft_with_this_checkouts_bench(tmp_path):
    # A baseline whose bench package cannot serve this script (as before run_in_checkout moved
    # into bench.common): the arm must not import it, yet must run the baseline's autopeft.
    baseline = tmp_path / "baseline"
    (baseline / "bench").mkdir(parents=True)
    (baseline / "bench" / "__init__.py").write_text("")
    (baseline / "bench" / "common.py").write_text("raise ImportError('the old bench')\n")
    os.symlink(ROOT / "autopeft", baseline / "autopeft")
    files = dc.fill(tmp_path / "fill", [6])
    root = tmp_path / "arm"
    (root / dc.NAME).mkdir(parents=True)
    (root / dc.NAME / "study.db").write_bytes(files[6].read_bytes())
    spec = {
        "url": f"sqlite:///{root / dc.NAME / 'study.db'}",
        "root": str(root),
        "n": 6,
        "window": 3,
        "sampler": "random",
        "budget_s": 60.0,
        "probe_s": 1.0,
        "out": str(tmp_path / "arm.json"),
    }
    row = dc.run_arm(baseline, spec)
    assert "error" not in row, row.get("error")
    assert row["autopeft"] == str(baseline / "autopeft") and row["trials"] == 3
    # A failed baseline arm is summarised, not a KeyError.
    ours = {"storage": "sqlite", "n": 6, "sampler": "random", "code": "this"} | row
    failed = ours | {"code": "baseline"}
    for key in ("ms", "trials", "elapsed_s", "per_trial"):
        failed.pop(key, None)
    failed["error"] = "ImportError: the old bench"
    (line,) = summary([failed, ours])
    assert "the baseline arm failed (its error is in the JSON)" in line

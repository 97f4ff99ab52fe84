"""bench/rung_eval_cost.py: an SFT trial generates answers at every rung, or only at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rungs_ranked_by_the_loss_generate_once_and_end_with_the_same_metrics(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.rung_eval_cost", "--model", "tiny-llama", "--steps", "8",
         "--eval-every", "4", "--eval-examples", "8", "--generate-examples", "4", "--reps", "1",
         "--out", str(tmp_path), "--name", "cost"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads((tmp_path / "cost.json").read_text())
    default, by_loss = saved["rows"]
    # Evaluations at the rungs 2, 4 and 8 (4 is also an eval_every step).
    assert default["evaluations"] == by_loss["evaluations"] == 3
    assert default["generated"] == 3 and by_loss["generated"] == 1
    assert saved["meta"]["same_final_metrics"] is True
    assert by_loss["exact_match"] == default["exact_match"]
    text = (tmp_path / "cost.md").read_text()
    assert "Measured " in text and "| rungs rank by eval_loss | 3 | 1 |" in text

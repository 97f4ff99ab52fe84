"""bench/rung_flips.py counts the rung leads that reverse by the end, from a real-trials file."""

from __future__ import annotations

import json

from bench import rung_flips


def _trial(history: dict[int, float], final: float) -> dict:
    return {
        "status": "COMPLETE",
        "steps": 100,
        "metrics": {"accuracy": final},
        "history": [{"step": s, "accuracy": a} for s, a in history.items()],
    }


def test_a_lead_that_reverses_is_counted_per_step_and_margin(tmp_path):
    data = tmp_path / "real_trials_x.jsonl"
    rows = [
        {"meta": {}},
        _trial({50: 0.70}, 0.60),  # leads at 50, ends behind both others
        _trial({50: 0.66}, 0.80),
        _trial({50: 0.50}, 0.70),
        {"status": "FAILED", "metrics": {}},  # not counted
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    steps, by_trial = rung_flips.curves(data)
    assert steps == [50, 100] and len(by_trial) == 3
    table = {(r["step"], r["margin"]): r for r in rung_flips.flips(steps, by_trial, (0.0, 0.1))}
    # Leads at 50: 0.70>0.66 (reversed), 0.70>0.50 (reversed), 0.66>0.50 (kept).
    assert table[50, 0.0]["pairs"] == 3 and table[50, 0.0]["reversed"] == 2 / 3
    # Over a 0.1 margin only the two leads over 0.50 count; one of them reverses.
    assert table[50, 0.1]["pairs"] == 2 and table[50, 0.1]["reversed"] == 1 / 2
    assert rung_flips.main(["--data", str(data), "--out", str(tmp_path)]) == 0
    assert "| 50 | 0.00 | 3 | 66.7% |" in (tmp_path / "rung_flips_x.md").read_text()

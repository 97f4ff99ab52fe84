"""bench/rung_flips.py counts the rung leads that reverse by the end, from a real-trials file."""

from __future__ import annotations

import json

from bench import rung_flips


def _trial(history: dict[int, float], final: float, loss: float = 1.0) -> dict:
    return {
        "status": "COMPLETE",
        "steps": 100,
        "metrics": {"accuracy": final, "loss": loss},
        "history": [{"step": s, "accuracy": a, "loss": loss + 0.1} for s, a in history.items()],
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


def test_leads_in_the_loss_are_lower_losses_judged_by_the_final_accuracy(tmp_path):
    data = tmp_path / "real_trials_y.jsonl"
    rows = [
        {"meta": {}},
        _trial({50: 0.70}, 0.60, loss=0.9),  # the worst loss at 50 and the worst final
        _trial({50: 0.66}, 0.80, loss=0.2),  # the best loss at 50 and the best final
        _trial({50: 0.50}, 0.70, loss=0.5),
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    args = ["--data", str(data), "--out", str(tmp_path), "--metric", "loss"]
    assert rung_flips.main(args) == 0
    text = (tmp_path / "rung_flips_y_loss.md").read_text()
    assert "leads in loss" in text
    # Ranked by the loss at 50 the three pairs keep their order at the end: none reverses,
    # where by accuracy two of three do.
    assert "| 50 | 0.00 | 3 | 0.0% |" in text
    # Over a 0.35 margin (losses 1.0, 0.3, 0.6 at step 50): the two leads of 0.7 and 0.4.
    steps, by_trial = rung_flips.curves(data)
    _, loss = rung_flips.curves(data, "loss")
    lead = [{k: -v for k, v in c.items()} for c in loss]
    table = {r["margin"]: r for r in rung_flips.flips(steps, by_trial, (0.0, 0.35), lead)}
    assert table[0.35]["pairs"] == 2 and table[0.35]["reversed"] == 0.0

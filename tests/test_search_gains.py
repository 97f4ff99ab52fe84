"""bench/search_gains.py: the random-search level, the goals' verdicts, one small run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import search_gains as sg
from bench.common import ROOT

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _run(label: str, halving: bool, seed: int, hv: list[float], full: int = 100) -> dict:
    # Without halving every trial is a full one; with it, each trial here runs a quarter.
    step = full // 4 if halving else full
    return {
        "label": label,
        "halving": halving,
        "seed": seed,
        "fidelity": full,
        "hv": hv,
        "steps": [step * (i + 1) for i in range(len(hv))],
    }


def test_trials_to_counts_trials_until_the_curve_first_reaches_the_level():
    assert sg.trials_to([0.1, 0.2, 0.2, 0.4], 0.2) == 2
    assert sg.trials_to([0.1, 0.2], 0.3) is None


def test_the_random_level_is_the_median_after_n_trials_and_halving_counts_full_trials():
    runs = [
        _run("random", False, 0, [0.1, 0.2, 0.3, 0.9]),  # after 3 trials: 0.3
        _run("random", False, 1, [0.2, 0.2, 0.5]),  # 0.5
        _run("random", False, 2, [0.1, 0.4, 0.4]),  # 0.4
        _run("tpe", False, 0, [0.3, 0.4, 0.45]),  # reaches 0.4 at trial 2
        _run("tpe", False, 1, [0.1, 0.1, 0.1, 0.4]),  # at trial 4
        _run("tpe", False, 2, [0.1]),  # never
        _run("tpe", True, 0, [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4]),  # 8 quarters: 2 full
    ]
    level = sg.random_level(runs, 3)
    assert level["level"] == 0.4  # median of 0.3, 0.5, 0.4, not the 4th trial's 0.9
    assert level["per_seed"]["default"] == [2, 4, None]
    assert level["default"] == 4  # the run that never reached it counts as infinite
    assert level["per_seed"]["default_halving"] == [2.0]


def _row(label: str, halving: bool, steps: float | None) -> dict:
    return {
        "label": label,
        "halving": halving,
        "median_steps": steps,
        "median_steps_loose": steps,
        "reached": 0 if steps is None else 5,
        "seeds": 5,
        "trials": 200,
        "hv_final": 0.4,
        "sampler_s": 10.0,
    }


def test_the_verdicts_flip_at_each_goal():
    level = {"level": 0.4, "random_trials": 100, "per_seed": {"default": [30, 40, 50]}}

    def lines(on: float | None, oracle: float, default: float | None) -> list[str]:
        rows = [_row("tpe", False, 10_000), _row("tpe", True, on), _row("tpe-oracle", True, oracle)]
        return sg.verdicts(
            {"rows": rows + [_row("autopeft", False, None)]}, level | {"default": default}
        )

    met = lines(4_000, 3_800, 40)
    assert "2.5x MET" in met[0] and "95% of it" in met[1] and "MET" in met[1]
    assert "at most 40 trials MET" in met[2] and "AutoPEFT preset" in met[3]
    missed = lines(5_000, 2_000, 41)
    assert "2.5x NOT met" in missed[0]
    assert "40% of it" in missed[1] and "NOT met" in missed[1]
    assert "at most 40 trials NOT met" in missed[2]
    assert "at most 40 trials NOT met" in lines(4_000, 4_000, None)[2]
    # Halving's median run never reached the target: reach and final HV, and the goal missed.
    unreached = lines(None, 2_000, 40)
    assert "2.5x fewer steps with halving NOT met" in unreached[0]
    assert "no ratio to the ceiling" in unreached[1] and "0/5" in unreached[1]
    assert unreached[1].endswith("NOT met.")


def test_the_task_is_read_from_the_files_meta(tmp_path):
    data = tmp_path / "trials.jsonl"
    data.write_text(json.dumps({"meta": {"task": {"path": "/x/rt_order.jsonl"}}}) + "\n")
    assert sg.task_of(data) == "rt_order"
    assert sg.task_of(RESULTS / "real_trials_minilm_160.jsonl") == "rotten_tomatoes"


def test_one_small_run_writes_every_arm_and_the_three_goals(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.search_gains",
            "--data",
            str(RESULTS / "real_trials_minilm_160.jsonl"),
            "--seeds",
            "1",
            "--protocol-seeds",
            "0",
            "--random-trials",
            "6",
            "--budget-trials",
            "6",
            "--jobs",
            "2",
            "--out",
            str(tmp_path),
            "--name",
            "gains",
            "--rung-metric",
            "loss",
            "--keep",
            str(tmp_path / "keep"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads((tmp_path / "gains.json").read_text())
    arms = {(r["label"], r["halving"]) for r in saved["runs"]}
    assert arms == {("random", False), ("tpe", False), ("tpe", True), ("tpe-oracle", True)}
    assert all(r["steps"][-1] >= 6 * 160 or r["trials"] == 6 for r in saved["runs"])
    level = saved["meta"]["random_level"]
    random_hv = next(r["hv"] for r in saved["runs"] if r["label"] == "random")
    assert level["level"] == random_hv[5]
    # The target comes from the non-oracle runs only.
    best = max(r["hv"][-1] for r in saved["runs"] if not r["oracle"])
    assert saved["summary"]["best_hv"] == best
    text = (tmp_path / "gains.md").read_text()
    assert text.startswith("# Search gains on `rotten_tomatoes`")
    assert "Measured " in text and "Default sampler against random" in text
    assert "The runs' own wall time sums to" in text
    # Halving ranked its rungs by the surrogate's loss (halving.metric: loss).
    assert saved["meta"]["rung_metric"] == "loss"
    assert "its rungs ranking trials by loss" in text and "rungs seeing the final loss" in text
    halved = json.loads((tmp_path / "keep" / "gains-tpe-h1-s0" / "study.json").read_text())
    assert halved["halving"]["metric"] == "loss"


def test_the_default_rungs_are_autopefts_and_rungs_off_the_data_are_refused():
    from autopeft.core.study_config import TrainingConfig

    assert tuple(TrainingConfig().rungs) == sg.DEFAULT_RUNGS
    out = subprocess.run(
        [sys.executable, "-m", "bench.search_gains", "--data",
         str(RESULTS / "real_trials_minilm_160.jsonl"), "--rungs", "0.3,1.0"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--rungs must be evaluation steps of the real trials" in out.stderr
    assert "but got 0.3, 1.0" in out.stderr


def test_a_resumed_run_adds_to_the_wall_time_its_first_run_recorded(tmp_path):
    from autopeft.search.study import model_profile
    from bench.common import Spec, real_trials, run_one
    from bench.surrogate import Surrogate

    records = real_trials(RESULTS / "real_trials_minilm_160.jsonl")
    fitted = Surrogate(records, model_profile("minilm"))
    spec = Spec("gains", "random", "random", False, 0, 4 * 160, 4, fidelity=160)
    first = run_one(spec, fitted, str(tmp_path))
    again = run_one(spec, fitted, str(tmp_path))  # the study is complete: nothing more runs
    assert again["hv"] == first["hv"] and again["trials"] == first["trials"] == 4
    assert again["wall_s"] >= first["wall_s"] > 0.1


def test_another_sampler_in_the_defaults_place_is_read_from_its_own_rows():
    runs = [
        _run("random", False, 0, [0.1, 0.3]),
        _run("tpe", False, 0, [0.3]),  # not the sampler asked for: ignored
        _run("gp", False, 0, [0.1, 0.1, 0.3]),
    ]
    level = sg.random_level(runs, 2, "gp")
    assert level["per_seed"]["default"] == [3]
    rows = [_row("gp", False, 10_000), _row("gp", True, 4_000), _row("gp-oracle", True, 4_000)]
    lines = sg.verdicts({"rows": rows}, level | {"default": 3}, "gp")
    assert "2.5x MET" in lines[0] and "100% of it" in lines[1]
    assert lines[2].startswith("- `gp` as the default against random") and "MET" in lines[2]

"""The report's memory levers: on every point's hover, and summarised per lever and value.

A real study on the tiny Llama searches quantisation x gradient checkpointing x LoRA rank
(the bundled ``qlora`` study's space, at toy size); each assertion recounts the trials.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from autopeft import api
from autopeft.core.trial_result import TrialStatus
from autopeft.report import summaries, tables, write_report
from autopeft.report.html import figure_3d, pair_figure
from autopeft.report.tables import StudyData
from autopeft.search.local import run_local
from autopeft.search.study import Study
from tests.helpers import jsonl_task

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = {"quantization": ["none", "nf4"], "gradient_checkpointing": [False, True]}
#: How describe() (and so the hover and the configuration column) writes each value.
WRITTEN = {"none": "none", "nf4": "nf4", False: "false", True: "true"}
N_TRIALS = 8


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers-report")
    rows = [{"prompt": f"add {i} and {i % 7}", "completion": str(i + i % 7)} for i in range(48)]
    config = api.study_from_dict(
        {
            "name": "levers-report",
            "model": "tiny-llama",
            "task": jsonl_task(root, rows),
            "search_space": {
                "modules": {"lora": {"rank": [2, 8], "targets": {"choice": [["q", "v"]]}}},
                "training": SEARCHED,
            },
            "training": {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_examples": 16},
            "objectives": "-eval_loss, -trainable_params, -peak_memory",
            "sampler": {"name": "random", "seed": 3},
            "halving": {"enabled": False},
        }
    )
    s = run_local(Study(config, root=root), N_TRIALS, progress=False)
    done = [r for _, r in s.results() if r.status is TrialStatus.COMPLETE]
    assert len(done) >= 4, [r.error for _, r in s.results()]
    for lever, values in SEARCHED.items():  # every value trained, else the test proves little
        assert {r.candidate.training[lever] for r in done} == set(values), lever
    return s


@pytest.fixture(scope="module")
def data(study):
    return StudyData.from_study(study)


def test_the_lever_table_recounts_the_trials(study, data):
    rows = summaries.lever_summary(data)
    # One row per searched lever and value, in the search space's order; rank is no lever.
    assert [(r["lever"], r["value"]) for r in rows] == [
        (lever, WRITTEN[v]) for lever, values in SEARCHED.items() for v in values
    ]
    front = {n for n, _ in study.front_points()}
    results = study.results()
    for row in rows:
        value = next(v for v in SEARCHED[row["lever"]] if WRITTEN[v] == row["value"])
        mine = [(n, r) for n, r in results if r.candidate.training[row["lever"]] == value]
        done = [r for n, r in mine if r.status is TrialStatus.COMPLETE and n not in data.reused]
        assert row["trials"] == len(mine) and row["complete"] == len(done) > 0
        assert row["front"] == sum(n in front for n, _ in mine)
        assert row["metric"] == "eval_loss"  # minimised: the best is the lowest
        assert row["best_metric"] == min(r.metrics["eval_loss"] for r in done)
        assert row["median_memory_mb"] == statistics.median(r.peak_memory_mb for r in done)
        assert row["memory_kind"] == "CPU estimate"
        assert row["median_tokens_per_s"] == statistics.median(r.tokens_per_s for r in done)
        assert row["median_wall_time_s"] == statistics.median(r.wall_time_s for r in done)
    by = {(r["lever"], r["value"]): r for r in rows}
    # Every trial has one value of each lever, and a 4-bit base needs less memory.
    for lever in SEARCHED:
        assert sum(r["trials"] for r in rows if r["lever"] == lever) == len(results)
        assert sum(r["front"] for r in rows if r["lever"] == lever) == len(front)
    nf4, fp32 = by[("quantization", "nf4")], by[("quantization", "none")]
    assert nf4["median_memory_mb"] < fp32["median_memory_mb"]


def test_a_trial_told_before_the_lever_was_searched_counts_at_the_fixed_value(data):
    # A 4-bit trial: stripped of its levers it ran unquantised, the study's fixed value.
    k, (n, first) = next(
        (k, nr)
        for k, nr in enumerate(data.results)
        if nr[1].candidate.training["quantization"] == "nf4"
    )
    stripped = first.candidate.model_copy(update={"training": {}})
    results = list(data.results)
    results[k] = (n, first.model_copy(update={"candidate": stripped}))
    before = {(r["lever"], r["value"]): r["trials"] for r in summaries.lever_summary(data)}
    after = summaries.lever_summary(StudyData(**{**data.__dict__, "results": results}))
    moved = {(r["lever"], r["value"]): r["trials"] for r in after}
    for lever in SEARCHED:  # the study's fixed values: no quantisation, no checkpointing
        own = (lever, WRITTEN[first.candidate.training[lever]])
        fixed = (lever, WRITTEN[SEARCHED[lever][0]])
        assert sum(v for k, v in moved.items() if k[0] == lever) == len(data.results)
        if own != fixed:
            assert moved[own] == before[own] - 1 and moved[fixed] == before[fixed] + 1
    assert moved[("quantization", "none")] == before[("quantization", "none")] + 1


def test_every_point_shows_its_levers_on_hover(study, data):
    trials = dict(study.results())
    figures = [(pair_figure(data, i, j), 2) for i, j in tables.objective_pairs(data)]
    figures.append((figure_3d(data), 1))
    for fig, at in figures:
        shown = [(c[0], c[at]) for t in fig.data if t.customdata is not None for c in t.customdata]
        assert shown
        for number, hover in shown:
            levers = trials[number].candidate.training
            for lever in SEARCHED:
                assert f"{lever}={WRITTEN[levers[lever]]}" in hover.split("<br>"), hover


def test_the_report_has_the_lever_section_only_when_levers_were_searched(data, tmp_path):
    text = write_report(data, tmp_path / "levers.html").read_text()
    assert text.count("<h2>Memory levers</h2>") == 1
    for lever, values in SEARCHED.items():
        for v in values:
            assert f"<td>{lever}</td><td><code>{WRITTEN[v]}</code></td>" in text
    plain = [
        (n, r.model_copy(update={"candidate": r.candidate.model_copy(update={"training": {}})}))
        for n, r in data.results
    ]
    none = StudyData(**{**data.__dict__, "results": plain})
    assert summaries.searched_levers(none) == [] and summaries.lever_summary(none) == []
    assert "Memory levers" not in write_report(none, tmp_path / "plain.html").read_text()


def test_the_bundled_qlora_study_searches_the_levers_and_the_rank():
    config = api.load(ROOT / "studies/qlora/study.yaml")
    space = config.search_space
    assert config.model == "smollm2" and config.task.kind == "causal_lm"
    assert space.training.values("quantization") == ["none", "nf4"]
    assert space.training.values("gradient_checkpointing") == [False, True]
    assert space.modules["lora"].domains["rank"].values() == [4, 16]
    assert [o.metric for o in config.objectives] == [
        "exact_match",
        "trainable_params",
        "peak_memory",
    ]

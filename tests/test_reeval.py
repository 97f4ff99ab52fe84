"""`reeval`: progress on stderr, and no (candidate, seed) trained twice: seeds measured by an
earlier reeval or by the search itself are taken from the study."""

from __future__ import annotations

import pytest

from autopeft import api, cli, reeval
from autopeft.core.trial_result import TrialResult, TrialStatus
from autopeft.search.study import Study

STUDY = {
    "name": "seeds",
    "model": "tiny-bert",
    "task": {"name": "sms_spam", "max_length": 32},
    "search_space": {"modules": {"lora": {"rank": [2, 4, 8]}}},
    "objectives": "accuracy, -trainable_params",
    "training": {"steps": 2, "batch_size": 8, "seed": 1},
}
#: rank -> (accuracy, trainable parameters): every trial is on the front.
POINTS = {8: (0.9, 300), 4: (0.8, 200), 2: (0.7, 100)}


@pytest.fixture
def study(tmp_path):
    """Three front trials, told synthetic results (no training) in a real SQLite study."""
    s = Study(api.study_from_dict(STUDY), root=tmp_path)
    for rank, (accuracy, params) in POINTS.items():
        s.optuna.enqueue_trial({"lora.rank": rank})
        trial, candidate = s.ask()
        s.tell(
            trial,
            TrialResult(
                status=TrialStatus.COMPLETE,
                candidate=candidate,
                metrics={"accuracy": accuracy},
                trainable_params=params,
            ),
        )
    assert len(s.front_points()) == 3
    return s


class Counter:
    """A seed runner that records each (candidate, seed) it trains."""

    def __init__(self, fail: set[int] | None = None):
        self.calls: list[tuple[str, int]] = []
        self.fail = fail or set()

    def __call__(self, candidate, seed):
        self.calls.append((candidate.key(), seed))
        if seed in self.fail:
            return TrialResult(status=TrialStatus.FAILED, candidate=candidate, error="oom")
        return TrialResult(
            status=TrialStatus.COMPLETE, candidate=candidate, metrics={"accuracy": 0.5 + seed / 100}
        )


def _keys(study) -> dict[int, str]:
    return {n: r.candidate.key() for n, r in study.results()}


def test_the_same_seeds_again_train_nothing_and_more_seeds_only_the_new_ones(study):
    keys = _keys(study)
    first = Counter()
    rows = reeval.reeval(study, top=2, seeds=3, run=first)
    assert [r["trial"] for r in rows] == [0, 1]  # best accuracy first
    # Seed 1 is the study's training.seed: the search trained it, so it is not trained again.
    assert sorted(first.calls) == sorted((keys[n], s) for n in (0, 1) for s in (0, 2))
    for row, (accuracy, _) in zip(rows, POINTS.values()):
        assert [run["seed"] for run in row["seeds"]] == [0, 1, 2]
        assert row["seeds"][1]["accuracy"] == accuracy and row["seeds"][1]["trial"] == row["trial"]
        assert (row["trained"], row["reused"]) == (2, 1)
        assert row["mean"] == pytest.approx((0.5 + accuracy + 0.52) / 3)
    stored = {n: study.optuna.user_attrs[f"reeval.{n}"] for n in (0, 1)}

    again = Counter()
    rows = reeval.reeval(study, top=2, seeds=3, run=again)
    assert again.calls == []
    assert [(r["trained"], r["reused"]) for r in rows] == [(0, 3), (0, 3)]
    assert {n: study.optuna.user_attrs[f"reeval.{n}"] for n in (0, 1)} == stored

    more = Counter()
    rows = reeval.reeval(study, top=3, seeds=5, run=more)
    # Points 0 and 1: seeds 3 and 4 only; point 2 (new): every seed but the search's.
    expected = [(keys[n], s) for n in (0, 1) for s in (3, 4)]
    expected += [(keys[2], s) for s in (0, 2, 3, 4)]
    assert sorted(more.calls) == sorted(expected)
    assert all([run["seed"] for run in r["seeds"]] == [0, 1, 2, 3, 4] for r in rows)


def test_a_failed_seed_is_trained_again_and_the_others_are_not(study):
    reeval.reeval(study, top=1, seeds=3, run=Counter(fail={2}))
    record = study.optuna.user_attrs["reeval.0"]
    assert [run["status"] for run in record["seeds"]] == ["COMPLETE", "COMPLETE", "FAILED"]
    retry = Counter()
    (row,) = reeval.reeval(study, top=1, seeds=3, run=retry)
    assert [seed for _, seed in retry.calls] == [2]
    assert [run["status"] for run in row["seeds"]] == ["COMPLETE"] * 3


def test_the_cli_shows_progress_and_loads_no_model_when_nothing_is_new(study, capsys, monkeypatch):
    made = []

    def runner(s):  # the seam the CLI trains through: counts the models it would load
        made.append(s)
        return Counter()

    monkeypatch.setattr(reeval, "_training_seed_runner", runner)
    folder = str(study.folder)
    assert cli.main(["reeval", folder, "--top", "2", "--seeds", "2"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "reeval: front point 1/2 (trial 0): 1 of 2 seeds measured before, not retrained",
        "reeval: front point 1/2 (trial 0), seed 1/2: training",
        "reeval: front point 2/2 (trial 1): 1 of 2 seeds measured before, not retrained",
        "reeval: front point 2/2 (trial 1), seed 1/2: training",
    ]
    assert (
        "trial 0: accuracy 0.7000 +- 0.2828 over 2 seeds; 1 trained now, 1 measured before" in out
    )
    assert len(made) == 1  # one model for every training

    assert cli.main(["reeval", folder, "--top", "2", "--seeds", "2"]) == 0
    out, err = capsys.readouterr()
    assert len(made) == 1  # nothing to train: no model loaded
    assert "0 trained now, 2 measured before" in out and "training" not in err

    assert cli.main(["reeval", folder, "--top", "1", "--seeds", "3", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "1 trained now, 2 measured before" in out

"""Task signal without training: bench/signal_stats.py's arithmetic, task_signal's seeds and
bench/signal_tasks.py's generated task."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter

import pytest

import autopeft
from bench.signal_stats import pooled_std, quantile, signal, spearman, spread, summarize
from bench.signal_tasks import ORDERS, order_rows, reorder, rt_snippets, words_of
from bench.task_signal import with_seed

SNIPPETS = [
    "A gorgeous, witty, seductive movie -- and the best of the year.",
    "The plot is nothing but boilerplate cliches from start to finish, sadly.",
    "It's a charming and often affecting journey through one family's history.",
    "Too long, too slow and too pleased with itself to be any fun at all.",
    "Short one.",
    "a a a a a a a a a a",  # one word only: no distinct shuffle
]


def test_quantile_and_spread_interpolate_between_order_statistics():
    assert quantile([4, 1, 3, 2], 0.25) == pytest.approx(1.75)
    assert quantile([4, 1, 3, 2], 0.75) == pytest.approx(3.25)
    s = spread([1.0, 2.0, 3.0, 4.0])
    assert s["iqr"] == pytest.approx(1.5) and s["range"] == 3.0 and s["n"] == 4
    assert s["std"] == pytest.approx(statistics.stdev([1, 2, 3, 4]))
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_pooled_std_weights_groups_by_their_degrees_of_freedom():
    std, df = pooled_std([[1.0, 3.0], [2.0, 4.0, 6.0], [9.0]])  # the singleton adds nothing
    assert df == 3 and std == pytest.approx(math.sqrt((2 + 8) / 3))
    assert math.isnan(pooled_std([[1.0], [2.0]])[0])


def test_snr_is_candidate_std_over_seed_std_and_scale_free():
    cands = [0.40, 0.55, 0.70, 0.90, 0.35]
    seeds = [[0.70, 0.72, 0.69], [0.40, 0.43]]
    s = signal(cands, seeds, 1000)
    seed_std, df = pooled_std(seeds)
    assert s["snr"] == pytest.approx(statistics.stdev(cands) / seed_std) and s["seed_df"] == df
    assert s["snr_iqr"] == pytest.approx(s["iqr"] / seed_std)
    assert s["between_std"] < s["std"]
    assert s["eval_se"] == pytest.approx(math.sqrt(s["mean"] * (1 - s["mean"]) / 1000))
    # Shifting and scaling every value changes neither ratio.
    t = signal([3 * c + 1 for c in cands], [[3 * x + 1 for x in g] for g in seeds], 1000)
    assert t["snr"] == pytest.approx(s["snr"]) and t["snr_iqr"] == pytest.approx(s["snr_iqr"])
    # Noise as large as the signal: SNR near 1 and no spread left between candidates.
    u = signal([0.5, 0.6], [[0.5, 0.6]], 100)
    assert u["snr"] == pytest.approx(1.0) and u["between_std"] == pytest.approx(0.0, abs=1e-9)


def test_spearman_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        statistics.correlation([1.5, 1.5, 3, 4], [1, 2, 3, 4])
    )
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_summarize_takes_candidates_at_seed_0_and_seeds_per_draw():
    def rec(draw, seed, curve, status="COMPLETE"):
        history = [{"step": s, "accuracy": a} for s, a in zip((10, 20), curve)]
        return {"draw": draw, "seed": seed, "status": status, "history": history}

    records = [
        rec(0, 0, (0.3, 0.8)),
        rec(1, 0, (0.3, 0.5)),
        rec(2, 0, (0.4, 0.9)),
        rec(0, 1, (0.3, 0.7)),
        rec(0, 2, (0.3, 0.9)),
        rec(3, 0, (0.0, 0.0), status="FAILED"),  # left out
    ]
    rows = summarize(records, "accuracy", (10, 20), 500)
    final = rows[-1]
    assert final["n"] == 3 and final["mean"] == pytest.approx((0.8 + 0.5 + 0.9) / 3)
    assert final["seed_std"] == pytest.approx(statistics.stdev([0.8, 0.7, 0.9]))
    assert final["seed_df"] == 2 and final["spearman_final"] == pytest.approx(1.0)
    assert final["seed_std_by_draw"] == {0: pytest.approx(statistics.stdev([0.8, 0.7, 0.9]))}
    assert [r["step"] for r in rows] == [10, 20]


def test_order_label_is_a_deterministic_function_of_the_words():
    rows = order_rows(SNIPPETS)
    assert rows == order_rows(list(SNIPPETS))  # the same input, the same rows
    assert len(rows) == 4  # the short and the one-word snippets are left out
    for snippet, row in zip(SNIPPETS, rows):
        words = words_of(snippet)
        assert reorder(words) == (row["text"], row["label"])
        out = row["text"].split()
        assert sorted(out) == sorted(words)  # the same words, only their order changes
        if row["label"] == "forward":
            assert out == words
        elif row["label"] == "reversed":
            assert out == words[::-1]
        else:
            assert out not in (words, words[::-1])
    assert all("," not in r["text"] and r["text"] == r["text"].lower() for r in rows)


def test_rt_order_is_balanced_and_loads_as_an_autopeft_task(tmp_path):
    rows = order_rows(rt_snippets())
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(ORDERS) and len(rows) > 12_000
    assert all(0.30 < c / len(rows) < 0.37 for c in counts.values()), counts
    assert len({r["text"] for r in rows}) == len(rows)
    path = tmp_path / "rt_order.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:300]))
    config = autopeft.study_from_dict(
        {
            "name": "rt-order",
            "model": "tiny-bert",
            "task": {"path": str(path), "max_length": 48},
            "training": {"steps": 2, "batch_size": 4},
            "search_space": {"modules": {"lora": {"rank": [2]}}},
        }
    )
    ctx = autopeft.TrialContext.create(config)
    assert ctx.profile.num_labels == 3
    # A training seed changes the recipe's seed only: the same split and base model.
    seeded = with_seed(ctx, 5)
    assert seeded.config.training.seed == 5 and ctx.config.training.seed == 0
    assert seeded.data is ctx.data and seeded.base_model is ctx.base_model
    assert seeded.config.model_copy(update={"training": ctx.config.training}) == ctx.config
    assert sum(len(split) for split in ctx.data.values()) == 300
    labels = {int(v) for split in ctx.data.values() for v in split.labels}
    assert labels == {0, 1, 2}

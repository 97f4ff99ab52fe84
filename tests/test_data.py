"""Tasks: built-in offline data, user CSV/JSONL files, fixed splits, cached tokenisation."""

from __future__ import annotations

import json

import pytest
import torch

from autopeft.core.errors import ConfigError
from autopeft.core.study_config import TaskConfig
from autopeft.train.data import encode, load_task
from autopeft.train.loop import classification_metrics
from autopeft.train.models import load_tokenizer


@pytest.mark.parametrize(
    ("name", "size", "majority"), [("rotten_tomatoes", 12752, 0.578), ("sms_spam", 4512, 0.877)]
)
def test_builtin_tasks_are_deduplicated_and_split_reproducibly(name, size, majority):
    a, b = load_task(TaskConfig(name=name)), load_task(TaskConfig(name=name))
    assert len(a.texts) == size and a.num_labels == 2
    assert a.split == b.split
    parts = [set(a.split[s]) for s in ("train", "validation", "test")]
    assert sum(map(len, parts)) == size and not (parts[0] & parts[1] or parts[1] & parts[2])
    assert len(set(a.texts)) == size
    counts = torch.bincount(torch.tensor(a.labels))
    assert abs(float(counts.max()) / size - majority) < 0.01
    assert load_task(TaskConfig(name=name), seed=1).split != a.split


def test_user_csv_and_jsonl_with_sentence_pairs(tmp_path):
    rows = [
        {"q": f"question {i}", "a": f"answer {i % 7}", "y": "yes" if i % 3 else "no"}
        for i in range(60)
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    csv = "q,a,y\n" + "\n".join(f"{r['q']},{r['a']},{r['y']}" for r in rows)
    (tmp_path / "pairs.csv").write_text(csv)
    for file in ("pairs.jsonl", "pairs.csv"):
        cfg = TaskConfig(name="qa", path=str(tmp_path / file), text="q", text_pair="a", label="y")
        task = load_task(cfg)
        assert task.label_names == ["no", "yes"] and len(task.texts) == 60
        assert task.pairs[0].startswith("answer")
        tok = load_tokenizer("tiny-bert", task.texts + task.pairs)
        enc = encode(task, tok, 16, None)
        batch = enc["train"].batch(torch.arange(4))
        assert batch["input_ids"].shape[0] == 4 and batch["attention_mask"].sum() > 0


def test_bad_task_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown built-in task 'rotten'"):
        load_task(TaskConfig(name="rotten"))
    (tmp_path / "d.csv").write_text("sentence,label\nhello,1\nbye,0\n")
    with pytest.raises(ConfigError, match="column 'text' is not in"):
        load_task(TaskConfig(name="d", path=str(tmp_path / "d.csv")))
    with pytest.raises(ConfigError, match="no such file"):
        load_task(TaskConfig(name="d", path=str(tmp_path / "missing.csv")))


def test_tokenisation_is_cached_on_disk(tmp_path):
    task = load_task(TaskConfig(name="sms_spam"))
    tok = load_tokenizer("tiny-bert", [task.texts[i] for i in task.split["train"]])
    first = encode(task, tok, 32, tmp_path)
    files = list(tmp_path.glob("tokens-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = encode(task, tok, 32, tmp_path)
    assert files[0].stat().st_mtime_ns == stamp
    assert torch.equal(first["train"].input_ids, second["train"].input_ids)
    encode(task, tok, 24, tmp_path)
    assert len(list(tmp_path.glob("tokens-*.pt"))) == 2  # a new length is a new key


def test_left_padding_keeps_tokens_at_the_end():
    task = load_task(TaskConfig(name="sms_spam"))
    tok = load_tokenizer("tiny-bert", task.texts[:500])
    right = encode(task, tok, 32, None)["validation"]
    left = encode(task, tok, 32, None, left_pad=True)["validation"]
    idx = torch.arange(8)
    r, lb = right.batch(idx), left.batch(idx)
    for row in range(8):
        n = int(r["attention_mask"][row].sum())
        assert torch.equal(lb["input_ids"][row, -n:], r["input_ids"][row, :n])
        assert int(lb["attention_mask"][row, -n:].sum()) == n


def test_metrics_on_a_hand_checked_example():
    preds = torch.tensor([1, 1, 0, 0, 1, 0])
    labels = torch.tensor([1, 0, 0, 0, 1, 1])
    m = classification_metrics(preds, labels, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 1: p=2/3 r=2/3 f1=2/3; class 0: p=2/3 r=2/3 f1=2/3
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["mcc"] == pytest.approx((2 * 2 - 1 * 1) / 9)


def test_huggingface_datasets_dataset_from_disk(tmp_path):
    import datasets

    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    rows = {
        "sentence": [f"movie {i} was {'good' if i % 2 else 'bad'}" for i in range(40)],
        "label": [i % 2 for i in range(40)],
    }
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({k: v[:30] for k, v in rows.items()}, features=features),
        validation=datasets.Dataset.from_dict(
            {k: v[30:] for k, v in rows.items()}, features=features
        ),
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    task = load_task(TaskConfig(name="sst", hf_dataset=str(tmp_path / "ds"), text="sentence"))
    assert task.label_names == ["negative", "positive"] and len(task.texts) == 40
    assert all((lab == 1) == ("good" in t) for t, lab in zip(task.texts, task.labels))
    with pytest.raises(ConfigError, match="cannot load the dataset"):
        load_task(TaskConfig(name="x", hf_dataset=str(tmp_path / "missing")))


def test_two_trials_building_the_same_token_cache_at_once_both_succeed(tmp_path, monkeypatch):
    # The Ray executor's first trials build one cache file together; with one temporary
    # name, the second to finish found its file moved away (FileNotFoundError, a failed trial).
    import threading

    import torch

    from autopeft.train import data

    saved = threading.Barrier(2, timeout=30)
    real_save = torch.save

    def save_then_wait(value, where):  # both written before either is moved into place
        real_save(value, where)
        saved.wait()

    monkeypatch.setattr(torch, "save", save_then_wait)
    results, errors = [], []

    def trial():
        try:
            results.append(data.cached_tensors(tmp_path, "tokens", lambda: torch.arange(5)))
        except Exception as err:  # noqa: BLE001 -- the failure under test
            errors.append(err)

    threads = [threading.Thread(target=trial) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 2
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("tokens-") and files[0].endswith(".pt")
    assert torch.equal(data.cached_tensors(tmp_path, "tokens", lambda: None), torch.arange(5))

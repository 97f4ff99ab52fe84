"""Sequence classification: texts (or text pairs) -> labels, with a trained classifier head."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.tasks import register
from autopeft.tasks.base import TaskKind

if TYPE_CHECKING:
    from autopeft.core.errors import Problem
    from autopeft.core.study_config import TaskConfig


@register
class Classification(TaskKind):
    """Classify texts: built-in ``rotten_tomatoes``/``sms_spam``, CSV/JSONL or a dataset."""

    name = "classification"
    summary = "sequence classification of texts or text pairs (accuracy, f1, mcc, loss)"
    metrics = {"accuracy": "maximize", "f1": "maximize", "mcc": "maximize", "loss": "minimize"}
    default_metric = "accuracy"
    default_task = "rotten_tomatoes"
    head = "classifier"
    fields = ("text", "text_pair", "label")

    def load(self, cfg: TaskConfig, seed: int) -> Any:
        """See :func:`autopeft.train.data.load_task`."""
        from autopeft.train.data import load_task

        return load_task(cfg, seed)

    def check(self, cfg: TaskConfig) -> list[Problem]:
        """See :func:`autopeft.train.task_files.classification_problems`."""
        from autopeft.train.task_files import classification_problems

        return classification_problems(cfg)

    def num_labels(self, task: Any) -> int:
        """The task's classes."""
        return int(task.num_labels)

    def tokenizer(self, model: str, task: Any) -> Any:
        """The model's tokenizer (a tiny model's is fitted on the training texts)."""
        from autopeft.train.models import load_tokenizer

        return load_tokenizer(model, [task.texts[i] for i in task.split["train"]])

    def encode(
        self, task: Any, tokenizer: Any, cfg: TaskConfig, cache_dir: Path | None, profile: Any
    ) -> dict[str, Any]:
        """Tokenised splits; left padding for causal classifiers (they read the last token)."""
        from autopeft.train.data import encode

        return encode(task, tokenizer, cfg.max_length, cache_dir, profile.is_causal)

    def evaluate(
        self,
        adapted: Any,
        data: Any,
        batch_size: int,
        limit: int,
        device: Any,
        wanted: frozenset[str],
    ) -> dict[str, float]:
        """Accuracy, macro-F1, MCC and the mean loss (see :func:`autopeft.train.loop.evaluate`)."""
        from autopeft.train.loop import evaluate

        return evaluate(adapted, data, batch_size, limit, device)

    def describe(self, task: Any) -> dict[str, Any]:
        """The labels, in the head's order."""
        return {"num_labels": int(task.num_labels), "labels": list(task.label_names)}

"""The contract every task kind implements (one file per kind, one registration).

A task kind owns what differs between, say, classifying texts and instruction-tuning a
decoder: how rows become batches, which model head is loaded, the metrics and their
directions, the peft ``task_type`` and what an export says. Everything downstream (halving,
report, dashboard, export) reads metrics by name, never assumes ``accuracy``.

The class attributes are plain data (``autopeft validate`` reads them without torch); the
methods import torch and transformers inside, when a trial needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from autopeft.core.errors import Problem
    from autopeft.core.study_config import TaskConfig


class TaskKind:
    """A kind of task a study can search PEFT configurations for."""

    #: Registered name (``task.kind`` in a study file).
    name: ClassVar[str]
    #: One line for ``autopeft tasks``.
    summary: ClassVar[str]
    #: The metrics a trial measures, with their natural direction.
    metrics: ClassVar[dict[str, Literal["maximize", "minimize"]]]
    #: The task metric when a study names none.
    default_metric: ClassVar[str]
    #: The built-in task when a study names no task, file or dataset.
    default_task: ClassVar[str]
    #: What :func:`autopeft.train.models.load_model` loads: ``classifier`` or ``lm``.
    head: ClassVar[Literal["classifier", "lm"]]
    #: The ``task`` fields this kind reads beside the common ones (kind, name, path, ...):
    #: ``TaskConfig`` attributes, or names of the kind's own, read with
    #: ``cfg.model_extra.get(name, default)`` (validation accepts exactly these).
    fields: ClassVar[tuple[str, ...]] = ()
    #: Metrics that need a ``task`` field set (metric -> field), e.g. a scoring function.
    needs: ClassVar[dict[str, str]] = {}

    def load(self, cfg: TaskConfig, seed: int) -> Any:
        """The task's examples and their fixed train/validation/test split.

        Raises:
            ConfigError: a missing or malformed file, column or row (one paragraph each).
        """
        raise NotImplementedError

    def check(self, cfg: TaskConfig) -> list[Problem]:
        """What :meth:`load` would refuse, found without torch (``autopeft validate``).

        One problem per field (``task.path``, ``task.label``, ...); empty when the task
        reads fine or this kind checks nothing ahead of a run (the default).
        """
        return []

    def num_labels(self, task: Any) -> int:
        """Classes of the model's head (0: no classifier head)."""
        return 0

    def tokenizer(self, model: str, task: Any) -> Any:
        """The tokenizer of ``model`` ready for this task (tiny models get one fitted)."""
        raise NotImplementedError

    def encode(
        self, task: Any, tokenizer: Any, cfg: TaskConfig, cache_dir: Path | None, profile: Any
    ) -> dict[str, Any]:
        """Every split, tokenised: split name -> an object with ``batch``/``batches``/``lengths``.

        ``batch(idx)`` gives the model's keyword arguments including ``labels`` (what the
        model's own loss reads); ``batches(size, seed, steps)`` the training stream.
        """
        raise NotImplementedError

    def notes(self, data: dict[str, Any]) -> list[str]:
        """What encoding did to the rows that a user should know (e.g. truncation)."""
        return []

    def evaluate(
        self,
        adapted: Any,
        data: Any,
        batch_size: int,
        limit: int,
        device: Any,
        wanted: frozenset[str],
    ) -> dict[str, float]:
        """The metrics of ``adapted`` on the first ``limit`` rows of one encoded split.

        ``wanted`` names the metrics the study uses; costly ones (generation) are computed
        only when wanted.
        """
        raise NotImplementedError

    def describe(self, task: Any) -> dict[str, Any]:
        """What an export's manifest records about the task (labels, formats, ...)."""
        return {}

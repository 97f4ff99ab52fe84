"""Causal-LM supervised fine-tuning (instruction tuning) of decoder LLMs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.tasks import register
from autopeft.tasks.base import TaskKind

if TYPE_CHECKING:
    from autopeft.core.errors import Problem
    from autopeft.core.study_config import TaskConfig


@register
class CausalLM(TaskKind):
    """Prompt -> completion (or chat turns) SFT with the loss on the answer tokens only.

    Data: JSONL/CSV rows with ``prompt`` and ``completion``, or ``messages`` (chat turns,
    rendered with the tokenizer's chat template, the last turn the assistant's answer); a
    ``datasets`` dataset with such columns; or the built-in ``arithmetic`` task. Metrics:
    ``eval_loss`` and ``perplexity`` always, ``exact_match`` of greedy answers when a study
    uses it, and ``score``: the study's own function of the greedy answers (``task.scorer``).
    The model is the base's own causal LM (its LM head stays frozen).
    """

    name = "causal_lm"
    summary = "instruction tuning of a decoder: prompt/completion or chat rows (SFT)"
    metrics = {
        "eval_loss": "minimize",
        "perplexity": "minimize",
        "exact_match": "maximize",
        "score": "maximize",
    }
    needs = {"score": "scorer"}
    default_metric = "eval_loss"
    default_task = "arithmetic"
    head = "lm"
    fields = (
        "prompt",
        "completion",
        "messages",
        "chat_template",
        "max_new_tokens",
        "generate_examples",
        "scorer",
    )

    def load(self, cfg: TaskConfig, seed: int) -> Any:
        """See :func:`autopeft.train.sft.load_sft`."""
        from autopeft.train.sft import load_sft

        return load_sft(cfg, seed)

    def check(self, cfg: TaskConfig) -> list[Problem]:
        """See :func:`autopeft.train.task_files.causal_lm_problems`."""
        from autopeft.train.task_files import causal_lm_problems

        return causal_lm_problems(cfg)

    def tokenizer(self, model: str, task: Any) -> Any:
        """The model's tokenizer (a tiny model's is fitted on prompts and answers)."""
        from autopeft.train.models import load_tokenizer

        texts = [
            f"{p if isinstance(p, str) else ' '.join(t['content'] for t in p)} {c}"
            for p, c in zip(task.prompts, task.completions)
        ]
        return load_tokenizer(model, texts, eos=True)

    def encode(
        self, task: Any, tokenizer: Any, cfg: TaskConfig, cache_dir: Path | None, profile: Any
    ) -> dict[str, Any]:
        """See :func:`autopeft.train.sft.encode_sft`."""
        from autopeft.train.sft import encode_sft

        return encode_sft(task, tokenizer, cfg, cache_dir)

    def notes(self, data: dict[str, Any]) -> list[str]:
        """Rows left out or cut to fit ``max_length``, per split."""
        from autopeft.train.sft import fit_notes

        return fit_notes(data)

    def evaluate(
        self,
        adapted: Any,
        data: Any,
        batch_size: int,
        limit: int,
        device: Any,
        wanted: frozenset[str],
    ) -> dict[str, float]:
        """See :func:`autopeft.train.sft.evaluate_sft`."""
        from autopeft.train.sft import evaluate_sft

        return evaluate_sft(adapted, data, batch_size, limit, device, wanted)

    def describe(self, task: Any) -> dict[str, Any]:
        """The data format the adapter was trained on."""
        return {"format": "messages" if task.chat_rows else "prompt_completion"}

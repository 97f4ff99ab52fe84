"""Supervised fine-tuning data for causal LMs: rows -> token batches, and greedy evaluation.

Rows are ``prompt`` + ``completion`` strings, or ``messages`` (chat turns whose last one is
the assistant's answer), from a CSV/JSONL file, a ``datasets`` dataset or the built-in
``arithmetic`` task. The loss falls on the completion tokens only: prompt and padding are
masked by *position* (masking by ``input_ids == pad_id`` would also mask the answer's end
token when pad == eos, and the model would never learn to stop). Rows are de-duplicated and
split 80/10/10 by the same seeded rule as classification tasks.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autopeft.core.errors import ConfigError, Problem, did_you_mean
from autopeft.core.study_config import TaskConfig
from autopeft.train.data import Encoded, cached_tensors, cuts
from autopeft.train.task_files import (
    SFT_SPLIT_HINT,
    Rows,
    chat_problem,
    column_problems,
    read_rows,
    split_problems,
)

#: Chat turns: ``[{"role": "user", "content": "..."}, ...]``.
Messages = list[dict[str, str]]


@dataclass
class SFTTask:
    """Instruction rows (a prompt or chat turns, and the answer) with a fixed split."""

    name: str
    prompts: list[str | Messages]
    completions: list[str]
    split: dict[str, list[int]]
    fingerprint: str

    @property
    def chat_rows(self) -> bool:
        """Whether the rows are chat turns (they need the tokenizer's chat template)."""
        return bool(self.prompts) and not isinstance(self.prompts[0], str)


def arithmetic_rows(n: int = 2000, seed: int = 0) -> list[dict[str, str]]:
    """The built-in ``arithmetic`` task: short word problems with exact integer answers.

    Generated (no download), deterministic, with a few phrasings so a model must read the
    question rather than learn one template.
    """
    rng = random.Random(seed)
    names = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "June"]
    things = ["apples", "books", "coins", "stamps", "marbles", "cards", "shells", "pens"]
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(rows) < n:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        # Half are bare sums, a fifth differences, the rest word problems: a small model
        # learns the answer format within a few dozen steps and still has to read.
        style = rng.choices(range(4), weights=(10, 4, 3, 3))[0]
        who, what = rng.choice(names), rng.choice(things)
        if style == 0:
            prompt, answer = f"What is {a} + {b}?", a + b
        elif style == 1:
            a, b = max(a, b), min(a, b)
            prompt, answer = f"What is {a} - {b}?", a - b
        elif style == 2:
            prompt = f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have?"
            answer = a + b
        else:
            a, b = max(a, b), min(a, b)
            prompt = f"{who} had {a} {what} and gave away {b}. How many {what} are left?"
            answer = a - b
        if prompt not in seen:
            seen.add(prompt)
            prompt += " Answer with the number only."
            rows.append({"prompt": prompt, "completion": str(answer)})
    return rows


BUILTIN_SFT_TASKS = {"arithmetic": arithmetic_rows}


def load_sft(cfg: TaskConfig, seed: int = 0) -> SFTTask:
    """Load a causal-LM task: built-in, a CSV/JSONL file (``path``) or a datasets dataset.

    Raises:
        ConfigError: a missing file, column or answer; a chat row without a final assistant
            turn; or too few distinct rows for the split.
    """
    if cfg.hf_dataset:
        from autopeft.train.data import hf_rows

        data = hf_rows(cfg)
    elif cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise ConfigError(
                Problem(
                    "task.path",
                    f"no such file: {path}",
                    hint="a relative path in a study file is read from the study file's folder",
                )
            )
        data = read_rows(path, "jsonl" if path.suffix in (".jsonl", ".json") else "csv")
    elif cfg.name in BUILTIN_SFT_TASKS:
        data = Rows(BUILTIN_SFT_TASKS[cfg.name](seed=0), cfg.name, "task.name")
    else:
        raise ConfigError(
            Problem(
                "task.name",
                f"unknown built-in causal_lm task {cfg.name!r}",
                hint=did_you_mean(cfg.name, BUILTIN_SFT_TASKS)
                + "; or give `path:` to a JSONL/CSV file with prompt/completion or messages",
            )
        )
    pairs = _pairs(data, cfg)
    unique = sorted({json.dumps(p, sort_keys=True): p for p in pairs}.items())
    order = list(range(len(unique)))
    random.Random(seed).shuffle(order)
    cut1, cut2 = cuts(len(order))
    split = {"train": order[:cut1], "validation": order[cut1:cut2], "test": order[cut2:]}
    if problems := split_problems(len(order), data, "rows", SFT_SPLIT_HINT):
        raise ConfigError(problems)
    keys = [k for k, _ in unique]
    digest = hashlib.sha1(json.dumps([keys[:50], len(keys), seed]).encode()).hexdigest()[:12]
    return SFTTask(
        name=cfg.name,
        prompts=[p[0] for _, p in unique],
        completions=[p[1] for _, p in unique],
        split=split,
        fingerprint=f"{cfg.name}-{digest}",
    )


def _pairs(data: Rows, cfg: TaskConfig) -> list[tuple[str | Messages, str]]:
    """``(prompt or chat turns, answer)`` of every row; messages rows when the column exists."""
    if not data.rows:
        raise ConfigError(Problem(data.field, f"{data.source} has no rows", hint=data.hint))
    if any(cfg.messages in row for row in data.rows[:100]):
        return [_chat_pair(row.get(cfg.messages), data, i, cfg) for i, row in enumerate(data.rows)]
    problems = column_problems(data, {"prompt": cfg.prompt, "completion": cfg.completion})
    if problems:
        hint = f"{problems[0].hint or ''} (or give chat turns in a {cfg.messages!r} column)"
        problems[0].hint = hint
        raise ConfigError(problems)
    return [(str(row[cfg.prompt]), str(row[cfg.completion])) for row in data.rows]


def _chat_pair(turns: Any, data: Rows, index: int, cfg: TaskConfig) -> tuple[Messages, str]:
    """A chat row split into the turns before the final assistant answer, and that answer."""
    if problem := chat_problem(turns, data, index, cfg.messages):
        raise ConfigError(problem)
    prompt = [{"role": t["role"], "content": str(t["content"])} for t in turns[:-1]]
    return prompt, str(turns[-1]["content"])


@dataclass
class SFTEncoded(Encoded):
    """One split, tokenised: prompt + completion ids, right-padded.

    ``labels`` holds each row's *prompt length*: positions before it and past the row's
    length carry no loss. ``references`` are the answers as written, for exact match.
    """

    references: list[str] = field(default_factory=list)
    pad_id: int = 0
    #: ``(rows left out, answers truncated, rows)`` of the split when fitted to max_length.
    fit: tuple[int, int, int] = (0, 0, 0)
    #: Decodes generated answers (set after loading; not part of the cache).
    tokenizer: Any = None
    #: ``task.max_new_tokens`` and ``task.generate_examples``.
    max_new_tokens: int = 32
    generate_examples: int = 100
    #: ``task.scorer``, loaded: ``scorer(predictions, references) -> float``.
    scorer: Callable[[list[str], list[str]], float] | None = None

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training/evaluation batch: loss on completion tokens only."""
        lengths = self.lengths[idx]
        width = int(lengths.max())
        ids = self.input_ids[idx, :width]
        cols = torch.arange(width)[None, :]
        mask = cols < lengths[:, None]
        answer = mask & (cols >= self.labels[idx][:, None])
        return {
            "input_ids": ids,
            "attention_mask": mask.long(),
            "labels": ids.masked_fill(~answer, -100),
        }

    def prompts(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The prompts of ``idx``, left-padded, to generate the answers from."""
        lengths = self.labels[idx]
        width = int(lengths.max())
        cols = torch.arange(width)[None, :]
        shift = (cols - (width - lengths[:, None])) % width
        ids = self.input_ids[idx, :width].gather(1, shift)
        mask = cols >= (width - lengths[:, None])
        return {"input_ids": ids.masked_fill(~mask, self.pad_id), "attention_mask": mask.long()}


@dataclass
class Rendered:
    """Token ids of every row, and what fitting them into ``max_length`` did."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    dropped: int = 0
    truncated: int = 0


def render(task: SFTTask, tokenizer: Any, cfg: TaskConfig, rows: list[int]) -> Rendered:
    """Token ids of ``rows``: the prompt (chat-rendered when asked) and the answer + its end.

    Raises:
        ConfigError: chat rows, or ``chat_template: true``, with a tokenizer that has none.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    chat = task.chat_rows or (cfg.chat_template if cfg.chat_template is not None else has_template)
    if chat and not has_template:
        where = "task.messages" if task.chat_rows else "task.chat_template"
        raise ConfigError(
            Problem(
                where,
                "the model's tokenizer has no chat template to render chat turns with",
                hint="use prompt/completion rows with chat_template: false, or a chat model",
            )
        )
    prompts, answers, plain = [], [], []
    for i in rows:
        prompt, answer = task.prompts[i], task.completions[i]
        if chat:
            turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            head = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(
                [*turns, {"role": "assistant", "content": answer}], tokenize=False
            )
            # The template's own end of turn ends the answer; a template that renders the
            # answer elsewhere than after the prompt gets the plain answer + eos instead.
            tail = full[len(head) :] if full.startswith(head) else None
            prompts.append(head)
            answers.append(answer if tail is None else tail)
            plain.append(tail is None)
        else:
            prompts.append(str(prompt))
            answers.append(answer)
            plain.append(True)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    p_ids = tokenizer(prompts, add_special_tokens=not chat)["input_ids"]
    a_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    out = Rendered([], [])
    for p, a, bare in zip(p_ids, a_ids, plain):
        if bare or not _ends(a, eos):
            a = a + eos  # the model must learn to stop after the answer
        if len(p) >= cfg.max_length:
            out.dropped += 1
            p, a = p[: cfg.max_length - 1], []  # kept for the row count; trains on nothing
        elif len(p) + len(a) > cfg.max_length:
            out.truncated += 1
            a = a[: cfg.max_length - len(p)]
        out.prompt_ids.append(p)
        out.completion_ids.append(a)
    return out


def _ends(ids: list[int], eos: list[int]) -> bool:
    # A chat answer ends with the template's end-of-turn, possibly followed by a newline.
    return bool(eos) and eos[0] in ids[-3:]


def encode_sft(
    task: SFTTask, tokenizer: Any, cfg: TaskConfig, cache_dir: Path | None
) -> dict[str, SFTEncoded]:
    """Tokenise every split once (cached on disk by task, tokenizer, template and length).

    Rows whose prompt alone fills ``max_length`` are dropped from training (their answer
    would be cut away entirely); answers that overflow are truncated at the end.

    Raises:
        ConfigError: at ``task.max_length`` when no training row keeps an answer token.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    key = "|".join(
        [
            task.fingerprint,
            f"{getattr(tokenizer, 'name_or_path', '')}-{len(tokenizer)}",
            hashlib.sha1(str(getattr(tokenizer, "chat_template", "")).encode()).hexdigest()[:8],
            str(cfg.chat_template),
            str(cfg.max_length),
            "sft",
        ]
    )

    def build() -> dict[str, dict[str, Any]]:
        splits = {}
        for split, rows in task.split.items():
            done = render(task, tokenizer, cfg, rows)
            keep = [i for i, a in enumerate(done.completion_ids) if a]
            ids = [done.prompt_ids[i] + done.completion_ids[i] for i in keep]
            width = max((len(x) for x in ids), default=1)
            tensor = torch.full((len(ids), width), pad, dtype=torch.long)
            for row, seq in enumerate(ids):
                tensor[row, : len(seq)] = torch.tensor(seq)
            splits[split] = {
                "input_ids": tensor,
                "lengths": torch.tensor([len(x) for x in ids], dtype=torch.long),
                "labels": torch.tensor([len(done.prompt_ids[i]) for i in keep], dtype=torch.long),
                "references": [task.completions[rows[i]] for i in keep],
                "dropped": done.dropped,
                "truncated": done.truncated,
            }
        return splits

    saved = cached_tensors(cache_dir, key, build)
    out: dict[str, SFTEncoded] = {}
    for split, part in saved.items():
        out[split] = SFTEncoded(
            part["input_ids"],
            part["lengths"],
            part["labels"],
            references=part["references"],
            pad_id=pad,
            fit=(int(part["dropped"]), int(part["truncated"]), len(task.split[split])),
            tokenizer=tokenizer,
            max_new_tokens=cfg.max_new_tokens,
            generate_examples=cfg.generate_examples,
            scorer=load_scorer(cfg.scorer) if cfg.scorer else None,
        )
    if len(out["train"]) == 0:
        raise ConfigError(
            Problem(
                "task.max_length",
                f"every training prompt fills max_length ({cfg.max_length} tokens), so no "
                "answer token is left to learn",
                hint="raise task.max_length",
            )
        )
    return out


def fit_notes(data: dict[str, SFTEncoded]) -> list[str]:
    """One line per split whose rows did not fit ``max_length``: how many, and what was done."""
    lines = []
    for split, enc in data.items():
        dropped, truncated, total = enc.fit
        if dropped or truncated:
            lines.append(
                f"task ({split}): of {total} rows, {dropped} have a prompt of task.max_length "
                f"tokens or more and were left out, {truncated} answers were cut at the end "
                "to fit; raise task.max_length to keep them"
            )
    return lines


def load_scorer(ref: str) -> Callable[[list[str], list[str]], float]:
    """The function ``package.module:function`` named by ``task.scorer``.

    Raises:
        ConfigError: at ``task.scorer`` when it cannot be imported or is not callable.
    """
    module, _, name = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            Problem(
                "task.scorer",
                f"cannot import the scoring function: {type(err).__name__}: {err}",
                ref,
                hint="name a function importable on every worker, e.g. mypkg.metrics:score",
            )
        ) from None
    if not callable(fn):
        raise ConfigError(Problem("task.scorer", "the scorer is not a function", ref))
    return fn


def normalise(text: str) -> str:
    """Lower case, collapsed spaces, without surrounding quotes and final punctuation."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip("\"'`").rstrip(".!").strip()


@torch.no_grad()
def evaluate_sft(
    adapted: Any,
    data: SFTEncoded,
    batch_size: int,
    limit: int,
    device: torch.device,
    wanted: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """``eval_loss`` (per answer token) and ``perplexity``; ``exact_match`` when wanted.

    Exact match greedily generates up to ``max_new_tokens`` for the first
    ``generate_examples`` rows (at most ``limit``) and compares the normalised answer with
    the reference. The loss total is kept on the device and read once.
    """
    from autopeft.train.levers import autocast

    model = adapted.model
    model.eval()
    n = min(limit, len(data))
    total, tokens = [], 0
    for start in range(0, n, batch_size):
        batch = data.batch(torch.arange(start, min(n, start + batch_size)))
        # Tokens that carry loss (shifted by one: the first position predicts nothing).
        count = int((batch["labels"][:, 1:] != -100).sum())
        tokens += count
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, adapted.precision):
            out = model(**batch)
        total.append(out.loss.detach().double() * count)
    loss = float(torch.stack(total).sum()) / max(1, tokens)
    metrics = {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}
    generated = {"exact_match", "score"} & wanted
    if generated:
        rows = min(n, data.generate_examples)
        answers = [
            answer
            for start in range(0, rows, batch_size)
            for answer in generate_answers(
                adapted,
                data,
                torch.arange(start, min(rows, start + batch_size)),
                device,
                data.max_new_tokens,
            )
        ]
        refs = data.references[:rows]
        if "exact_match" in generated:
            hits = sum(normalise(a) == normalise(r) for a, r in zip(answers, refs))
            metrics["exact_match"] = hits / max(1, rows)
        if "score" in generated and data.scorer is not None:
            metrics["score"] = float(data.scorer(answers, refs))
    model.train()
    return metrics


@torch.no_grad()
def generate_answers(
    adapted: Any, data: SFTEncoded, idx: torch.Tensor, device: torch.device, max_new_tokens: int
) -> list[str]:
    """Greedy answers to the prompts of rows ``idx`` (decoded, special tokens dropped)."""
    from transformers import GenerationConfig

    from autopeft.train.levers import autocast

    tok = data.tokenizer
    inputs = {k: v.to(device) for k, v in data.prompts(idx).items()}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=data.pad_id,
        eos_token_id=tok.eos_token_id,
    )
    with autocast(device, adapted.precision):
        out = adapted.model.generate(**inputs, generation_config=config)
    new = out[:, inputs["input_ids"].shape[1] :].cpu()
    return tok.batch_decode(new, skip_special_tokens=True)

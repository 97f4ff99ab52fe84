"""Models the benchmarks build from config when no such weights exist offline.

``bert-base``: a BERT-base-sized classifier (12 layers, hidden 768; random weights) with the
bundled MiniLM tokenizer, saved once under ``studies/.bench-cache/``. Memory and speed do not
depend on the weights' values. Any other name (``minilm``, ``tiny-llama``, a path) is passed on.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "studies" / ".bench-cache"


def model_path(name: str) -> str:
    """A bundled short name or path as is; ``bert-base``: build and save it once."""
    if name != "bert-base":
        return name
    folder = CACHE / "bert-base-random"
    if not (folder / "config.json").exists():
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

        from autopeft.core.profile import resolve_model_dir

        tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir("minilm")))
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2)  # BERT-base sizes
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)

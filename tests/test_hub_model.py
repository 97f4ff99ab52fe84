"""A Hugging Face hub id as the model: resolved through the hub cache (offline here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autopeft.core.model_profile import resolve_model_dir

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
from autopeft import api, methods
from autopeft.core.summary import summarize
from autopeft.train.models import load_model, load_tokenizer
space = api.resolve(api.space_from_dict({"modules": {"lora": {"rank": [4, 8]}}}), "owner/mini-lm")
print(summarize(space, methods.registry(), "owner/mini-lm", samples=20))
model = load_model("owner/mini-lm", num_labels=2)
tokens = load_tokenizer("owner/mini-lm")(["a fine film"])["input_ids"][0]
print("LOADED", type(model).__name__, len(tokens))
"""


def hub_cache(root: Path, repo: str, files: Path) -> Path:
    """The hub cache layout huggingface_hub reads: refs/main -> snapshots/<revision>/..."""
    revision = "0" * 40
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    for f in files.iterdir():
        if f.is_file():
            (snapshot / f.name).symlink_to(f)
    return root


def run_probe(cache: Path, offline: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    if not offline:  # as a user who did not set it (the network is unreachable here)
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_a_cached_hub_id_validates_and_loads_offline(tmp_path):
    cache = hub_cache(tmp_path / "hub", "owner/mini-lm", resolve_model_dir("minilm"))
    out = run_probe(cache)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model: owner/mini-lm (bert: 6 layers, hidden 384" in out.stdout
    assert "LOADED BertForSequenceClassification" in out.stdout


def test_an_unknown_hub_id_says_it_was_not_found_in_the_cache(tmp_path):
    out = run_probe(tmp_path / "empty-hub")
    assert out.returncode != 0
    assert "a model must be a bundled short name, a folder with config.json or a Hugging " in (
        out.stderr
    )
    assert "as a hub id it was not found" in out.stderr


def test_a_cached_hub_model_asks_the_network_nothing_even_when_not_told_offline(tmp_path):
    cache = hub_cache(tmp_path / "hub", "owner/mini-lm", resolve_model_dir("minilm"))
    out = run_probe(cache, offline=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED BertForSequenceClassification" in out.stdout
    assert "huggingface.co" not in out.stderr and "Retrying" not in out.stderr

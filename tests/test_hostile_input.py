"""Hostile or careless study files: one paragraph each, quickly, never a traceback or a hang."""

from __future__ import annotations

import time

import pytest

from autopeft import api
from autopeft.core.errors import ConfigError
from autopeft.core.model_profile import load_profile

VALID = "name: x\nmodel: minilm\nsearch_space: {modules: {lora: {rank: [4]}}}\n"


def bomb() -> str:
    """567 bytes that expand to 10**10 values through nested aliases."""
    text = VALID + "notes:\n  x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for i in range(1, 10):
        text += f"  x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "name: a\nname: b\nmodel: minilm\n",
            "the key 'name' appears twice in one mapping (lines 1 and 2)",
        ),
        (bomb(), "more than 100,000 values once its aliases"),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", "nesting deeper than 64 levels"),
        (VALID.replace("[4]", f"[{10**400}]"), "is beyond 64 bits"),
        (VALID + "sampler: {name: tpe, seed: 4294967296}\n", "sampler.seed"),
        (VALID + "training: {seed: -1}\n", "training.seed"),
        (VALID.replace("minilm", "m" * 5000), "a model must be a bundled short name"),
    ],
)
def test_hostile_files_get_one_paragraph_fast(text, words, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        config = api.load(path)
        load_profile(config.model)  # what validate and run read next
    assert time.perf_counter() - start < 2.0
    text = str(err.value)
    assert words in text, text
    assert "Traceback" not in text and len(text) < 2000


def test_yaml_1_2_numbers_are_numbers(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(VALID + "training: {lr: 1.0e-3, weight_decay: 1e-2}\n")
    config = api.load(path)
    assert config.training.lr == 1.0e-3 and config.training.weight_decay == 1e-2


def test_a_misspelt_top_level_key_is_named_with_the_right_one(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(VALID.replace("search_space", "search_spac") + "objectivs: accuracy\n")
    with pytest.raises(ConfigError) as err:
        api.load(path)
    text = str(err.value)
    assert "2 problems" in text  # the two typos, not every field read as a search space's
    assert "search_spac: unknown top-level field" in text and "did you mean 'search_space'" in text
    assert "did you mean 'objectives'" in text


def test_a_misspelt_model_name_is_answered_at_once_without_the_hub(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(VALID.replace("minilm", "minilmm"))
    config = api.load(path)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_profile(config.model)
    assert time.perf_counter() - start < 2.0  # no hub request (offline it retries ~20 s)
    assert "did you mean 'minilm'" in str(err.value) and "'minilmm'" in str(err.value)


@pytest.mark.parametrize(
    ("modules", "words"),
    [
        ("{3: {}}", "unknown module type 3"),  # was AttributeError (fuzz, bench/fuzz.py)
        ("{lora: {targets: [q, [v]]}}", "a target is a name"),  # was TypeError (fuzz)
        ("{lora: {targets: {choice: [q]}}}", "valid list"),
    ],
)
def test_fuzz_findings_are_paragraphs(modules, words, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(f"modules: {modules}\n")
    with pytest.raises(ConfigError) as err:
        api.load(path)
    assert words in str(err.value) and "Traceback" not in str(err.value)


def test_a_value_every_union_branch_refuses_is_one_paragraph(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("modules: {lora: {rank: [[1], 2]}}\n")
    with pytest.raises(ConfigError) as err:
        api.load(path)
    text = str(err.value)
    assert "1 problem" in text and text.count("rank.values.0") == 1, text
    assert "a valid integer or" in text and ".str" not in text

"""The search-space DSL: presets, sampling, exact size and parameter range, placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopeft import api, methods
from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError
from autopeft.core.resolve import RandomSuggest, candidate_params, parameter_domains
from tests.helpers import enumerate_all

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_validate_on_minilm(preset):
    text = api.validate(preset, "minilm")
    assert "valid search space" in text
    assert "trainable parameters: 0 .." in text


def test_autopeft_preset_matches_the_paper():
    space = api.load(ROOT / "search_spaces/autopeft.yaml")
    assert set(space.modules) == {"serial_adapter", "parallel_adapter", "prefix"}
    assert space.layers == "search"
    resolved = api.resolve(space, "minilm")  # hidden 384: sizes halve
    for plan in resolved.plans:
        size = plan.params[plan.size_param]
        assert size.values() == [0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768]
    rng = RandomSuggest(seed=1)
    seen = set()
    for _ in range(300):
        cand = resolved.sample(rng)
        layer_sets = {m.layers for m in cand.modules}
        assert len(layer_sets) <= 1, "AutoPEFT shares one layer mask across modules"
        for m in cand.modules:
            seen.add(m.params[methods.get(m.method).size_param])
    assert seen <= {1, 2, 3, 6, 12, 24, 48, 96, 192, 384}
    assert {1, 384} <= seen
    # 63 non-empty masks x (11^3 - 1) size triples with a module on, plus the head-only
    # candidate (an empty mask, or every size 0)
    assert resolved.size() == (2**6 - 1) * (11**3 - 1) + 1


SMALL = {
    "modules": {
        "lora": {
            "rank": [0, 4, 8],
            "alpha": [8.0, 16.0],
            "targets": {"choice": [["q", "v"], ["attn"]]},
        },
        "ia3": {},
        "serial_adapter": {"size": [0, 8], "per_layer": True, "layers": {"top": 2}},
        "bitfit": {"optional": True, "layers": "search"},
    },
    "layers": [0, 2, 3],
}


# Placed by a searched shared mask: a peft and a native module on it, a peft module with its
# own fixed layers, an optional one on the mask, and one not placed per layer.
SHARED_MASK = {
    "modules": {
        "lora": {"rank": [0, 4], "targets": {"choice": [["q"], ["v"]]}},
        "ia3": {"layers": {"top": 1}},
        "serial_adapter": {"size": [0, 8]},
        "bitfit": {"optional": True},
        "prompt": {"length": [0, 4]},
    },
    "layers": "search",
}
PER_LAYER_OWN_MASK = {
    "modules": {"parallel_adapter": {"size": [0, 4, 8], "per_layer": True, "layers": "search"}},
    "layers": [0, 1],
}


@pytest.mark.parametrize(
    "space", [SMALL, SHARED_MASK, PER_LAYER_OWN_MASK], ids=["fixed", "shared", "per-layer"]
)
def test_size_counts_the_distinct_candidates_of_brute_force_enumeration(space):
    resolved = api.resolve(api.space_from_dict(space), "minilm")
    candidates = enumerate_all(resolved)
    distinct = {c.key() for c in candidates}
    assert len(distinct) < len(candidates)  # switched-off parts' parameters change nothing
    assert len(distinct) == resolved.size()


@pytest.mark.parametrize("space", [SMALL, SHARED_MASK, "autopeft"])
def test_every_trial_suggests_the_same_parameters(space):
    # Optuna's GP and BoTorch samplers model only the parameters every trial has: none may
    # go missing when a mask comes out empty, a size is 0 or another peft method is chosen.
    loaded = api.load(ROOT / "search_spaces/autopeft.yaml") if space == "autopeft" else None
    resolved = api.resolve(loaded or api.space_from_dict(space), "minilm")
    expected = set(parameter_domains(resolved))
    rng = RandomSuggest(seed=7)
    for _ in range(300):
        rng.params = {}
        resolved.sample(rng)
        assert set(rng.params) == expected


def test_param_range_equals_brute_force_extremes():
    resolved = api.resolve(api.space_from_dict(SMALL), "minilm")
    reg = methods.registry()
    counts = [candidate_params(c, resolved.profile, reg) for c in enumerate_all(resolved)]
    assert resolved.param_range() == (min(counts), max(counts))


def test_sampling_respects_placement_and_exclusive_peft_method():
    resolved = api.resolve(api.space_from_dict(SMALL), "minilm")
    rng = RandomSuggest(seed=3)
    methods_seen = set()
    for _ in range(200):
        cand = resolved.sample(rng)
        peft = [m for m in cand.modules if methods.get(m.method).backend == "peft"]
        assert len(peft) <= 1
        for m in cand.modules:
            methods_seen.add(m.method)
            if m.method == "lora":
                assert set(m.layers) <= {0, 2, 3}
                assert m.targets in (("q", "v"), ("q", "k", "v", "o"))
                assert m.params["rank"] in (4, 8)
            if m.method == "serial_adapter":
                assert set(m.layers) <= {4, 5} and m.sizes and set(m.sizes.values()) == {8}
        assert "peft_method" in rng.params
    assert methods_seen == {"lora", "ia3", "serial_adapter", "bitfit"}


def test_candidate_key_is_stable_and_order_free():
    resolved = api.resolve(api.space_from_dict(SMALL), "minilm")
    a = resolved.sample(RandomSuggest(seed=5))
    b = resolved.sample(RandomSuggest(seed=5))
    assert a.key() == b.key()
    assert Candidate.model_validate(a.to_json()).key() == a.key()


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ("all", [0, 1, 2, 3, 4, 5]),
        ({"top": 2}, [4, 5]),
        ({"bottom": 2}, [0, 1]),
        ({"every": 2}, [0, 2, 4]),
        ({"every": 2, "offset": 1}, [1, 3, 5]),
        ({"mask": [1, 0, 0, 0, 0, 1]}, [0, 5]),
        ([3, 1], [1, 3]),
    ],
)
def test_layer_patterns(layers, expected):
    space = api.space_from_dict({"modules": {"lora": {"rank": 4, "layers": layers}}})
    cand = api.resolve(space, "minilm").sample(RandomSuggest())
    assert list(cand.modules[0].layers) == expected


def test_target_groups_expand_per_architecture(tiny_llama_profile):
    space = api.space_from_dict({"modules": {"lora": {"rank": 4, "targets": ["ffn"]}}})
    bert = api.resolve(space, "minilm").sample(RandomSuggest())
    llama = api.resolve(space, tiny_llama_profile).sample(RandomSuggest())
    assert bert.modules[0].targets == ("ffn_up", "ffn_down")
    assert llama.modules[0].targets == ("ffn_up", "ffn_gate", "ffn_down")


def test_architecture_names_are_accepted_as_targets(tiny_llama_profile):
    space = api.space_from_dict(
        {"modules": {"lora": {"rank": 4, "targets": ["q_proj", "down_proj"]}}}
    )
    llama = api.resolve(space, tiny_llama_profile).sample(RandomSuggest())
    assert llama.modules[0].targets == ("q", "ffn_down")
    bert_space = api.space_from_dict(
        {"modules": {"lora": {"rank": 4, "targets": ["query", "value"]}}}
    )
    assert api.resolve(bert_space, "minilm").sample(RandomSuggest()).modules[0].targets == (
        "q",
        "v",
    )
    with pytest.raises(ConfigError, match="'q_proj' does not exist on this bert model"):
        api.resolve(space, "minilm")


def test_budget_fraction_and_absolute():
    base = 1_000_000
    pct = api.space_from_dict({"modules": {"lora": {}}, "budget": {"max_trainable_params": "1%"}})
    absolute = api.space_from_dict(
        {"modules": {"lora": {}}, "budget": {"max_trainable_params": 5e4}}
    )
    assert pct.budget.param_limit(base) == 10_000
    assert absolute.budget.param_limit(base) == 50_000


def test_study_config_round_trips_through_json():
    study = api.load(ROOT / "studies/quickstart/study.yaml")
    again = type(study).model_validate_json(study.model_dump_json())
    assert again == study
    pct = api.space_from_dict(
        {"modules": {"lora": {"rank": 4}}, "budget": {"max_trainable_params": "2%"}}
    )
    back = type(pct).model_validate_json(pct.model_dump_json())
    assert back.budget.param_limit(1000) == pct.budget.param_limit(1000) == 20


def test_study_file_with_space_path(tmp_path):
    (tmp_path / "space.yaml").write_text((ROOT / "search_spaces/lora.yaml").read_text())
    (tmp_path / "study.yaml").write_text(
        "name: demo\nsearch_space: space.yaml\nobjectives: accuracy, -trainable_params\n"
    )
    study = api.load(tmp_path / "study.yaml")
    assert study.name == "demo" and "lora" in study.search_space.modules
    assert [(o.metric, o.direction) for o in study.objectives] == [
        ("accuracy", "maximize"),
        ("trainable_params", "minimize"),
    ]

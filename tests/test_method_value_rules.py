"""Method parameter values a method cannot train with are refused when the space is read."""

from __future__ import annotations

import pytest

from autopeft import api, methods
from autopeft.core.errors import ConfigError
from autopeft.core.summary import summarize


def refused(modules: dict) -> str:
    with pytest.raises(ConfigError) as err:
        api.resolve(api.space_from_dict({"modules": modules}), "minilm")
    return str(err.value)


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        ({"lora": {"rank": 2, "dropout": 1.5}}, "lora.dropout: 0 <= dropout < 1 must hold"),
        ({"lora": {"rank": [-4, 4]}}, "lora.rank: 0 <= rank must hold"),
        ({"lora": {"alpha": -3}}, "lora.alpha: 0 < alpha must hold"),
        (
            {"serial_adapter": {"activation": "relux"}},
            "serial_adapter.activation: activation must be one of relu, gelu, silu",
        ),
        ({"miss": {"mode": "bta"}}, "miss.mode: mode must be one of miss, bat"),
        ({"adalora": {"tinit_frac": 1.2}}, "adalora.tinit_frac: 0 <= tinit_frac < 1 must hold"),
        (
            {"lokr": {"decompose_factor": -2}},
            "lokr.decompose_factor: -1 <= decompose_factor must hold",
        ),
        (
            {"parallel_adapter": {"scale": {"type": "float", "low": 0.0, "high": 4.0}}},
            "parallel_adapter.scale: 0 < scale must hold",
        ),
    ],
)
def test_a_value_a_method_cannot_use_is_refused_with_its_rule(modules, expected):
    text = refused(modules)
    assert f"- search_space.modules.{expected} for every value" in text
    assert "Hint: the default is" in text


def test_every_method_default_space_keeps_its_own_rules():
    names = sorted(methods.registry())
    for name in names:  # resolving checks every value of the default space
        api.resolve(api.space_from_dict({"modules": {name: {}}}), "minilm")
    assert len(names) >= 17


def test_validate_refuses_a_space_no_candidate_of_which_can_be_built():
    resolved = api.resolve(api.space_from_dict({"modules": {"hra": {"rank": 3}}}), "minilm")
    with pytest.raises(ConfigError) as err:
        summarize(resolved, methods.registry(), "minilm", samples=50)
    text = str(err.value)
    assert "- search_space.modules: no candidate can be built" in text
    assert "hra needs an even rank" in text


def test_validate_reports_the_share_of_candidates_a_method_rule_stops():
    space = {"modules": {"adalora": {"rank": [4, 8], "target_r": [2, 4]}}}
    resolved = api.resolve(api.space_from_dict(space), "minilm")
    text = summarize(resolved, methods.registry(), "minilm", samples=400)
    line = next(x for x in text.splitlines() if x.startswith("buildable: "))
    share = float(line.split()[1].rstrip("%"))
    assert 65 < share < 85  # 3 of the 4 (rank, target_r) pairs build: (4, 4) does not
    assert "adalora needs 0 < target_r < rank" in line


def test_validate_shows_a_layer_pattern_as_written_and_counts_as_an_int():
    space = api.space_from_dict({"modules": {"lora": {"rank": [4, 8, 16]}}, "layers": {"top": 3}})
    resolved = api.resolve(space, "minilm")
    assert resolved.size() == 3 and isinstance(resolved.size(), int)
    text = summarize(resolved, methods.registry(), "minilm", samples=20)
    assert "layers: {top: 3} -> layers [3, 4, 5]" in text
    assert "distinct configurations: 3" in text

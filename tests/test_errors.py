"""Bad input gives one paragraph per problem: path, rule, value and a hint; never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autopeft import api
from autopeft.core.errors import ConfigError

CASES = [
    # (what, space, path, words in the rule, echoed value)
    (
        "unknown module",
        {"modules": {"lorra": {}}},
        "search_space.modules.lorra",
        "unknown module type",
        "'lorra'",
    ),
    (
        "low > high",
        {"modules": {"lora": {"rank": {"type": "int", "low": 64, "high": 2}}}},
        "search_space.modules.lora.rank",
        "low <= high must hold, but got low=64, high=2",
        None,
    ),
    (
        "empty layer list",
        {"modules": {"lora": {"layers": []}}},
        "search_space.modules.lora.layers",
        "empty layer list",
        "[]",
    ),
    (
        "empty mask",
        {"modules": {"lora": {"layers": {"mask": [0, 0, 0]}}}},
        "search_space.modules.lora.layers",
        "empty layer mask",
        "{'mask': [0, 0, 0]}",
    ),
    (
        "negative budget",
        {"modules": {"lora": {}}, "budget": {"max_trainable_params": -5}},
        "search_space.budget.max_trainable_params",
        "budget >= 0 must hold",
        None,
    ),
    (
        "negative memory",
        {"modules": {"lora": {}}, "budget": {"max_memory_mb": -1}},
        "search_space.budget.max_memory_mb",
        "budget > 0 must hold",
        None,
    ),
    (
        "unknown target",
        {"modules": {"lora": {"targets": ["q", "quey"]}}},
        "search_space.modules.lora.targets",
        "unknown target, but got 'quey'",
        "'quey'",
    ),
    (
        "wrong type in a bound",
        {"modules": {"lora": {"rank": {"type": "int", "low": "a", "high": 2}}}},
        "search_space.modules.lora.rank.low",
        "valid integer",
        "'a'",
    ),
    (
        "wrong value type",
        {"modules": {"lora": {"rank": "big"}}},
        "search_space.modules.lora.rank",
        "takes int values",
        "'big'",
    ),
    (
        "wrong type in a choice",
        {"modules": {"lora": {"dropout": [0.0, "x"]}}},
        "search_space.modules.lora.dropout",
        "takes float values",
        "'x'",
    ),
    (
        "unknown parameter",
        {"modules": {"lora": {"rnak": 4}}},
        "search_space.modules.lora.rnak",
        "has no parameter 'rnak'",
        None,
    ),
    (
        "unknown domain type",
        {"modules": {"lora": {"rank": {"type": "integer", "low": 1, "high": 8}}}},
        "search_space.modules.lora.rank",
        "`type: int`",
        None,
    ),
    (
        "log with zero",
        {"modules": {"lora": {"rank": {"type": "int", "low": 0, "high": 8, "log": True}}}},
        "search_space.modules.lora.rank",
        "log scale needs low > 0",
        None,
    ),
    (
        "unknown budget field",
        {"modules": {"lora": {}}, "budget": {"max_memory": 5}},
        "search_space.budget.max_memory",
        "unknown field",
        None,
    ),
    ("no modules", {"modules": {}}, "search_space.modules", "at least one module type", None),
    (
        "non-bool flag",
        {"modules": {"lora": {"per_layer": "yes"}}},
        "search_space.modules.lora.per_layer",
        "valid boolean",
        "'yes'",
    ),
    (
        "per-layer unsupported",
        {"modules": {"ia3": {"per_layer": True}}},
        "search_space.modules.ia3.per_layer",
        "does not support per-layer",
        None,
    ),
    (
        "bad layer name",
        {"modules": {"lora": {"layers": "most"}}},
        "search_space.modules.lora.layers",
        "unknown layer selection 'most'",
        None,
    ),
]


@pytest.mark.parametrize(("what", "raw", "path", "rule", "value"), CASES, ids=[c[0] for c in CASES])
def test_bad_space_names_path_rule_value_and_hint(what, raw, path, rule, value):
    with pytest.raises(ConfigError) as info:
        api.space_from_dict(raw)
    problems = info.value.problems
    assert len(problems) == 1, info.value
    text = problems[0].render()
    assert text.startswith(f"- {path}: "), text
    assert rule in text
    if value is not None:  # shown once: in the rule, or after "but got", never both
        assert text.split(" Hint: ")[0].count(value) == 1, text
    assert "\n" not in text  # one paragraph
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize(
    ("space", "path", "rule"),
    [
        (
            {"modules": {"lora": {"targets": ["ffn_gate"]}}},
            "search_space.modules.lora.targets",
            "'ffn_gate' does not exist on this bert model",
        ),
        (
            {"modules": {"lora": {"layers": [0, 9]}}},
            "search_space.modules.lora.layers",
            "layer indices must be < 6",
        ),
        (
            {"modules": {"lora": {}}, "layers": {"mask": [1, 0]}},
            "search_space.layers",
            "one entry per layer (6)",
        ),
    ],
)
def test_model_dependent_errors_name_the_model(space, path, rule):
    with pytest.raises(ConfigError) as info:
        api.resolve(api.space_from_dict(space), "minilm")
    text = info.value.problems[0].render()
    assert text.startswith(f"- {path}: ") and rule in text and "bert model (6 layers)" in text


def test_study_errors(tmp_path):
    bad = {
        "name": "bad name!",
        "search_space": {"modules": {"lora": {}}},
        "objectives": "accuracy, -trainable_param",
        "sampler": "bayes",
    }
    with pytest.raises(ConfigError) as info:
        api.study_from_dict(bad)
    paths = {p.path for p in info.value.problems}
    assert paths == {"name", "objectives", "sampler.name"}, info.value
    assert "did you mean 'trainable_params'" in str(info.value)


@pytest.mark.parametrize("sampler", ["qnehvi", "autopeft"])
def test_a_model_based_sampler_needs_a_measured_objective(sampler):
    study = {
        "name": "known",
        "search_space": {"modules": {"lora": {}}},
        "objectives": "-trainable_params, -peak_memory",
        "sampler": sampler,
    }
    with pytest.raises(ConfigError) as info:
        api.study_from_dict(study)
    (problem,) = info.value.problems
    text = problem.render()
    assert text.startswith(f"- sampler.name: sampler {sampler!r} needs a measured objective"), text
    assert "trainable_params, peak_memory" in text and "Hint: add a task metric" in text
    assert "{" not in text  # the rule names the objectives; the study itself is not echoed
    # One measured objective (here wall time) is enough, and TPE needs none.
    api.study_from_dict({**study, "objectives": "-trainable_params, -wall_time"})
    api.study_from_dict({**study, "sampler": "tpe"})


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_output_into_a_closed_pipe_ends_quietly():
    """``autopeft methods | head -1``: the reader leaves early; no traceback, exit 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "autopeft.cli", "methods"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the CLI has imported anything: every write meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_cli_validate_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modules:\n  lora:\n    rank: {type: int, low: 64, high: 2}\n")
    out = _cli("validate", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert (
        "search_space.modules.lora.rank: low <= high must hold, but got low=64, high=2"
        in out.stderr
    )
    assert "Hint: swap the bounds" in out.stderr


def test_cli_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("modules:\n  lora:\n    rank: [1, 2\n")
    out = _cli("validate", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "invalid YAML at line" in out.stderr


def test_cli_missing_file():
    out = _cli("validate", "no/such/file.yaml")
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr


def test_cli_unknown_model():
    out = _cli("validate", "search_spaces/lora.yaml", "--model", "bert-huge")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model: a model must be a bundled short name" in out.stderr


def test_errors_survive_a_pickle_round_trip():
    """Process pools and Ray workers pickle a raised error: its text and fields must stay."""
    import pickle

    from autopeft.core.errors import _NO_VALUE, RuleError

    with pytest.raises(ConfigError) as info:
        api.study_from_dict({"name": "a,b", "model": "minilm", "task": "rotten_tomatoes"})
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == str(info.value)
    assert [p.path for p in back.problems] == [p.path for p in info.value.problems]
    rule = pickle.loads(pickle.dumps(RuleError("low <= high must hold", "swap them", path="x")))
    assert (rule.rule, rule.hint, rule.path) == ("low <= high must hold", "swap them", "x")
    assert pickle.loads(pickle.dumps(RuleError("r"))).value is _NO_VALUE

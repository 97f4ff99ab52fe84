"""An error paragraph shows the offending value once: not in the rule and again after "but got",
and never the whole enclosing section instead of the value."""

from __future__ import annotations

import pytest
import yaml

from autopeft import cli
from autopeft.core.errors import Problem

BASE = {"name": "ev", "model": "minilm", "search_space": {"modules": {"lora": {"rank": [4]}}}}


def _with(**changes):
    return {**BASE, **changes}


# (id, study file, field path, the offending value as the paragraph shows it)
CASES = [
    (
        "unknown module",
        _with(search_space={"modules": {"lorra": {}}}),
        "search_space.modules.lorra",
        "'lorra'",
    ),
    (
        "unknown parameter",
        _with(search_space={"modules": {"lora": {"rnak": 4}}}),
        "search_space.modules.lora.rnak",
        "'rnak'",
    ),
    (
        "unknown layer selection",
        _with(search_space={"modules": {"lora": {"layers": "most"}}}),
        "search_space.modules.lora.layers",
        "'most'",
    ),
    ("unknown sampler", _with(sampler="bayes"), "sampler.name", "'bayes'"),
    ("unknown task kind", _with(task={"kind": "clasification"}), "task.kind", "'clasification'"),
    (
        "another kind's task field",
        _with(model="smollm2", task={"kind": "causal_lm", "text": "body"}),
        "task.text",
        "'body'",
    ),
    (
        "per-layer sizes unsupported",
        _with(search_space={"modules": {"ia3": {"per_layer": True}}}),
        "search_space.modules.ia3.per_layer",
        "True",
    ),
    # The bound (1) is no echo of the value: the value is still shown after it.
    ("a bound that is the value", _with(halving={"eta": 1}), "halving.eta", "but got 1"),
    ("a study name", _with(name="bad name!"), "name", "'bad name!'"),
    (
        "a budget",
        _with(
            search_space={
                "modules": {"lora": {"rank": [4]}},
                "budget": {"max_trainable_params": "5x"},
            }
        ),
        "search_space.budget.max_trainable_params",
        "'5x'",
    ),
]


@pytest.mark.parametrize(("what", "study", "path", "value"), CASES, ids=[c[0] for c in CASES])
def test_validate_shows_the_offending_value_once(tmp_path, capsys, what, study, path, value):
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump(study))
    assert cli.main(["validate", str(file)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (paragraph,) = [line for line in err.splitlines() if line.startswith(f"- {path}: ")]
    rule = paragraph.split(" Hint: ")[0]
    assert rule.count(value) == 1, paragraph
    assert "{" not in rule, paragraph  # no enclosing section echoed in place of the value


@pytest.mark.parametrize(
    ("rule", "value", "text"),
    [
        # The rule names the value: not again.
        ("unknown sampler 'bayes'", "bayes", "- x: unknown sampler 'bayes'."),
        ("no such file: /data/t.csv", "/data/t.csv", "- x: no such file: /data/t.csv."),
        ("a layer list [0, 0] repeats", [0, 0], "- x: a layer list [0, 0] repeats."),
        # A bound, or the value as an ordinary word, is no echo: the value is still shown.
        ("Input should be greater than 1", 1, "- x: Input should be greater than 1, but got 1."),
        ("text is not a field of a task", "a", "- x: text is not a field of a task, but got 'a'."),
        ("a rule about /data", "/data/t.csv", "- x: a rule about /data, but got '/data/t.csv'."),
    ],
)
def test_a_problem_renders_its_value_once(rule, value, text):
    assert Problem("x", rule, value).render() == text

"""`autopeft validate` reads a study's task file as `run` does: a missing file, a missing column,
bad labels or too few examples fail validation (exit 2, one paragraph at the task field),
with the very paragraph the run would stop with, and without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from autopeft import api, cli, tasks
from autopeft.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"modules": {"lora": {"rank": [4]}}}


def _study(folder: Path, task: dict) -> Path:
    path = folder / "study.yaml"
    model = "smollm2" if task.get("kind") == "causal_lm" else "minilm"  # bundled configs
    study = {"name": "vt", "model": model, "task": task, "search_space": SPACE}
    path.write_text(yaml.safe_dump(study))
    return path


def _csv(folder: Path, text: str, name: str = "data.csv") -> str:
    (folder / name).write_text(text)
    return name  # relative: read from the study file's folder


def _good_csv(n: int = 12) -> str:
    return "text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(n))


def _jsonl(folder: Path, rows: list, name: str = "data.jsonl") -> str:
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


# (id, task section maker, field path, words of the rule)
CASES = [
    ("missing file", lambda d: {"path": "nope.csv"}, "task.path", "no such file: "),
    (
        "missing column",
        lambda d: {"path": _csv(d, _good_csv()), "label": "class"},
        "task.label",
        "column 'class' is not in ",
    ),
    (
        "missing label value",
        lambda d: {"path": _csv(d, "text,label\na,0\nb,\nc,1\nd,0\ne,1\nf,0\n")},
        "task.label",
        "line 3 of ",
    ),
    (
        "one label",
        lambda d: {"path": _csv(d, "text,label\n" + "".join(f"t{i},x\n" for i in range(8)))},
        "task.label",
        "a task needs >= 2 distinct labels in column 'label'",
    ),
    (
        "too few examples",
        lambda d: {"path": _csv(d, _good_csv(4))},
        "task.path",
        "the task is too small for the 80/10/10 split: 4 distinct examples",
    ),
    (
        "malformed jsonl",
        lambda d: {"path": _csv(d, '{"text": "a", "label": 1}\n{text: 2}\n', "bad.jsonl")},
        "task.path",
        "line 2 of ",
    ),
    (
        "causal lm without completions",
        lambda d: {
            "kind": "causal_lm",
            "path": _jsonl(d, [{"prompt": f"q{i}", "answer": "a"} for i in range(8)]),
        },
        "task.completion",
        "column 'completion' is not in ",
    ),
    (
        "chat row without an answer",
        lambda d: {
            "kind": "causal_lm",
            "path": _jsonl(d, [{"messages": [{"role": "user", "content": "hi"}]}] * 8),
        },
        "task.messages",
        "has no assistant turn at the end (roles: user)",
    ),
]


@pytest.mark.parametrize(("what", "task", "field", "rule"), CASES, ids=[c[0] for c in CASES])
def test_validate_fails_on_a_bad_task_file_at_its_field(tmp_path, capsys, what, task, field, rule):
    file = _study(tmp_path, task(tmp_path))
    assert cli.main(["validate", str(file)]) == 2
    out, err = capsys.readouterr()
    assert "study 'vt', not runnable as it is" in out  # the summary, then the problem
    assert "Traceback" not in err and err.startswith(f"error: {file}: 1 problem")
    (paragraph,) = [line for line in err.splitlines() if line.startswith("- ")]
    assert paragraph.startswith(f"- {field}: ") and rule in paragraph, paragraph
    assert "Hint: " in paragraph


@pytest.mark.parametrize(("what", "task", "field", "rule"), CASES, ids=[c[0] for c in CASES])
def test_validate_says_what_the_run_would_say(tmp_path, what, task, field, rule):
    """The paragraph is the one the run's task loading raises on the same file."""
    file = _study(tmp_path, task(tmp_path))
    config = api.load(file)
    _, problems = api.check(file)
    with pytest.raises(ConfigError) as info:
        tasks.get(config.task.kind).load(config.task, seed=config.training.seed)
    assert [p.render() for p in problems] == [p.render() for p in info.value.problems]


def test_a_good_task_file_validates(tmp_path, capsys):
    file = _study(tmp_path, {"path": _csv(tmp_path, _good_csv())})
    assert cli.main(["validate", str(file)]) == 0
    assert "valid study 'vt'" in capsys.readouterr().out


def test_the_task_check_imports_no_heavy_library(tmp_path):
    bad = _study(tmp_path, {"path": _csv(tmp_path, _good_csv(), "ok.csv"), "label": "y"})
    probe = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "pandas", "optuna"):
                    raise ImportError("blocked heavy import: " + name)
                return None

        sys.meta_path.insert(0, Block())
        from autopeft import api
        _, problems = api.check({str(bad)!r})
        print(problems[0].render())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("- task.label: column 'y' is not in ")

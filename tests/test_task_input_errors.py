"""Bad task data and bad config files: a ConfigError at the right field, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autopeft import api
from autopeft.core.errors import ConfigError
from autopeft.core.study_config import TaskConfig
from autopeft.train.data import Encoded, load_task

#: The fewest distinct examples that give each of the 80/10/10 splits one (4/1/1).
MIN_EXAMPLES = 6

SPACE = {"modules": {"lora": {}}}


def _one_problem(info: pytest.ExceptionInfo[ConfigError]) -> str:
    """The single problem of a ConfigError, rendered; it must be one paragraph."""
    (problem,) = info.value.problems
    text = problem.render()
    assert "\n" not in text and "Traceback" not in text
    return text


def _csv(folder: Path, n: int, name: str = "good.csv") -> Path:
    """A CSV task of ``n`` distinct examples with two labels."""
    path = folder / name
    path.write_text("text,label\n" + "".join(f"t {i},{i % 2}\n" for i in range(n)))
    return path


def _jsonl(folder: Path, lines: list[str], name: str = "task.jsonl") -> Path:
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(path: Path, **fields: str) -> None:
    load_task(TaskConfig(name="t", path=str(path), **fields))


# --- task files -------------------------------------------------------------------------


def test_a_malformed_jsonl_line_names_the_file_line_and_parse_message(tmp_path):
    path = _jsonl(tmp_path, ['{"text": "a", "label": 1}', "", '{"text": "b", label: 0}'])
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith(f"- task.path: line 3 of {path} is not valid JSON: "), text
    assert "Expecting property name enclosed in double quotes (column 15)" in text
    assert "Hint: JSON keys and strings take double quotes" in text


def test_a_jsonl_line_that_is_not_an_object_is_named(tmp_path):
    path = _jsonl(tmp_path, ['{"text": "a", "label": 1}', "[1, 2]"])
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith(f"- task.path: line 2 of {path} is not a JSON object, but got [1, 2]")


@pytest.mark.parametrize(
    ("lines", "fields", "path", "rule"),
    [
        (  # the QA case: one row without its label
            ['{"text": "a", "label": 0}', '{"text": "b"}', '{"text": "c", "label": 1}'],
            {},
            "task.label",
            "line 2 of {file} has no 'label' value",
        ),
        (
            ['{"text": "a", "label": 0}', '{"label": 1}', '{"text": null, "label": 1}'],
            {},
            "task.text",
            "line 2 of {file} has no 'text' value (2 rows lack one)",
        ),
        (
            ['{"q": "a", "p": "x", "y": 0}', '{"q": "b", "y": 1}'],
            {"text": "q", "text_pair": "p", "label": "y"},
            "task.text_pair",
            "line 2 of {file} has no 'p' value",
        ),
        (
            ['{"text": "a", "label": 0}', '{"text": "b", "label": ""}'],
            {},
            "task.label",
            "line 2 of {file} has no 'label' value",
        ),
    ],
    ids=["label", "text", "text_pair", "empty label"],
)
def test_a_jsonl_row_without_a_value_names_the_field_and_line(tmp_path, lines, fields, path, rule):
    file = _jsonl(tmp_path, lines)
    with pytest.raises(ConfigError) as info:
        _load(file, **fields)
    text = _one_problem(info)
    assert text.startswith(f"- {path}: {rule.format(file=file)}"), text
    assert "Hint: give every row a" in text and "or remove the rows without one" in text


def test_a_short_csv_row_is_a_missing_label_not_the_label_none(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("text,label\na,0\nb\nc,1\n")
    with pytest.raises(ConfigError) as info:
        _load(path)
    assert _one_problem(info).startswith(f"- task.label: line 3 of {path} has no 'label' value")


def test_a_csv_row_with_more_fields_than_the_header_is_named(tmp_path):
    path = tmp_path / "comma.csv"
    path.write_text("text,label\nfine,0\ngood, not great,1\n")
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith(f"- task.path: line 3 of {path} has 3 fields, but the header has 2")
    assert "Hint: quote a field that contains a comma" in text


@pytest.mark.parametrize(
    ("field", "column"), [("text", "sentence"), ("label", "y"), ("text_pair", "hypothesis")]
)
def test_a_missing_column_is_reported_at_its_own_field(tmp_path, field, column):
    path = _csv(tmp_path, 10)
    with pytest.raises(ConfigError) as info:
        _load(path, **{field: column})
    text = _one_problem(info)
    assert text.startswith(f"- task.{field}: column {column!r} is not in {path}"), text
    assert "known: label, text" in text.lower()
    assert f"set task.{field} to the name of the column" in text


def test_every_missing_column_is_reported_at_once(tmp_path):
    path = _csv(tmp_path, 10)
    with pytest.raises(ConfigError) as info:
        _load(path, text="sentence", label="y")
    assert [p.path for p in info.value.problems] == ["task.text", "task.label"]


@pytest.mark.parametrize("content", ["", "text,label\n"], ids=["empty", "header only"])
def test_an_empty_csv_says_it_has_no_rows(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith(f"- task.path: {path} has no rows"), text
    assert "labels" not in text and "Hint: a CSV file has a header line" in text


def test_one_label_only_is_reported_at_task_label(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\n" + "".join(f"t {i},x\n" for i in range(10)))
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith("- task.label: a task needs >= 2 distinct labels in column 'label'")
    assert "found ['x']" in text


def test_a_task_too_small_for_the_split_says_the_sizes_and_the_minimum(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text("text,label\nt 0,0\nt 1,1\nt 2,0\nt 3,1\n")  # the QA case
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith("- task.path: the task is too small for the 80/10/10 split: "), text
    assert f"4 distinct examples in {path} give train 3, validation 0, test 1" in text
    assert f"at least {MIN_EXAMPLES} distinct examples" in text
    assert "Hint: add examples" in text


def test_the_minimum_task_size_is_exact(tmp_path):
    with pytest.raises(ConfigError, match="give train 4, validation 0, test 1"):
        _load(_csv(tmp_path, MIN_EXAMPLES - 1))
    task = load_task(TaskConfig(name="t", path=str(_csv(tmp_path, MIN_EXAMPLES))))
    assert {s: len(i) for s, i in task.split.items()} == {"train": 4, "validation": 1, "test": 1}


def test_duplicates_do_not_count_towards_the_minimum(tmp_path):
    path = tmp_path / "dups.csv"
    path.write_text("text,label\n" + "".join(f"t {i % 4},{i % 2}\n" for i in range(12)))
    with pytest.raises(ConfigError, match="4 distinct examples"):
        _load(path)


def test_a_non_utf8_task_file_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncafé,0\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        _load(path)
    text = _one_problem(info)
    assert text.startswith(f"- task.path: {path} is not UTF-8 text (byte 0xe9 at offset 14")


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv(tmp_path, 10).read_bytes())
    assert len(load_task(TaskConfig(name="t", path=str(path))).texts) == 10


def test_unlabelled_dataset_rows_are_dropped_not_given_the_last_class(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    labelled = {"text": [f"t {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    unlabelled = {"text": [f"u {i}" for i in range(10)], "label": [-1] * 10}  # as GLUE's test
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict(labelled, features=features),
        test=datasets.Dataset.from_dict(unlabelled, features=features),
    ).save_to_disk(str(tmp_path / "ds"))
    task = load_task(TaskConfig(name="t", hf_dataset=str(tmp_path / "ds")))
    assert len(task.texts) == 20 and not any(t.startswith("u ") for t in task.texts)


@pytest.mark.timeout(30)  # before the fix the generator spun forever
def test_a_batch_larger_than_the_train_split_is_an_error_not_a_hang():
    split = Encoded(torch.ones(3, 4, dtype=torch.long), torch.tensor([4, 4, 4]), torch.zeros(3))
    assert len(list(split.batches(2, seed=0, steps=5))) == 5
    with pytest.raises(ConfigError) as info:
        next(split.batches(8, seed=0, steps=5))
    text = _one_problem(info)
    assert text.startswith(
        "- training.batch_size: a batch must fit in the train split (3 examples), but got 8"
    )
    assert "Hint: lower training.batch_size to at most 3" in text


# --- config files -----------------------------------------------------------------------


def test_a_binary_search_space_file_is_not_utf8_text(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ConfigError) as info:
        api.load(path)
    assert info.value.source == str(path)
    text = _one_problem(info)
    assert text.startswith("- file: the file is not UTF-8 text (byte 0x89 at offset 0"), text


def test_a_non_utf8_search_space_named_by_a_study_names_that_file(tmp_path):
    (tmp_path / "space.yaml").write_bytes("modules: {lora: {}}  # é\n".encode("latin-1"))
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nsearch_space: space.yaml\n")
    with pytest.raises(ConfigError) as info:
        api.load(study)
    assert info.value.source == str(tmp_path / "space.yaml")
    assert _one_problem(info).startswith("- file: the file is not UTF-8 text")


def test_cli_validate_of_a_binary_file_exits_2_without_traceback(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(bytes(range(128, 256)))
    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(path) in out.stderr and "not UTF-8 text" in out.stderr


@pytest.mark.parametrize("kind", ["choice", "int"])
@pytest.mark.parametrize("ref", [0, -768])
def test_relative_to_hidden_below_one_is_rejected_when_validated(kind, ref):
    domain = (
        {"type": "choice", "values": [4, 8]}
        if kind == "choice"
        else {"type": "int", "low": 4, "high": 8}
    )
    with pytest.raises(ConfigError) as info:
        api.space_from_dict({"modules": {"lora": {"rank": {**domain, "relative_to_hidden": ref}}}})
    text = _one_problem(info)
    assert text.startswith(
        "- search_space.modules.lora.rank.relative_to_hidden: relative_to_hidden >= 1 must "
        f"hold, but got relative_to_hidden={ref}"
    ), text
    assert "Hint: give the hidden size the values were chosen for" in text


def test_relative_to_hidden_of_one_or_more_is_accepted():
    rank = {"type": "choice", "values": [4, 8], "relative_to_hidden": 1}
    space = api.space_from_dict({"modules": {"lora": {"rank": rank}}})
    assert api.resolve(space, "minilm").size() >= 1


# --- where a study file's task paths are read from -----------------------------------


def _study(folder: Path, task: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(json.dumps({"name": "s", "task": task, "search_space": SPACE}))
    return path


def test_a_relative_task_path_is_read_from_the_study_files_folder(tmp_path, monkeypatch):
    study = _study(tmp_path / "studies", {"path": "good.csv"})
    _csv(study.parent, 10)
    monkeypatch.chdir(tmp_path)  # not the study's folder: good.csv is not here
    config = api.load(study)
    assert config.task.path == str(study.parent / "good.csv")
    assert len(load_task(config.task).texts) == 10
    # A study built in Python keeps reading from the working directory.
    raw = {"name": "s", "task": {"path": "good.csv"}, "search_space": SPACE}
    assert api.study_from_dict(raw).task.path == "good.csv"


def test_a_missing_relative_task_path_is_reported_at_the_study_folder(tmp_path, monkeypatch):
    study = _study(tmp_path / "studies", {"path": "data/missing.csv"})
    monkeypatch.chdir(tmp_path)
    config = api.load(study)
    with pytest.raises(ConfigError) as info:
        load_task(config.task)
    text = _one_problem(info)
    assert text.startswith(f"- task.path: no such file: {study.parent}/data/missing.csv. Hint:")
    assert "read from the study file's folder" in text


def test_absolute_and_working_directory_task_paths_still_work(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    data = _csv(tmp_path / "elsewhere", 10)
    assert api.load(_study(tmp_path / "a", {"path": str(data)})).task.path == str(data)
    # A file only the working directory has (the old rule) is still read from there.
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = api.load(_study(tmp_path / "b", {"path": "good.csv"}))
    assert config.task.path == "good.csv" and len(load_task(config.task).texts) == 10
    # Both have one: the study's folder wins.
    _csv(tmp_path / "b", 12)
    config = api.load(tmp_path / "b" / "study.yaml")
    assert config.task.path == str(tmp_path / "b" / "good.csv")
    assert len(load_task(config.task).texts) == 12


def test_a_dataset_folder_next_to_the_study_file_is_found(tmp_path, monkeypatch):
    study = _study(tmp_path / "studies", {"hf_dataset": "ds"})
    (study.parent / "ds").mkdir()
    monkeypatch.chdir(tmp_path)
    assert api.load(study).task.hf_dataset == str(study.parent / "ds")
    # Not a folder there: a hub id, left as written.
    other = _study(tmp_path / "other", {"hf_dataset": "glue"})
    assert api.load(other).task.hf_dataset == "glue"

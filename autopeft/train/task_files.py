"""Reading a user's task file (CSV or JSONL) into rows, with errors that name line and field.

The rows go on to :func:`autopeft.train.data.load_task`, which labels, de-duplicates and
splits them; Hugging Face datasets arrive as :class:`Rows` too, so the column checks are shared.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.core.errors import ConfigError, Problem, did_you_mean

_CSV_HINT = "a CSV file has a header line (e.g. text,label) and one line per example"
_JSONL_HINT = (
    'a JSONL file (.jsonl or .json) has one JSON object per line, e.g. {"text": "good", "label": 1}'
)


@dataclass
class Rows:
    """The raw rows of a task source, and where each came from, for error messages."""

    rows: list[dict[str, Any]]
    #: The file or dataset, as the user named it.
    source: str
    #: The task field that names the source (``task.path``, ``task.hf_dataset``, ...).
    field: str
    #: The line of the file each row ends on; None when the rows are only counted.
    lines: list[int] | None = None
    #: What the source should look like, for hints (None: not a file).
    hint: str | None = None

    def where(self, index: int) -> str:
        """``line 7 of data.csv`` (a file) or ``row 7 of <dataset>``."""
        if self.lines is not None:
            return f"line {self.lines[index]} of {self.source}"
        return f"row {index + 1} of {self.source}"


def _read_text(path: Path, field: str, hint: str) -> str:
    """The file's text, decoded as UTF-8 (a leading byte-order mark dropped).

    Raises:
        ConfigError: at ``field`` when the file cannot be read or is not UTF-8 text.
    """
    try:
        if path.suffix == ".bz2":
            with bz2.open(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
        # utf-8-sig: spreadsheet programs start a CSV with a BOM, which would otherwise
        # become part of the first column's name.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            Problem(
                field,
                f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                f"{err.start} is not UTF-8)",
                hint=f"save it as UTF-8; {hint}",
            )
        ) from None
    except (OSError, EOFError) as err:  # unreadable, or a damaged .bz2 archive
        raise ConfigError(Problem(field, f"cannot read {path}: {err}", hint=hint)) from None


def _jsonl_rows(text: str, source: str, field: str) -> Rows:
    """One JSON object per non-blank line; a bad line is named by its line number."""
    rows, lines = [], []
    # Split on newlines only: str.splitlines() also splits at U+2028 or U+0085, which JSON
    # allows unescaped inside strings, and would then miscount the lines.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                Problem(
                    field,
                    f"line {number} of {source} is not valid JSON: {err.msg} (column {err.colno})",
                    hint=f"JSON keys and strings take double quotes; {_JSONL_HINT}",
                )
            ) from None
        if not isinstance(row, dict):
            raise ConfigError(
                Problem(
                    field,
                    f"line {number} of {source} is not a JSON object",
                    row,
                    hint=_JSONL_HINT,
                )
            )
        rows.append(row)
        lines.append(number)
    return Rows(rows, source, field, lines, _JSONL_HINT)


def _csv_rows(text: str, source: str, field: str) -> Rows:
    """Rows keyed by the header line; a row with more fields than the header is an error."""
    reader = csv.DictReader(io.StringIO(text))
    rows, lines = [], []
    try:
        for row in reader:
            if None in row:
                # DictReader files the surplus under the key None, and the named columns
                # then hold shifted values: usually an unquoted comma inside a text.
                width = len(reader.fieldnames or [])
                raise ConfigError(
                    Problem(
                        field,
                        f"line {reader.line_num} of {source} has {width + len(row[None])} "
                        f"fields, but the header has {width}",
                        hint='quote a field that contains a comma, e.g. "good, not great",1',
                    )
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise ConfigError(
            Problem(
                field,
                f"line {reader.line_num} of {source} is not valid CSV: {err}",
                hint=_CSV_HINT,
            )
        ) from None
    return Rows(rows, source, field, lines, _CSV_HINT)


def read_rows(path: Path, fmt: str, field: str = "task.path") -> Rows:
    """The rows of a ``jsonl`` or ``csv`` file (``.bz2`` too), each with its line number."""
    text = _read_text(path, field, _JSONL_HINT if fmt == "jsonl" else _CSV_HINT)
    if fmt == "jsonl":
        return _jsonl_rows(text, str(path), field)
    return _csv_rows(text, str(path), field)


def _is_missing(value: Any, is_label: bool) -> bool:
    # A short CSV row leaves None in its last fields, JSON may say null; an empty label is
    # missing too (an empty text is only skipped: that row has nothing to classify).
    return value is None or (is_label and not str(value).strip())


def column_problems(data: Rows, columns: dict[str, str | None]) -> list[Problem]:
    """One problem per task column that is absent from the data or lacks a value in a row."""
    problems = []
    known = sorted({str(k) for row in data.rows[:100] for k in row if k is not None})
    for field, column in columns.items():
        if column is None:
            continue
        if not any(column in row for row in data.rows):
            problems.append(
                Problem(
                    f"task.{field}",
                    f"column {column!r} is not in {data.source}",
                    hint=did_you_mean(column, known)
                    + f"; set task.{field} to the name of the column to use",
                )
            )
            continue
        missing = [
            i
            for i, row in enumerate(data.rows)
            if _is_missing(row.get(column), is_label=field == "label")
        ]
        if missing:
            more = f" ({len(missing)} rows lack one)" if len(missing) > 1 else ""
            problems.append(
                Problem(
                    f"task.{field}",
                    f"{data.where(missing[0])} has no {column!r} value{more}",
                    hint=f"give every row a {column!r}, or remove the rows without one",
                )
            )
    return problems


#: The fewest distinct examples for which the 80/10/10 split leaves no split empty (4/1/1);
#: the rule :mod:`autopeft.train.data` applies when it splits a task.
MIN_EXAMPLES = 6

_PATH_HINT = (
    "a relative path in a study file is read from the study file's folder; in a study built "
    "in Python, from the working directory"
)


def split_problems(
    n: int, data: Rows, unit: str = "examples", hint: str | None = None
) -> list[Problem]:
    """The problem of ``n`` distinct examples that leave a split of the 80/10/10 rule empty.

    Train is ``[:int(0.8 n)]``, validation up to ``int(0.9 n)``, test the rest (as
    :func:`autopeft.train.data.cuts`); ``MIN_EXAMPLES`` (6) is the fewest that fill all three.
    """
    cut1, cut2 = int(0.8 * n), int(0.9 * n)
    if cut1 and cut2 > cut1 and n > cut2:
        return []
    sizes = f"train {cut1}, validation {cut2 - cut1}, test {n - cut2}"
    return [
        Problem(
            data.field,
            f"the task is too small for the 80/10/10 split: {n} distinct {unit} in "
            f"{data.source} give {sizes}; every split needs one, so a task needs at "
            f"least {MIN_EXAMPLES} distinct {unit}",
            hint=hint
            or "add examples (duplicates and rows with an empty text do not count); "
            "a validation split that can rank candidates needs hundreds",
        )
    ]


def file_rows(cfg: Any) -> Rows | list[Problem]:
    """The rows of the task file ``task.path``, or the problems that stop reading it.

    The same reading as a run's (:func:`read_rows`), without torch: a missing, unreadable
    or malformed file is a problem at ``task.path``.
    """
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        return [Problem("task.path", f"no such file: {path}", hint=_PATH_HINT)]
    try:
        return read_rows(path, "jsonl" if path.suffix in (".jsonl", ".json") else "csv")
    except ConfigError as err:
        return err.problems


def classification_problems(cfg: Any) -> list[Problem]:
    """What a run would refuse in a classification task file, before any training.

    The checks of :func:`autopeft.train.data.load_task` on a ``task.path`` file, without
    torch (so ``autopeft validate`` stays fast): the file exists and parses, has rows, has
    the ``text``/``text_pair``/``label`` columns with a value in every row, at least two
    distinct labels, and enough distinct examples for the 80/10/10 split. Built-in tasks
    and ``datasets`` datasets are not read here.
    """
    if not cfg.path:
        return []
    data = file_rows(cfg)
    if isinstance(data, list):
        return data
    if not data.rows:
        return [Problem(data.field, f"{data.source} has no rows", hint=data.hint)]
    columns = {"text": cfg.text, "text_pair": cfg.text_pair, "label": cfg.label}
    problems = column_problems(data, columns)
    if problems:
        return problems
    text, pair, label = cfg.text, cfg.text_pair, cfg.label
    seen: dict[tuple[str, str], str] = {}
    for row in data.rows:
        key = (str(row[text]).strip(), str(row[pair]).strip() if pair else "")
        if key[0] and key not in seen:  # de-duplicated on the input, as a run does
            seen[key] = str(row[label])
    if not seen:
        return [
            Problem(
                "task.text",
                f"every {text!r} in {data.source} is empty",
                hint="set task.text to the column that holds the texts",
            )
        ]
    names = sorted(set(seen.values()))
    if len(names) < 2:
        return [
            Problem(
                "task.label",
                f"a task needs >= 2 distinct labels in column {label!r} of {data.source}, "
                f"found {names}",
                hint="set task.label to the column that holds the classes",
            )
        ]
    return split_problems(len(seen), data)


def causal_lm_problems(cfg: Any) -> list[Problem]:
    """What a run would refuse in a causal-LM task file, before any training.

    The checks of :func:`autopeft.train.sft.load_sft` on a ``task.path`` file, without
    torch: the file exists and parses, has rows, has ``prompt`` and ``completion`` columns
    with a value in every row (or chat turns in ``messages`` ending with an assistant turn),
    and enough distinct rows for the 80/10/10 split.
    """
    if not cfg.path:
        return []
    data = file_rows(cfg)
    if isinstance(data, list):
        return data
    if not data.rows:
        return [Problem(data.field, f"{data.source} has no rows", hint=data.hint)]
    if any(cfg.messages in row for row in data.rows[:100]):
        pairs = []
        for index, row in enumerate(data.rows):
            turns = row.get(cfg.messages)
            problem = chat_problem(turns, data, index, cfg.messages)
            if problem:
                return [problem]
            pairs.append(json.dumps(turns, sort_keys=True))
    else:
        problems = column_problems(data, {"prompt": cfg.prompt, "completion": cfg.completion})
        if problems:
            problems[0].hint = (problems[0].hint or "") + (
                f" (or give chat turns in a {cfg.messages!r} column)"
            )
            return problems
        pairs = [json.dumps([str(r[cfg.prompt]), str(r[cfg.completion])]) for r in data.rows]
    return split_problems(len(set(pairs)), data, "rows", SFT_SPLIT_HINT)


SFT_SPLIT_HINT = "add rows (duplicates do not count)"


def chat_problem(turns: Any, data: Rows, index: int, column: str) -> Problem | None:
    """The problem of one chat row (see :func:`autopeft.train.sft.load_sft`), or None."""
    ok = (
        isinstance(turns, list)
        and turns
        and all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and "content" in t for t in turns
        )
    )
    if not ok:
        return Problem(
            "task.messages",
            f"{data.where(index)}: {column!r} must be a list of chat turns",
            hint='e.g. [{"role": "user", "content": "2+2?"}, '
            '{"role": "assistant", "content": "4"}]',
        )
    if turns[-1]["role"] != "assistant":
        return Problem(
            "task.messages",
            f"{data.where(index)} has no assistant turn at the end (roles: "
            f"{', '.join(t['role'] for t in turns)})",
            hint="the last turn is the answer the model learns; end each row with an "
            "assistant turn",
        )
    return None

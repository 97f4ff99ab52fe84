"""Fuzzing what users type, a few hundred cases per run (bench/fuzz.py runs thousands).

Every mutated study or search-space file must be accepted or refused in paragraphs, every
argument list of a read-only command must exit 0 or 2, each within 2 s, writing nothing.
The cases are the same every run (derandomized), so a red run is reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fuzz  # noqa: E402


def test_structurally_mutated_files(tmp_path):
    stats = fuzz.fuzz("file", 150, tmp_path, derandomize=True)
    assert stats["cases"] >= 100 and stats["failures"] == {}, stats["failures"]


def test_mangled_file_text(tmp_path):
    stats = fuzz.fuzz("text", 150, tmp_path, derandomize=True)
    assert stats["cases"] >= 100 and stats["failures"] == {}, stats["failures"]


def test_studies_built_from_the_grammar_are_validated(tmp_path):
    stats = fuzz.fuzz("grammar", 100, tmp_path, derandomize=True)
    assert stats["cases"] >= 60 and stats["failures"] == {}, stats["failures"]


def test_cli_arguments_of_read_only_commands(tmp_path):
    stats = fuzz.fuzz("cli", 100, tmp_path, derandomize=True)
    assert stats["cases"] >= 60 and stats["failures"] == {}, stats["failures"]

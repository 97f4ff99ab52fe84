"""Fuzzing what users type, a few hundred cases per run (bench/fuzz.py runs thousands).

Every mutated study or search-space file must be accepted or refused in paragraphs, every
study built from the grammar validated, every argument list of a read-only command must
exit 0 or 2, each within 2 s, writing nothing. The cases are the same every run
(derandomized), so a red run is reproducible.
"""

from __future__ import annotations

import pytest

from bench import fuzz


@pytest.mark.parametrize(
    ("kind", "cases", "at_least"),
    [
        ("file", 150, 100),  # structurally mutated study and search-space files
        ("text", 150, 100),  # mangled file text
        ("grammar", 100, 60),  # studies built from the DSL's grammar, through validate
        ("cli", 100, 60),  # argument lists of the read-only commands
    ],
)
def test_fuzzed_inputs_end_in_a_result_or_a_paragraph(kind, cases, at_least, tmp_path):
    stats = fuzz.fuzz(kind, cases, tmp_path, derandomize=True)
    assert stats["cases"] >= at_least and stats["failures"] == {}, stats["failures"]

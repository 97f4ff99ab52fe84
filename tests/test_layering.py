"""Layering: the core, the method registry, the DSL and `validate` import no heavy library."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "optuna", "ray", "plotly", "transformers", "peft", "pandas", "botorch")

PROBE = textwrap.dedent(
    f"""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError("blocked heavy import: " + name)
            return None

    sys.meta_path.insert(0, Block())
    import autopeft.core.config, autopeft.core.resolve, autopeft.core.summary
    import autopeft.core.study_config
    from autopeft import api, methods
    assert len(methods.registry()) >= 15
    print(api.validate("search_spaces/autopeft.yaml", "minilm"))
    from autopeft.cli import main
    main(["methods"])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
    assert not heavy, heavy
    print("CLEAN")
    """
)


def test_core_and_validate_import_no_heavy_library():
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("CLEAN")
    assert "valid search space" in out.stdout


def test_methods_cli_lists_every_type_one_line_each():
    from autopeft import methods

    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "methods"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    names = sorted(methods.registry())
    assert len(names) >= 15
    for name in names:
        row = [line for line in lines if line.split()[0] == name]
        assert len(row) == 1 and methods.get(name).summary in row[0]
    assert lines[-1] == f"{len(names)} module types"

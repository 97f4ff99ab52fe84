"""What every benchmark in bench/ keeps to: public API only, no path edits, a docstring and a
``--help``, and results that name the commit they came from (bench/README.md).

Fast: the scripts are read as syntax trees; ``--help`` runs only for the scripts that import
no torch when started (the others are held to an argparse parser by their tree).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import autopeft

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
#: bench's modules that are not benchmarks (no command line of their own).
HELPERS = {
    "bench",
    "bench.common",
    "bench.driver_cost_report",
    "bench.fault_checks",
    "bench.fitting",
    "bench.gpu",
    "bench.search_summary",
    "bench.signal_stats",
}
COMMIT = re.compile(r"\b[0-9a-f]{7,40}\b")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(BENCH.rglob("*.py"))}
SCRIPTS = sorted(set(MODULES) - HELPERS)
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import anywhere in the tree."""
    out: list[tuple[str, list[str], int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out.append(("." * node.level + (node.module or ""), [], node.lineno))
            else:
                out.append((node.module or "", [a.name for a in node.names], node.lineno))
    return out


def top_level_imports(tree: ast.Module) -> set[str]:
    """Modules imported when the module is (the imports outside functions and classes)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def imports_torch(name: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether starting ``name`` imports torch (directly or through another bench module)."""
    found = top_level_imports(TREES[name])
    if any(m == "torch" or m.startswith(("torch.", "transformers", "peft")) for m in found):
        return True
    inner = {m for m in found if m in MODULES and m not in seen and m != name}
    return any(imports_torch(m, seen | {name}) for m in inner)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_autopeft_by_its_public_names_only(name):
    bench_stems = {n.rsplit(".", 1)[-1] for n in MODULES} - {"bench", "gpu", "common"}
    for module, names, line in imports(TREES[name]):
        where = f"{MODULES[name].relative_to(ROOT)}:{line}"
        if module == "autopeft":
            private = sorted(set(names) - set(autopeft.__all__))
            assert not private, f"{where}: {private} are not in autopeft.__all__"
        assert not module.startswith("autopeft."), f"{where}: imports {module} (internal)"
        assert not module.startswith("."), f"{where}: a relative import; use bench.NAME"
        # Benchmarks import each other as the package's modules, never by a bare name.
        assert module.split(".")[0] not in bench_stems, f"{where}: import bench.{module}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_sys_path_edits_and_a_docstring(name):
    tree, source = TREES[name], MODULES[name].read_text()
    assert ast.get_docstring(tree), f"{name} has no module docstring"
    assert "sys.path" not in source, f"{name} edits sys.path"
    attributes = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert not any(a.attr == "path" and getattr(a.value, "id", "") == "sys" for a in attributes)


def test_no_test_edits_sys_path():
    """tests/ is a package: pytest puts the repository root first, so ``bench`` imports."""
    assert (ROOT / "tests" / "__init__.py").is_file()
    # monkeypatch's prepend spelled in two parts, so this file does not match itself.
    edit = re.compile(r"sys\.path(\.insert|\.append|\.extend|\[|\s*\+?=)|syspath" + "_prepend")
    offenders = [p.name for p in (ROOT / "tests").glob("*.py") if edit.search(p.read_text())]
    assert offenders == []
    assert sys.path.count(str(ROOT)) >= 1


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_a_command_line_named_for_python_dash_m(name):
    tree = TREES[name]
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "ArgumentParser"
    ]
    progs = [
        k.value.value
        for c in calls
        for k in c.keywords
        if k.arg == "prog" and isinstance(k.value, ast.Constant)
    ]
    assert progs == [f"python -m {name}"], f"{name}: ArgumentParser(prog='python -m {name}')"
    main_guard = [
        n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
    ]
    assert main_guard, f"{name} has no `if __name__ == '__main__'`"


def test_help_exits_0_quickly_for_the_scripts_that_start_without_torch():
    light = [name for name in SCRIPTS if not imports_torch(name)]
    assert "bench.faults" in light and "bench.surrogate" not in light

    def help_of(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", name, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(light, pool.map(help_of, light)))
    for name, out in done.items():
        assert out.returncode == 0, f"{name} --help: {out.stderr[-500:]}"
        assert out.stdout.startswith(f"usage: python -m {name}"), out.stdout[:200]


def named_commit(path: Path) -> str:
    """The git commit a results file names in its provenance ('' if none)."""
    if path.suffix == ".json":
        meta = json.loads(path.read_text()).get("meta", {})
        return str(meta.get("git_commit", ""))
    if path.suffix == ".jsonl":
        first = json.loads(path.read_text().splitlines()[0])
        return str(first.get("meta", {}).get("git_commit", ""))
    lines = path.read_text().splitlines()
    match = re.search(r"at git commit `([^`]+)`", lines[2] if len(lines) > 2 else "")
    return match.group(1) if match else ""


def readme_results() -> list[str]:
    """The results files the table of bench/README.md names (its third column)."""
    table = [ln for ln in (BENCH / "README.md").read_text().splitlines() if ln.startswith("| ")]
    header = next(i for i, ln in enumerate(table) if ln.startswith("| benchmark | claim |"))
    cells = [row.split(" | ")[2] for row in table[header + 1 :]]
    return [name for cell in cells for name in re.findall(r"`results/([^`]+)`", cell)]


def test_the_readme_table_names_every_results_file_and_each_names_its_commit():
    named = readme_results()
    assert named and len(named) == len(set(named))
    on_disk = sorted(p.name for p in (BENCH / "results").iterdir())
    # Every kept results file backs a row, and every row's file is there.
    assert sorted(named) == on_disk
    for name in named:
        commit = named_commit(BENCH / "results" / name)
        assert COMMIT.search(commit), f"results/{name} names no git commit ({commit!r})"


def test_results_paths_in_the_readme_and_docs_exist():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), BENCH / "README.md"]
    for text in texts:
        for path in re.findall(r"bench/results/[\w./-]*\w", text.read_text()):
            assert (ROOT / path).exists(), f"{text.relative_to(ROOT)} names {path}"


def test_nothing_in_bench_points_outside_the_repository():
    for path in BENCH.rglob("*"):
        if path.is_file():
            assert "../shared" not in path.read_text(errors="replace"), path

"""Fuzzing what users type: study and search-space files, and CLI arguments.

Hypothesis mutates the repository's study files (``studies/*/study.yaml``) and search-space
files (``search_spaces/*.yaml``) structurally (a value anywhere replaced by a hostile one, a
key dropped or added) and as raw text (characters inserted, deleted or repeated), builds
studies from the DSL's grammar (modules of the library with their own parameters as values,
choice lists or typed ranges near their defaults, targets, layer selections, budgets and
memory levers; ``autopeft validate`` must answer them), and draws argument lists for the
commands that only read (``validate``, ``methods``, ``tasks``,
``report``, ``export``, ``dashboard``). Each case must end in a study/space or a
:class:`ConfigError` (files), or exit 0 or 2 (CLI), within 2 s, writing nothing beside its
input. ``tests/test_fuzz_inputs.py`` runs a few hundred cases in ``make test``; this script
runs many more and records the figures. The module library is read through the public API
(the ``autopeft methods`` listing, each type resolved alone), and the commands run in-process
through the ``autopeft`` console script's entry point.

    OMP_NUM_THREADS=1 python -m bench.fuzz [--cases 10000]

Results: bench/results/fuzz.json and .md (cases, failures by kind, slowest case).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata as md
import io
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import yaml  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import autopeft  # noqa: E402
from autopeft import ConfigError  # noqa: E402
from bench.common import RESULTS, ROOT, Largest, provenance, write_results  # noqa: E402

LIMIT_S = 2.0
DOCS = [
    yaml.safe_load(p.read_text())
    for pattern in ("studies/*/study.yaml", "search_spaces/*.yaml")
    for p in sorted(ROOT.glob(pattern))
]
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "-1", "1e999", "none", "nf4", "all", "q+v", "../../etc", "~", "*"]),
    st.lists(st.integers(min_value=-3, max_value=100), max_size=5),
    st.dictionaries(
        st.sampled_from(["type", "low", "high", "choice", "x"]), st.integers(), max_size=3
    ),
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a parsed YAML document."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


def mutate(doc: Any, path: tuple, action: str, value: Any) -> Any:
    """``doc`` with the value at ``path`` replaced, dropped, or a sibling key added."""
    if not path:
        return value if action == "replace" else doc
    head, rest = path[0], path[1:]
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    if rest:
        copy[head] = mutate(copy[head], rest, action, value)
    elif action == "replace":
        copy[head] = value
    elif action == "drop":
        del copy[head]
    elif isinstance(copy, dict):
        copy[f"{head}_extra"] = value
    return copy


@st.composite
def mutated_file(draw: st.DrawFn) -> str:
    """A study or search-space file with one to three structural mutations."""
    doc = draw(st.sampled_from(DOCS))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(paths(doc)))
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        doc = mutate(doc, path, action, draw(HOSTILE))
    return yaml.safe_dump(doc, allow_unicode=True)


@st.composite
def mangled_file(draw: st.DrawFn) -> str:
    """A study or search-space file's text with characters inserted, deleted or repeated."""
    text = yaml.safe_dump(draw(st.sampled_from(DOCS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        piece = draw(st.text(alphabet=":{}[]-*&!|>'\"#,\n 0123456789abcx", max_size=8))
        op = draw(st.sampled_from(["insert", "delete", "repeat"]))
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + len(piece) :]
        else:
            text = text[:at] + text[at : at + 40] * 3 + text[at:]
    return text


def _value_like(default: Any) -> st.SearchStrategy:
    """Values of a parameter's own type (and a few of another), near its default."""
    if isinstance(default, bool):
        return st.one_of(st.booleans(), st.just("yes"))
    if isinstance(default, int):
        return st.one_of(st.integers(min_value=-2, max_value=300), st.just(2.5))
    if isinstance(default, float):
        return st.one_of(st.floats(min_value=-1, max_value=1e4, allow_nan=False), st.just("x"))
    if isinstance(default, str):
        return st.one_of(st.just(default), st.text(max_size=12))
    return HOSTILE


@st.composite
def _domain(draw: st.DrawFn, default: Any) -> Any:
    """A parameter as the DSL writes it: a value, a list of choices or a typed range."""
    if isinstance(default, dict):  # a searched default: its first value's type
        default = (default.get("values") or [0])[0]
    form = draw(st.sampled_from(["value", "choices", "range"]))
    if form == "value":
        return draw(_value_like(default))
    if form == "choices":
        return draw(st.lists(_value_like(default), min_size=0, max_size=4))
    kind = "float" if isinstance(default, float) else "int"
    low, high = draw(_value_like(default)), draw(_value_like(default))
    return {"type": kind, "low": low, "high": high, "log": draw(st.booleans())}


TARGETS = ["q", "k", "v", "o", "ffn_up", "ffn_down", "attn", "ffn", "all", "qkv", "nope"]
LAYERS = ["all", "search", [0, 2], [99], {"top": 3}, {"top": 0}, {"bottom": 2}, [-1], []]
LEVER_VALUES: dict[str, list[Any]] = {
    "quantization": ["none", "nf4", "int8", "nf3"],
    "gradient_checkpointing": [False, True, "no"],
    "micro_batch_size": [1, 2, 3, 8, 0],
    "max_length": [8, 16, 32, 64, 4],
    "dtype": ["fp32", "bf16", "fp8"],
}


@functools.cache
def cli() -> Callable[[list[str]], int]:
    """The ``autopeft`` command's entry point (its ``main``), to run commands in-process."""
    (script,) = md.entry_points(group="console_scripts", name="autopeft")
    main: Callable[[list[str]], int] = script.load()
    return main


@functools.cache
def library() -> dict[str, tuple[dict[str, Any], bool]]:
    """Each module type: its parameters at their defaults, and whether it takes targets.

    The types are those ``autopeft methods`` lists; a space of the type alone, resolved on
    MiniLM and sampled at its largest, gives a module with every parameter set.
    """
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli()(["methods"])
    names = [line.split()[0] for line in out.getvalue().splitlines() if len(line.split()) > 2]
    types = {}
    for name in names[:-1] if names and names[-1].isdigit() else names:
        space = autopeft.space_from_dict({"modules": {name: {}}})
        (module,) = autopeft.resolve(space, "minilm").sample(Largest()).modules
        types[name] = (dict(module.params), bool(module.targets))
    return types


@st.composite
def grammar_study(draw: st.DrawFn) -> str:
    """A study built from the DSL's grammar: the module library's own parameters."""
    types = library()
    chosen = draw(st.lists(st.sampled_from(sorted(types)), min_size=1, max_size=3, unique=True))
    modules: dict[str, Any] = {}
    for name in chosen:
        defaults, uses_targets = types[name]
        params = {
            key: draw(_domain(default)) for key, default in defaults.items() if draw(st.booleans())
        }
        if uses_targets and draw(st.booleans()):
            params["targets"] = draw(st.lists(st.sampled_from(TARGETS), max_size=3))
        modules[name] = params
    space: dict[str, Any] = {"modules": modules}
    if draw(st.booleans()):
        space["layers"] = draw(st.sampled_from(LAYERS))
    if draw(st.booleans()):
        space["budget"] = draw(
            st.sampled_from(
                [
                    {"max_trainable_params": 10_000},
                    {"max_trainable_params": "5%"},
                    {"max_memory_mb": 300.0},
                    {"max_trainable_params": -1},
                ]
            )
        )
    if draw(st.booleans()):
        lever = draw(st.sampled_from(sorted(LEVER_VALUES)))
        space["training"] = {
            lever: draw(st.lists(st.sampled_from(LEVER_VALUES[lever]), max_size=3))
        }
    study = {
        "name": "fuzz",
        "model": draw(st.sampled_from(["minilm", "tiny-llama", "tiny-bert"])),
        "task": {"name": "sms_spam", "max_length": 32},
        "training": {"batch_size": 8},
        "search_space": space,
    }
    return yaml.safe_dump(study)


COMMANDS = ["validate", "methods", "tasks", "report", "export", "dashboard"]
OPTIONS = ["--model", "--storage", "--root", "--samples", "-o", "--trial", "--trials", "--port"]
VALUES = st.one_of(
    st.sampled_from(["minilm", "tiny-llama", "study.yaml", "x", "-1", "0", "99999999999", ""]),
    st.sampled_from(["sqlite:///:memory:", "sqlite:///missing/x.db", "postgresql://a:b@h:1/d"]),
    st.text(max_size=30),
)


@st.composite
def cli_args(draw: st.DrawFn) -> list[str]:
    """An argument list for a command that only reads."""
    args = [draw(st.sampled_from(COMMANDS))]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        args.append(draw(st.one_of(st.sampled_from(OPTIONS), VALUES)))
    return args


def read_file(folder: Path, text: str) -> None:
    """Load ``text`` as ``validate`` does; only a ConfigError may escape; nothing written."""
    path = folder / "study.yaml"
    path.write_text(text)
    start = time.perf_counter()
    try:
        config = autopeft.load(path)
        if hasattr(config, "model"):
            autopeft.load_profile(config.model)
    except ConfigError as err:
        assert "Traceback" not in str(err)
    took = time.perf_counter() - start
    assert took < LIMIT_S, f"took {took:.2f} s"
    assert [p.name for p in folder.iterdir()] == ["study.yaml"], "wrote a file"


def validate_file(folder: Path, text: str) -> None:
    """``autopeft validate`` on a generated study: exit 0 or 2, quickly, writing nothing."""
    (folder / "study.yaml").write_text(text)
    run_cli(folder, ["validate", "study.yaml"], keep=True)


def run_cli(folder: Path, args: list[str], keep: bool = False) -> None:
    """Run ``autopeft ARGS`` in ``folder``: exit 0 or 2, quickly, writing nothing."""
    if not keep:
        (folder / "study.yaml").write_text(yaml.safe_dump(DOCS[0]))
    start = time.perf_counter()
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli()(args)
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        os.chdir(cwd)
    took = time.perf_counter() - start
    assert code in (0, 2), f"exit {code}: {err.getvalue()[-300:]}"
    assert "Traceback" not in err.getvalue()
    assert took < LIMIT_S, f"took {took:.2f} s"
    assert [p.name for p in folder.iterdir()] == ["study.yaml"], "wrote a file"


def fuzz(kind: str, cases: int, folder: Path, derandomize: bool = False) -> dict:
    """Run ``cases`` cases of one kind; count failures by their first line; time them.

    ``derandomize``: the same cases every run (the test suite's; this script explores anew).
    """
    strategy = {
        "file": mutated_file(),
        "text": mangled_file(),
        "grammar": grammar_study(),
        "cli": cli_args(),
    }[kind]
    checks: dict[str, Callable[[Path, Any], None]] = {"cli": run_cli, "grammar": validate_file}
    check = checks.get(kind, read_file)
    stats: dict[str, Any] = {"kind": kind, "cases": 0, "failures": {}, "slowest_s": 0.0}

    @settings(
        max_examples=cases,
        derandomize=derandomize,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def one(case: Any) -> None:
        start = time.perf_counter()
        try:
            check(folder, case)
        except Exception as err:  # noqa: BLE001 -- counted, the run goes on
            why = "".join(traceback.format_exception_only(err)).strip().splitlines()[-1]
            stats["failures"].setdefault(why[:200], {"count": 0, "case": repr(case)[:300]})
            stats["failures"][why[:200]]["count"] += 1
        finally:
            for extra in folder.iterdir():
                if extra.name != "study.yaml":
                    if extra.is_dir():
                        shutil.rmtree(extra, ignore_errors=True)
                    else:
                        extra.unlink(missing_ok=True)
        stats["cases"] += 1
        stats["slowest_s"] = max(stats["slowest_s"], time.perf_counter() - start)

    one()
    return stats


def main() -> None:
    """Run the cases of every kind and write the counts."""
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000, help="cases in all (split by kind)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    share = {"file": 0.3, "text": 0.3, "grammar": 0.2, "cli": 0.2}
    started = time.perf_counter()
    runs = []
    for kind, part in share.items():
        with tempfile.TemporaryDirectory(prefix="autopeft-fuzz-") as tmp:
            runs.append(fuzz(kind, max(1, int(args.cases * part)), Path(tmp)))
    meta = provenance() | {"seconds": round(time.perf_counter() - started, 1)}
    lines = [
        "# Fuzzing study files, search-space files and CLI arguments",
        "",
        f"{meta['seconds']} s in all.",
        "",
        "| input | cases | failures | slowest case s |",
        "|---|---|---|---|",
        *(
            f"| {r['kind']} | {r['cases']:,} | {sum(f['count'] for f in r['failures'].values())}"
            f" | {r['slowest_s']:.3f} |"
            for r in runs
        ),
        "",
        "A failure is a traceback (any exception but ConfigError), an exit code other than 0 "
        f"or 2, a case over {LIMIT_S:g} s, or a file written.",
    ]
    for r in runs:
        for why, f in r["failures"].items():
            lines.append(f"- {r['kind']}: {f['count']} x `{why}` (e.g. {f['case']})")
    write_results(args.out / "fuzz", {"meta": meta, "runs": runs}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

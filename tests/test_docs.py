"""Every command and code block in the README and docs/ runs, as written, on tiny studies.

Each page runs in a sandbox folder that looks like the repository to its commands (the
Makefile, the virtual environment, the presets) but whose bundled studies are tiny versions
with the same names, models built from config and a few steps: ``make run`` or
``autopeft export studies/quickstart --best`` run exactly as a user types them, in seconds.

A block that cannot run here says why in a comment right above it:
``<!-- doc-test: skip (the reason) -->`` (e.g. it needs a SLURM cluster).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from autopeft import api

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*doc-test:\s*skip\s*\((?P<reason>[^)]{10,})\)\s*-->")
#: At most this many blocks may be skipped in all pages: the rest must run.
MAX_SKIPPED = 8

_TRAINING = {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_examples": 16, "rungs": [0.5, 1]}
_CAUSAL_TASK = {"kind": "causal_lm", "name": "arithmetic", "max_length": 48,
                "max_new_tokens": 4, "generate_examples": 8}  # fmt: skip
#: The bundled studies, shrunk: same names and objectives, tiny models built from config.
TINY_STUDIES = {
    "quickstart": {
        "model": "tiny-bert",
        "task": {"name": "sms_spam", "max_length": 32, "metric": "accuracy"},
        "training": {**_TRAINING, "lr": 5.0e-3},
        "search_space": {
            "modules": {"lora": {"rank": [0, 2, 8]}, "serial_adapter": {"size": [0, 8]}},
            "layers": "search",
        },
        "objectives": "accuracy, -trainable_params, -peak_memory",
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "halving": {"eta": 2, "min_peers": 2},
        "n_trials": 4,
    },
    "instruct": {
        "model": "tiny-llama",
        "task": _CAUSAL_TASK,
        "training": _TRAINING,
        "search_space": {"modules": {"lora": {"rank": [2, 4]}, "ia3": {}}},
        "objectives": "exact_match, -trainable_params, -peak_memory",
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "n_trials": 3,
    },
    "qlora": {
        "model": "tiny-llama",
        "task": _CAUSAL_TASK,
        "training": _TRAINING,
        "search_space": {
            "modules": {"lora": {"rank": [4]}},
            # bitsandbytes' CPU kernels need layers of 64 or more: the tiny model is narrower.
            "training": {"gradient_checkpointing": [False, True]},
        },
        "objectives": "exact_match, -trainable_params, -peak_memory",
        "sampler": {"name": "random"},
        "n_trials": 2,
    },
}


@dataclass
class Block:
    """A fenced code block of a page."""

    page: Path
    line: int
    lang: str
    text: str
    skip: str | None

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, with the skip reason written above each (if any)."""
    out: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        skip = SKIP.search(above)
        text = "\n".join(lines[start + 1 : end]) + "\n"
        out.append(Block(page, start + 1, lang, text, skip and skip.group("reason")))
        i = end + 1
    return out


def sandbox(folder: Path) -> dict[str, str]:
    """A folder the pages' commands run in; returns their environment."""
    for name in [".venv", "Makefile", "pyproject.toml", "requirements.lock", "scripts",
                 "search_spaces", "autopeft"]:  # fmt: skip
        (folder / name).symlink_to(ROOT / name)
    for name, study in TINY_STUDIES.items():
        (folder / "studies" / name).mkdir(parents=True)
        (folder / "studies" / name / "study.yaml").write_text(
            yaml.safe_dump({"name": name, **study})
        )
    # A study file and a data file under the names the pages use for "yours".
    (folder / "study.yaml").write_text(
        yaml.safe_dump({"name": "study", **TINY_STUDIES["quickstart"]})
    )
    (folder / "data").mkdir()
    rows = [{"prompt": f"What is {a} plus {a}?", "completion": str(2 * a)} for a in range(40)]
    (folder / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ, PATH=f"{folder / '.venv' / 'bin'}:{os.environ['PATH']}")
    env.pop("AUTOPEFT_STORAGE", None)
    return env


def run_block(block: Block, folder: Path, env: dict[str, str]) -> None:
    """Run one block as written; fail with its output when it fails."""
    if block.lang == "yaml":
        check_yaml(block)
        return
    if block.lang in ("bash", "sh"):
        cmd = ["bash", "-euo", "pipefail", "-c", block.text]
    elif block.lang == "python":
        cmd = [sys.executable, "-c", block.text]
    else:
        return  # plain text (a layout, an output sample)
    out = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (
        f"{block.where()} failed:\n{block.text}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )


def check_yaml(block: Block) -> None:
    """A study file validates; a search space validates; a fragment validates in a study."""
    raw = yaml.safe_load(block.text)
    assert isinstance(raw, dict), block.where()
    if {"name", "model", "task"} <= set(raw):
        api.study_from_dict(raw)
    elif set(raw) <= {"modules", "layers", "training", "budget"} and "modules" in raw:
        api.space_from_dict(raw)
    else:  # a fragment of a study: it replaces those keys of a valid one
        api.study_from_dict({"name": "fragment", **TINY_STUDIES["quickstart"], **raw})


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_of_the_page_runs_as_written(page, tmp_path):
    env = sandbox(tmp_path)
    for block in blocks(page):
        if block.skip is None:
            run_block(block, tmp_path, env)


def test_yaml_blocks_validate_and_skips_say_why():
    skipped = []
    for page in PAGES:
        for block in blocks(page):
            if block.skip:
                skipped.append(block.where())
            elif block.lang == "yaml":
                check_yaml(block)
            assert block.lang in ("bash", "python", "yaml", "text"), block.where()
    assert len(skipped) <= MAX_SKIPPED, skipped


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not re.match(r"[a-z]+://", target):
                assert (page.parent / target).exists(), f"{_page_id(page)} links {target}"


def test_readme_is_short_and_for_users():
    text = (ROOT / "README.md").read_text()
    first_screen = "\n".join(text.splitlines()[:15])
    assert "![" in first_screen and "make run" in text and "make test" in text
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    prose = "\n".join(line for line in prose.splitlines() if not line.startswith("|"))
    for paragraph in re.split(r"\n\s*\n|\n(?=- )", prose):
        assert len(paragraph) <= 600, paragraph[:80]
    python = [b for b in blocks(ROOT / "README.md") if b.lang == "python"]
    assert python and len(python[0].text.splitlines()) <= 10
    # Every CLI verb is in the README's table of commands.
    from autopeft.cli import build_parser

    verbs = next(a for a in build_parser()._actions if a.dest == "command").choices
    for verb in verbs:
        assert f"`autopeft {verb}" in text, verb


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"\.\./shared|/work/shared")
    for name in tracked:
        path = ROOT / name
        if path.is_file() and path.suffix in {".md", ".py", ".toml", ".lock", ".sh", ".yaml", ""}:
            text = path.read_text(errors="replace")
            if name != "tests/test_docs.py" and name != "tests/test_bench_contract.py":
                assert not outside.search(text), name

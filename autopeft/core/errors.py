"""Errors a user can act on: the field path, the rule, the bad value and a hint, in one paragraph."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class AutopeftError(Exception):
    """Base class of every error autopeft reports to a user without a traceback."""


class ConfigError(AutopeftError):
    """One or more problems in a search space or study file.

    Each problem is a paragraph ``path: rule, but got VALUE. Hint: ...`` so the user can find and
    fix the field without reading code.
    """

    def __init__(self, problems: list[Problem] | Problem, source: str | None = None):
        self.problems = problems if isinstance(problems, list) else [problems]
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        """Render all problems, one paragraph each."""
        head = f"{self.source}: " if self.source else ""
        count = len(self.problems)
        title = f"{head}{count} problem{'s' if count != 1 else ''} in the configuration"
        return title + "\n" + "\n".join(p.render() for p in self.problems)


class Problem:
    """A single configuration problem at a dotted field path."""

    def __init__(self, path: str, rule: str, value: Any = None, hint: str | None = None):
        self.path = path or "(top level)"
        self.rule = rule
        self.value = value
        self.hint = hint

    def render(self) -> str:
        """Return the one-paragraph text of the problem."""
        text = f"- {self.path}: {self.rule}"
        if self.value is not None and "but got" not in self.rule:
            text += f", but got {show(self.value)}"
        text = text.rstrip(".") + "."
        if self.hint:
            text += f" Hint: {self.hint.rstrip('.')}."
        return text

    def __repr__(self) -> str:
        return f"Problem({self.render()!r})"


def show(value: Any, limit: int = 80) -> str:
    """Echo a user value compactly (repr, truncated)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Suggest the closest known option, or list the options."""
    options = sorted(options)
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? Known: {', '.join(options)}"
    return f"known: {', '.join(options)}"


class RuleError(ValueError):
    """Raised inside pydantic validators: carries a rule and a hint through pydantic's wrapper."""

    def __init__(self, rule: str, hint: str | None = None):
        self.rule = rule
        self.hint = hint
        super().__init__(rule + (f" ||hint|| {hint}" if hint else ""))


def from_pydantic(exc: Any, prefix: str = "") -> list[Problem]:
    """Translate a pydantic ``ValidationError`` into problems with dotted paths and hints."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err.get("loc", ()) if not _is_union_tag(part)]
        path = ".".join(([prefix] if prefix else []) + loc)
        message = err.get("msg", "invalid value")
        hint = None
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if " ||hint|| " in message:
            message, hint = message.split(" ||hint|| ", 1)
        value = err.get("input")
        if err.get("type") == "extra_forbidden":
            parent = ".".join(loc[:-1]) or "this section"
            message = f"unknown field {loc[-1]!r} in {parent}"
            hint = hint or "check the spelling; see docs/search_space.md for the fields"
            value = None
        elif err.get("type") == "missing":
            message = "this field is required"
            value = None
        problems.append(Problem(path, message, value, hint))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts union member names (e.g. 'IntParam', 'function-after[...]') in locations.
    text = str(part)
    return text[:1].isupper() or text.startswith(("function-", "tagged-union", "union[", "list["))

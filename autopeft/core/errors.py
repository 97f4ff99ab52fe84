"""Errors a user can act on: field path, rule, bad value and a hint, in one paragraph."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from autopeft.core.secrets import masked


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

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[Problem], str | None]]:
        # Exception pickles as cls(*args), i.e. from the rendered text; rebuild from the
        # problems instead, so the error crosses process pools and Ray workers intact.
        return type(self), (self.problems, self.source)

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
        if self.value is not None and not _says(self.rule, self.value):
            text += f", but got {show(self.value)}"
        text = text.rstrip(".") + "."
        if self.hint:
            hint = self.hint.rstrip(".")
            text += f" Hint: {hint}" + ("" if hint.endswith(("?", "!")) else ".")
        return masked(text)  # a storage URL's password is never shown

    def __repr__(self) -> str:
        return f"Problem({self.render()!r})"


def _says(rule: str, value: Any) -> bool:
    """Whether ``rule`` already shows ``value`` (so the paragraph need not repeat it).

    A rule that names the value (``unknown sampler 'bayes'``, ``no such file: /x.csv``) or
    says ``but got`` itself would otherwise echo it a second time. Only quoted strings,
    containers and path-like strings count: a number or a bare word in a rule is too often
    a bound (``greater than 1``) or an ordinary word (``a``) rather than the value.
    """
    if "but got" in rule:
        return True
    if isinstance(value, (str, list, tuple, dict)) and len(repr(value)) > 2 and repr(value) in rule:
        return True
    if not isinstance(value, str) or len(value) < 3 or value.isalpha():
        return False
    return re.search(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", rule) is not None


def show(value: Any, limit: int = 80) -> str:
    """Echo a user value compactly (repr, truncated)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_json(value: Any, limit: int = 80) -> str:
    """Echo a configuration value as JSON (``null``, double quotes), truncated with ``...``."""
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Suggest the closest known option, or list the options."""
    options = sorted(options)
    close = difflib.get_close_matches(str(word), options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? Known: {', '.join(options)}"
    return f"known: {', '.join(options)}"


class _NoValue:
    """The type of ``_NO_VALUE``: one object, also after a pickle round trip."""

    def __reduce__(self) -> str:
        return "_NO_VALUE"


_NO_VALUE = _NoValue()


class RuleError(ValueError):
    """Raised inside validators: a rule, a hint, the bad value and a sub-path below the field.

    pydantic keeps the exception object in the error's context, so :func:`from_pydantic` can
    recover all of it and build the full dotted path.
    """

    def __init__(
        self, rule: str, hint: str | None = None, value: Any = _NO_VALUE, path: str | None = None
    ):
        self.rule, self.hint, self.value, self.path = rule, hint, value, path
        super().__init__(rule)

    def __reduce__(self) -> tuple[type[RuleError], tuple[str, str | None, Any, str | None]]:
        # As ConfigError: keep the hint, value and path across a pickle.
        return type(self), (self.rule, self.hint, self.value, self.path)

    def under(self, prefix: str) -> RuleError:
        """The same error one level deeper: ``prefix.<path>``."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return RuleError(self.rule, self.hint, self.value, path)


def from_pydantic(exc: Any, prefix: str = "") -> list[Problem]:
    """Translate a pydantic ``ValidationError`` into problems with dotted paths and hints."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err.get("loc", ()))
        message = err.get("msg", "invalid value")
        hint = None
        value = err.get("input")
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, RuleError):
            message, hint = cause.rule, cause.hint
            below = str(cause.path).split(".") if cause.path is not None else []
            if cause.value is not _NO_VALUE:
                value = cause.value
            elif below:
                # pydantic's input is the validated section, not the field below it that
                # the rule is about: echo that field's value, never the whole section.
                value = _value_at(value, below, loc[-1:])
            loc += below
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        path = ".".join(([prefix] if prefix else []) + loc)
        if err.get("type") == "extra_forbidden":
            parent = ".".join(loc[:-1]) or "this section"
            message = f"unknown field {loc[-1]!r} in {parent}"
            hint = hint or "check the spelling; see docs/search_space.md for the fields"
            value = None
        elif err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            message = "a domain needs `type: int`, `type: float` or `type: choice`"
            hint = "e.g. {type: int, low: 2, high: 64, log: true} or a list of choices"
        elif err.get("type") == "missing":
            message = "this field is required"
            value = None
        same = problems[-1] if problems else None
        if same and same.path == path and same.value == value and message.startswith(_SHOULD):
            # Each branch of a union failed on the same value: one paragraph naming them all.
            same.rule = f"{same.rule} or {message[len(_SHOULD) :]}"
            continue
        problems.append(Problem(path, message, value, hint))
    return problems


_SHOULD = "Input should be "


def _value_at(data: Any, path: list[str], parent: list[str]) -> Any:
    """The value at ``path`` inside ``data`` (or inside ``data[parent]``), else None."""
    for keys in (path, parent + path):
        node = data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            return node
    return None


#: The names pydantic gives the branches of a scalar union (a choice's values).
_UNION_BRANCHES = ("int", "float", "str", "bool")


def _clean_loc(loc: tuple[Any, ...]) -> list[str]:
    # Drop internal containers (module `domains`/`fixed`) and the discriminator tag that
    # pydantic inserts after `domains`, so paths read like the YAML: modules.lora.rank.low.
    out: list[str] = []
    skip_tag = False
    for part in map(str, loc):
        if part in ("domains", "fixed"):
            skip_tag = part == "domains"
            continue
        if skip_tag and part in ("int", "float", "choice") and len(out) >= 1:
            skip_tag = False
            continue
        if part in _UNION_BRANCHES and out and out[-1].isdigit():
            continue  # the branch of a choice value's union: not a field of the file
        out.append(part)
    return out

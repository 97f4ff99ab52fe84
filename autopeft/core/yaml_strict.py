"""The YAML a study file may hold: PyYAML's safe loader with the traps of hostile input closed.

- a key written twice in one mapping is an error naming both lines (PyYAML keeps the last);
- numbers read as YAML 1.2 does: ``1.0e3`` and ``1e-4`` are floats (PyYAML's YAML 1.1 reads
  them as strings, which then fail with a confusing type error);
- integers beyond 64 bits are refused (``10**400`` overflows every float conversion);
- at most :data:`MAX_NODES` values once aliases are expanded, and :data:`MAX_DEPTH` levels
  of nesting: an alias bomb (a few hundred bytes that expand to billions of values) or deep
  nesting would otherwise hang validation or end in a RecursionError.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_INT = 2**63


class YamlProblem(ValueError):
    """A rule of this loader broken at ``line`` (1-based)."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


class StrictLoader(yaml.SafeLoader):
    """A safe loader with duplicate keys, big integers and nesting depth checked."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing nesting deeper than :data:`MAX_DEPTH`."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlProblem(f"nesting deeper than {MAX_DEPTH} levels", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping; a key written twice is an error naming both lines."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise YamlProblem(
                        f"the key {key!r} appears twice in one mapping (lines {seen[key]} and "
                        f"{line}); YAML would silently keep the last",
                        line,
                    )
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error follows
                pass
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An integer that fits 64 bits."""
        value = super().construct_yaml_int(node)
        if abs(value) >= MAX_INT:
            raise YamlProblem(
                f"the integer {node.value[:20]}{'...' if len(node.value) > 20 else ''} is "
                "beyond 64 bits",
                node.start_mark.line + 1,
            )
        return value


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
# YAML 1.2's float: 1e3, 1.0e3 and 1.e-3 are numbers (YAML 1.1 needs a dot and a sign).
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load(text: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; its size counted with aliases expanded."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node, {}) > MAX_NODES:
            raise YamlProblem(
                f"more than {MAX_NODES:,} values once its aliases (*name) are expanded: an "
                "alias of an alias can make a tiny file enormous",
                node.start_mark.line + 1,
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values under ``node`` with every alias expanded (each node's size computed once)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a node that contains itself (a cycle) counts once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]

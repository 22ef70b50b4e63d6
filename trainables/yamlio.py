"""Reading YAML that a user wrote (a spec, a `--set` value, a trial's config.yaml), within bounds.

`yaml.safe_load` runs no code, but hostile YAML still costs: an alias bomb ("billion laughs": nine
levels of ten aliases each) is a few hundred bytes that every walk over the data (validation,
hashing, printing) expands to 10^9 nodes, and 100,000 nested brackets overflow the composer's
recursion. `load_yaml` is `safe_load` semantics with three bounds, each refused with a
`yaml.MarkedYAMLError` that says which (and where), before anything walks the data:

- the text: at most `MAX_BYTES` (1 MiB) of UTF-8;
- nesting: at most `MAX_DEPTH` levels of collections, counted as written and through aliases;
- size: at most `MAX_NODES` nodes once every alias is expanded (aliases are welcome, bombs are not).

The counting is linear in the size of the text (each distinct node is measured once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000


class YamlLimitError(yaml.MarkedYAMLError):
    """YAML refused for its size, depth or alias expansion (not for its syntax)."""


def _limit(problem: str, mark: Any = None) -> YamlLimitError:
    return YamlLimitError(problem=problem, problem_mark=mark)


def check_size(text: str | bytes, what: str = "YAML text") -> None:
    """YamlLimitError when `text` is over `MAX_BYTES` (as UTF-8)."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise _limit(f"{what} is {size:,} bytes; at most {MAX_BYTES:,} (1 MiB) are read")


class BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than `MAX_DEPTH` or larger than `MAX_NODES` nodes
    with their aliases expanded (see the module's docstring)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _limit(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _measure(node, 1, {}, set())
        return node


def _measure(node: Any, depth: int, seen: dict[int, tuple[int, int]], open_: set[int]) -> tuple[int, int]:
    """(nodes, levels) of `node` with every alias expanded (itself included); YamlLimitError past the bounds.
    `depth`: the level `node` is at. `seen` memoises measured nodes (an alias is the same node object as its
    anchor), `open_` holds the nodes on the current path (a node inside itself is a recursive alias)."""
    key = id(node)
    if key in open_:
        raise _limit("an alias refers to the collection that contains it (a recursive alias)", node.start_mark)
    size, height = seen.get(key) or (1, 1)
    if key not in seen and not isinstance(node, yaml.ScalarNode):
        open_.add(key)
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        for child in children:
            if depth >= MAX_DEPTH:
                raise _limit(f"nested more than {MAX_DEPTH} levels deep (aliases expanded)", child.start_mark)
            child_size, child_height = _measure(child, depth + 1, seen, open_)
            size, height = size + child_size, max(height, 1 + child_height)
            if size > MAX_NODES:
                raise _limit(f"more than {MAX_NODES:,} values once its aliases are expanded (an alias bomb?); "
                             "use fewer or smaller aliases", node.start_mark)
        open_.discard(key)
        seen[key] = size, height
    if depth + height - 1 > MAX_DEPTH:
        raise _limit(f"nested more than {MAX_DEPTH} levels deep (aliases expanded)", node.start_mark)
    return size, height


def read_bounded(path: Path) -> bytes:
    """The bytes of the file at `path`, reading no more than `MAX_BYTES` + 1 of them: YamlLimitError when it is
    larger (a huge file is refused without being read into memory); OSError when it cannot be read."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise _limit(f"the file is larger than {MAX_BYTES:,} bytes (1 MiB), the most that is read")
    return raw


def describe(exc: YamlLimitError) -> str:
    """`line L, column C: what is over which bound` (the mark only when there is one)."""
    mark = exc.problem_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}" if mark else str(exc.problem)


def load_yaml(text: str, loader: type[BoundedSafeLoader] = BoundedSafeLoader) -> Any:
    """`text` as data (`yaml.safe_load` semantics) within the bounds; yaml.YAMLError when it is not valid
    YAML, YamlLimitError (one of them) when it is over a bound."""
    check_size(text)
    return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "BoundedSafeLoader", "YamlLimitError", "check_size", "describe",
           "load_yaml", "read_bounded"]

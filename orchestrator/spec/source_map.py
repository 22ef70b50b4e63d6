"""Where things are in a spec file, and how an error points there.

A problem in a spec is a `FieldError` at a spec PATH (`("factors", "mix.selection", 2)`, printed
`factors.mix.selection[2]`); `SourceMap.fail` turns it into the one `UserError` the CLI prints,

    FILE: FIELD.PATH (line N): what is wrong (got X); allowed: ...

with the line of the deepest YAML node along the path (dotted keys match nested maps too), or
`(from --set KEY)` for a value that came from the command line. YAML is read with `yaml.safe_load`
semantics only, within `trainables.yamlio`'s bounds (size, nesting, alias expansion), plus: a key given
twice in one mapping is an error (plain PyYAML keeps the last one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from trainables.yamlio import BoundedSafeLoader, YamlLimitError, describe, load_yaml

from ..errors import UserError

#: a path into a spec: field names, dotted config keys and list indices
SpecPath = tuple[str | int, ...]

#: top-level keys a spec file may use
USER_FIELDS = ("name", "description", "experiment", "base", "factors", "seeds", "search", "scheduler", "asha",
               "resources", "metric", "mode", "max_failures",
               "stall_timeout")


class FieldError(ValueError):
    """A problem at a spec path; raised inside the spec's validators and checks, turned into a `UserError`
    (file, path, line) by `SourceMap.fail`."""

    def __init__(self, path: SpecPath, message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def format_path(path: SpecPath) -> str:
    """("factors", "mix.selection", 2) -> "factors.mix.selection[2]"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def level(value: Any) -> str:
    """A factor level as people write it: strings bare, everything else as YAML-ish JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def arm_label(levels: Mapping[str, Any]) -> str:
    """`mix.preset=cutmix × mix.pairing=greedy` (`(base)` for the single arm of a spec without factors)."""
    return " × ".join(f"{k}={level(v)}" for k, v in levels.items()) or "(base)"


class _UniqueKeyLoader(BoundedSafeLoader):
    """The bounded SafeLoader, refusing also duplicate mapping keys (plain PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]}); give each key once",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, source: str) -> Any:
    """The YAML `text` as data; a syntax error, or text over the bounds, is a UserError with its line and column."""
    try:
        return load_yaml(text, loader=_UniqueKeyLoader)
    except YamlLimitError as exc:
        raise UserError(f"{source}: refused: {describe(exc)}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or "syntax error"
        if exc.context:
            ctx_mark = exc.context_mark
            started = f" started at line {ctx_mark.line + 1}" if ctx_mark and ctx_mark.line != mark.line else ""
            problem += f" ({exc.context}{started})"
        raise UserError(f"{source}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML: {exc}") from None


class SourceMap:
    """Where a spec came from, for error messages: its source name, its text (lines of its YAML nodes)
    and which spec paths `--set` gave (formatted path -> the `--set` key)."""

    def __init__(self, source: str, text: str, set_paths: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.text = text
        self.set_paths = dict(set_paths or {})
        self._root: Any = None

    def fail(self, path: SpecPath, message: str) -> UserError:
        """The UserError for a problem at `path`: `SOURCE: PATH (line N): message`."""
        where = format_path(path)
        origin = next((self.set_paths[p] for p in (format_path(path[:i]) for i in range(len(path), 0, -1))
                       if p in self.set_paths), None)
        line = None if origin is not None else self.line_of(path)
        shown = f"{where} (from --set {origin})" if origin is not None else f"{where} (line {line})" if line else where
        text = f"{self.source}: {shown}: {message}" if where else f"{self.source}: {message}"
        return UserError(text, where=where or None, line=line)

    def line_of(self, path: SpecPath) -> int | None:
        """1-based line of the deepest YAML node along `path`; None when the text has no such node."""
        if self._root is None:
            try:
                self._root = yaml.compose(self.text, Loader=BoundedSafeLoader) or False
            except yaml.YAMLError:
                self._root = False
        return _line_in(self._root, list(path)) if self._root else None


def _line_in(node: Any, parts: list[str | int]) -> int | None:
    """1-based line of the deepest YAML node along `parts`; dotted keys match nested maps too."""
    if not parts:
        return None
    part, rest = parts[0], parts[1:]
    if isinstance(part, int):
        if isinstance(node, yaml.SequenceNode) and 0 <= part < len(node.value):
            item = node.value[part]
            return _line_in(item, rest) or item.start_mark.line + 1
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key == part:
            return _line_in(value_node, rest) or key_node.start_mark.line + 1
    for key_node, value_node in node.value:  # `optim.lr` in the path, `optim: {lr: ...}` in the file
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key and part.split(".")[: key.count(".") + 1] == key.split("."):
            return _line_in(value_node, [part[len(key) + 1:], *rest]) or key_node.start_mark.line + 1
    return None


__all__ = ["USER_FIELDS", "FieldError", "SourceMap", "SpecPath", "arm_label", "format_path", "level", "read_yaml"]

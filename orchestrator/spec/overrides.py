"""`--set KEY=VALUE` overrides merged into a raw spec, before it is validated.

A key that names a spec field sets it (`seeds=3`, `resources.gpu=0.5`,
`factors.mix.pairing=[random, greedy]`, `search.space.optim.lr=loguniform(0.01,0.3)`); any other key
is a base config key (`optim.lr=0.1`). Values arrive typed: the CLI reads the text with
`trainables.config.parse_set`, the one `--set` reader (`"123"` stays a string), and nothing here
reads them again. A value from `--set` is reported as `(from --set KEY)` instead of a line
(`set_paths`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.config import ConfigError, flatten

from ..errors import UserError
from .source_map import USER_FIELDS, level


def _target(key: str) -> tuple[str, str]:
    """(spec field, the rest of the key): `seeds` -> (seeds, ""), `optim.lr` -> (base, optim.lr)."""
    head, _, rest = key.partition(".")
    return (head, rest) if head in USER_FIELDS else ("base", key)


def set_paths(overrides: Mapping[str, Any]) -> dict[str, str]:
    """Formatted spec path -> the `--set` key that gave it (`base.optim.lr` -> `optim.lr`)."""
    out = {}
    for key in overrides:
        head, rest = _target(key)
        out[f"{head}.{rest}" if rest else head] = key
    return out


def _flat(section: Any) -> dict[str, Any] | None:
    """A section as dotted keys ({} for None); None when it is not a valid mapping (reported later, as it is)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        return None
    try:
        return flatten(section)
    except ConfigError:
        return None


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The raw spec `data` with the `--set` values put in; UserError for a key that cannot be set."""
    data = dict(data)
    for key, value in overrides.items():
        if not isinstance(key, str) or not key.strip():
            raise UserError(f"{source}: --set {key!r}: expected KEY=VALUE with a non-empty key")
        if key == "seed":
            raise UserError(f"{source}: --set seed: seeds are their own axis; use --set seeds=N (0..N-1) or "
                            f"--set 'seeds=[0, 1]'")
        head, rest = _target(key)
        factors = _flat(data.get("factors")) or {}
        if head == "base" and rest in factors:
            levels = factors[rest]
            shown = ", ".join(map(level, levels)) if isinstance(levels, list) else level(levels)
            raise UserError(f"{source}: --set {key}: {rest} is a factor of this spec (levels: {shown}); it cannot "
                            f"also be fixed - change its levels with --set 'factors.{rest}=[...]'")
        section = data.get(head)
        if head == "search" and isinstance(section, str):
            section = {"algorithm": section}
        sub, _, space_key = rest.partition(".")  # search.space.<config key>
        if not rest:
            data[head] = value
        elif head in ("base", "factors"):
            flat = _flat(section)
            data[head] = section if flat is None else {**flat, rest: value}
        elif head == "search" and sub == "space" and space_key and isinstance(section, Mapping | None):
            space = _flat((section or {}).get("space"))
            if space is not None:
                data["search"] = {**(section or {}), "space": {**space, space_key: value}}
        else:
            data[head] = {**(section if isinstance(section, Mapping) else {}), rest: value}
    return data


__all__ = ["apply_overrides", "set_paths"]

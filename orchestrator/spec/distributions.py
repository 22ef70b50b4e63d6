"""The search-space mini-language of optuna specs: `search.space` values -> `Distribution`s.

    parse_distribution("loguniform(0.01, 0.3)")      # Distribution(kind="loguniform", low=0.01, high=0.3)
    parse_distribution("int(2, 8)")                  # both bounds inclusive
    parse_distribution("choice(cutmix, saliencymix)") or parse_distribution(["cutmix", "saliencymix"])
    str(dist)                                        # the canonical spec string, read back by parse_distribution

Choice values are YAML scalars (`choice(0.1, 0.2)` holds floats); arguments nest
(`choice(beta(1,1), uniform(0,1))` is two strings). Every problem is a ValueError that says which
forms exist (`DIST_FORMS`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from trainables.config import show
from trainables.mixing.registry import did_you_mean
from trainables.yamlio import YamlLimitError, describe, load_yaml

from .source_map import level

DIST_FORMS = "loguniform(a,b) with 0<a<b, uniform(a,b) with a<b, int(a,b) with integers a<b (both inclusive), " \
             "choice(x,y,...) or a YAML list [x, y, ...]"
KINDS = ("loguniform", "uniform", "int", "choice")


class Distribution(BaseModel):
    """One dimension of an optuna search space; `str()` gives the canonical spec string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["loguniform", "uniform", "int", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"choice({', '.join(level(c) for c in self.choices)})"
        return f"{self.kind}({self.low:g},{self.high:g})"

    def probe_values(self) -> list[Any]:
        """The values that bound what the distribution can produce (checked against the registries)."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def to_tune(self) -> Any:
        """The Ray Tune domain (`int(a,b)` is inclusive of b, so it maps to `tune.randint(a, b + 1)`)."""
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.kind == "uniform":
            return tune.uniform(self.low, self.high)
        if self.kind == "int":
            return tune.randint(int(self.low), int(self.high) + 1)
        return tune.choice(list(self.choices))


def split_args(text: str) -> list[str]:
    """Split `a, beta(1,1), 'x,y'` at the top-level commas (parentheses, brackets and quotes nest)."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    parts.append(cur.strip())
    return [] if parts == [""] else parts


def parse_distribution(value: Any) -> Distribution:
    """Parse `loguniform(a,b)`, `uniform(a,b)`, `int(a,b)`, `choice(x,...)` or a YAML list; ValueError otherwise."""
    if isinstance(value, Distribution):
        return value
    if isinstance(value, list | tuple):
        choices = list(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*\((.*)\)\s*", value, flags=re.S)  # the spec's own syntax
        if not m:
            raise ValueError(f"bad distribution {value!r}; expected {DIST_FORMS}")
        kind, args = m.group(1), split_args(m.group(2))
        if kind not in KINDS:
            raise ValueError(f"unknown distribution {kind!r}{did_you_mean(kind, ['loguniform', 'uniform', 'int'])}"
                             f" in {value!r}; expected {DIST_FORMS}")
        if kind != "choice":
            return _range_distribution(kind, args, value)
        choices = []
        for arg in args:
            try:
                choices.append(load_yaml(arg))
            except YamlLimitError as exc:
                raise ValueError(f"choice {show(arg, 40)} in {value!r} is refused: {describe(exc)}") from None
            except yaml.YAMLError:
                choices.append(arg)
    else:
        raise ValueError(f"expected a distribution string ({DIST_FORMS}), got {show(value)}; "
                         f"a fixed value belongs in base")
    if not choices:
        raise ValueError("choice needs at least one value, e.g. choice(cutmix, saliencymix)")
    keys = [json.dumps(c, sort_keys=True, default=str) for c in choices]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ValueError(f"choice lists {level(choices[i])!s} twice; values must be distinct")
    return Distribution(kind="choice", choices=tuple(choices))


def _range_distribution(kind: str, args: list[str], text: str) -> Distribution:
    if len(args) != 2:
        raise ValueError(f"{kind} takes two numbers {kind}(a,b), got {len(args)} in {text!r}; expected {DIST_FORMS}")
    try:
        low, high = (int(a) if kind == "int" else float(a) for a in args)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        raise ValueError(f"{kind} bounds must be {what}, got {text!r}; expected {DIST_FORMS}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(f"{text!r}: need a < b; expected {DIST_FORMS}")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{text!r}: loguniform needs 0 < a < b; expected {DIST_FORMS}")
    return Distribution(kind=kind, low=low, high=high)  # type: ignore[arg-type]


__all__ = ["DIST_FORMS", "KINDS", "Distribution", "parse_distribution"]

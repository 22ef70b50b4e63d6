"""`ConfigError`: a config key or value is wrong, as data - which keys, what is wrong, what is allowed.

Raised where keys and values are compared (the mixing config here, the training config, dataset and
model options); whoever reports it reads `keys` to say WHERE (the spec loader maps them to spec lines,
the CLI prints `str(exc)`), never the message. A `ValueError`, so callers that catch ValueError keep
working. It lives in the mixing core, the bottom of `orchestrator -> trainables -> trainables.mixing`,
so that every layer can raise and catch the one class; `trainables.config` re-exports it.

    raise ConfigError("mix.prob", "1.5 is out of range [0.0, 1.0]")
    # str: "mix.prob: 1.5 is out of range [0.0, 1.0]"
    raise ConfigError("mix.scope", "unknown value 'batch'", allowed=["per_sample", "per_batch"])
    # str: "mix.scope: unknown value 'batch'; allowed: per_sample, per_batch"
    raise ConfigError(("mix.pairing", "mix.mask"), "mix.pairing=assignment cannot be used with mix.mask=blend")
    # a combination: the message names its keys itself, so str is the message
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A config key or value is wrong.

    Args:
        keys: the dotted config key at fault (`"optim.lr"`), or, for a combination that is wrong only
            together, every key involved (the message then names them itself); `()` when no key is
            to blame (an unreadable file, a malformed `--set`).
        message: what is wrong, without the key (`"must be > 0 (got -1)"`).
        allowed: what would be accepted (names, values or keys), shown after the message; None when
            there is no list to give, `()` prints "(none)".
        context: other keys whose values make `keys` wrong here (`dataset` for an unknown `data.*`
            option): a different value of them may make the same key right.
        unknown: the key itself is not accepted (here), as opposed to its value.
    """

    def __init__(self, keys: str | Sequence[str], message: str, allowed: Sequence[str] | None = None, *,
                 context: Sequence[str] = (), unknown: bool = False) -> None:
        self.keys: tuple[str, ...] = (keys,) if isinstance(keys, str) else tuple(keys)
        self.message = message
        self.allowed: tuple[str, ...] | None = None if allowed is None else tuple(allowed)
        self.context: tuple[str, ...] = tuple(context)
        self.unknown = unknown
        super().__init__(str(self))

    @property
    def detail(self) -> str:
        """The message and what is allowed, without the key (for reports that say where by themselves)."""
        if self.allowed is None:
            return self.message
        return f"{self.message}; allowed: {', '.join(self.allowed) or '(none)'}"

    @property
    def involved(self) -> tuple[str, ...]:
        """Every key whose value takes part: `keys`, then `context`."""
        return self.keys + tuple(k for k in self.context if k not in self.keys)

    def __str__(self) -> str:
        return f"{self.keys[0]}: {self.detail}" if len(self.keys) == 1 else self.detail

    def __reduce__(self):  # Ray pickles exceptions; the default would call ConfigError(str(self))
        return (_rebuild, (self.keys, self.message, self.allowed, self.context, self.unknown))


def _rebuild(keys, message, allowed, context, unknown) -> ConfigError:
    return ConfigError(keys, message, allowed, context=context, unknown=unknown)


def check_int(value: Any, where: str = "", *, low: int | None = None, high: int | None = None,
              allow_none: bool = False, key: str | None = None) -> Any:
    """`value` as an int within [low, high] (None passes when `allow_none`): the one integer check of
    config values (mixing factors, `data.*` and `model.*` options).

    Booleans and strings are refused, a float that holds an integer (`32.0`) is taken. The complaint is
    "must be an integer, got 1.5" or "must be in [1, 64], got 0"; with `key` (a dotted config key) it
    is raised as `ConfigError(key, complaint)`, otherwise as `ValueError(f"{where} {complaint}")`
    (`where`: e.g. "synthetic_salient: data.pad").
    """

    def fail(complaint: str) -> ValueError:
        return ConfigError(key, complaint) if key is not None else ValueError(f"{where} {complaint}")

    if value is None and allow_none:
        return None
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral:
        raise fail(f"must be an integer{' or null' if allow_none else ''}, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise fail(f"must be in {bounds}, got {value}")
    return value


__all__ = ["ConfigError", "check_int"]

"""The registry cross-check: which spec line a training-config error comes from.

Every config a spec will run is validated by `trainables.config.validate_config`, whose
`ConfigError` says which config KEYS are at fault (and which others take part); this module maps
those keys back to the spec - `base.<key>`, one level `factors.<key>[i]`, a factor, a combination of
levels, `search.space.<key>` - by trying the parts of the spec on their own:

1. the base alone (with factors or a space, its failure may be context a level supplies);
2. each factor level with the base alone: a level that is wrong, or does not go with the base;
3. each search-space dimension at its bounds / choices (optuna specs);
4. a failing trial of the grid (`expand` resolves them all): a level that is wrong in itself or fails
   everywhere, or the combination of the levels its error involves.

Every finding is a `FieldError` at a spec path; the loader adds file and line.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from trainables.config import ConfigError, TrainConfig, validate_config

from .source_map import FieldError, level


def try_config(config: Mapping[str, Any]) -> TrainConfig | ConfigError:
    """The resolved config, or the ConfigError that refuses it."""
    try:
        return validate_config(config)
    except ConfigError as exc:
        return exc


def _base_fault(err: ConfigError, base: Mapping[str, Any]) -> FieldError | None:
    """`base.KEY` when the error is about one key and the base sets it; None otherwise."""
    if len(err.keys) == 1 and err.keys[0] in base:
        return FieldError(("base", err.keys[0]), err.detail)
    return None


def _base_alone(spec) -> ConfigError | None:
    """Step 1: the base with the first seed; raised at once when nothing else can supply context."""
    err = try_config({**spec.base, "seed": spec.seeds[0]})
    if isinstance(err, ConfigError) and not spec.factors and not spec.search.space:
        raise _base_fault(err, spec.base) or FieldError(("base",), str(err))
    return err if isinstance(err, ConfigError) else None


def check_search(spec) -> None:
    """The base and every dimension of an optuna spec's `search.space` (steps 1 and 3)."""
    _base_alone(spec)
    base, seed, space = spec.base, spec.seeds[0], spec.search.space
    first = {k: d.probe_values()[0] for k, d in space.items()}
    for key, dist in space.items():
        for value in dist.probe_values():
            err = try_config({**base, **first, key: value, "seed": seed})
            if not isinstance(err, ConfigError):
                continue
            if err.keys == (key,) and err.unknown:
                raise FieldError(("search", "space", key), err.detail)
            fault = _base_fault(err, base)
            if fault is not None:
                raise fault
            raise FieldError(("search", "space", key), f"{dist} includes {level(value)}, which is invalid: {err}")


def diagnose_grid(spec, arms: Sequence[Mapping[str, Any]], results: Sequence[TrainConfig | ConfigError]) -> FieldError:
    """Where the first failing arm of a grid goes wrong (steps 1, 2 and 4). `results[i]` is what
    `try_config` gave for `arms[i]` (base + arm + first seed); at least one is a ConfigError."""
    base, seed, factors = spec.base, spec.seeds[0], spec.factors
    base_err = _base_alone(spec)
    failed_alone: set[tuple[str, int]] = set()
    for f, levels in factors.items():
        for i, value in enumerate(levels):
            err = try_config({**base, f: value, "seed": seed})
            if not isinstance(err, ConfigError):
                continue
            failed_alone.add((f, i))
            if err.keys == (f,):
                raise_at = ("factors", f) if err.unknown else ("factors", f, i)
                return FieldError(raise_at, err.detail)
            if len(err.keys) == 1 and err.keys[0] in base:
                key = err.keys[0]
                if base_err is None or f in err.involved:  # the base is fine without this level
                    return FieldError(("factors", f, i), f"{f}={level(value)} does not go with base.{key}: {err}")
                return FieldError(("base", key), err.detail)
    keys = list(factors)
    indices = list(itertools.product(*(range(len(v)) for v in factors.values())))  # the order of `spec.arms()`
    at = next(n for n, r in enumerate(results) if isinstance(r, ConfigError))
    arm, err = arms[at], results[at]
    fault = _base_fault(err, base)
    if fault is not None:
        return fault
    involved = [f for f in factors if f in err.involved]
    if len(err.keys) == 1 and involved == [err.keys[0]]:  # the level is wrong in itself, whatever the others are
        f = err.keys[0]
        return FieldError(("factors", f) if err.unknown else ("factors", f, indices[at][keys.index(f)]), err.detail)
    if len(involved) == 1:
        f = involved[0]
        i = indices[at][keys.index(f)]
        same_level = [r for idx, r in zip(indices, results) if idx[keys.index(f)] == i]
        if (f, i) in failed_alone and all(isinstance(r, ConfigError) for r in same_level):
            others = "with the base config" if len(factors) == 1 else "with every level of the other factors"
            return FieldError(("factors", f, i), f"{f}={level(arm[f])} fails {others}: {err}")
    if len(involved) < 2:
        involved = list(factors)
    combo = " × ".join(f"{f}={level(arm[f])}" for f in involved)
    return FieldError(("factors",), f"the combination {combo} is invalid: {err}")


__all__ = ["check_search", "diagnose_grid", "try_config"]

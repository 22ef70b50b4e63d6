"""Loading a spec: a YAML file, or the name of one shipped in `search_spaces/`, -> a checked `SweepSpec`.

    spec = load_spec("selection_schemes")                  # shipped spec, by name
    spec = load_spec("my_sweep.yaml", {"epochs": 2})       # a file, with (typed) `--set` overrides

A spec is checked completely here: its own fields (pydantic), and every training config it will run -
for a grid every trial (`expand`, kept on the spec), for optuna the base and each dimension of the
space at its bounds (`check`) - against the trainables' registries, so a typo fails before Ray starts,
not in trial 37 an hour later. Every problem raises ONE `UserError` of the form

    FILE: FIELD.PATH (line N): what is wrong (got X); allowed: ...
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trainables.config import describe_validation_error, known_keys, show
from trainables.mixing.registry import did_you_mean
from trainables.yamlio import YamlLimitError, describe, load_yaml, read_bounded

from ..errors import UserError
from .check import check_search
from .expand import expand, is_grid
from .model import NAME_RULE, AshaSpec, Resources, SearchSpec, SweepSpec
from .overrides import apply_overrides, set_paths
from .source_map import USER_FIELDS, FieldError, SourceMap, read_yaml

SPEC_PACKAGE = "search_spaces"
#: the spec fields that are sections with keys of their own
SECTIONS = {"search": SearchSpec, "resources": Resources, "asha": AshaSpec}


def _pydantic_to_user(exc: ValidationError, where: SourceMap) -> UserError:
    """The first of pydantic's errors, at the spec path its `loc` names."""
    err = exc.errors()[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, FieldError):
        return where.fail(original.path, original.message)
    path, kind = tuple(err["loc"]), err["type"]
    if kind == "missing":
        hint = f": give the sweep a name of {NAME_RULE}, e.g. name: my_sweep" if path == ("name",) else ""
        return where.fail(path, f"required field is missing{hint}")
    if kind == "extra_forbidden":
        section = SECTIONS.get(str(path[0])) if len(path) > 1 else None
        allowed = list(section.model_fields) if section else list(USER_FIELDS)
        return where.fail(path, f"unknown key{did_you_mean(str(path[-1]), allowed)}; allowed: {', '.join(allowed)}")
    if kind in ("model_type", "dict_type"):
        section = SECTIONS.get(str(path[-1]))
        keys = f" with keys {', '.join(section.model_fields)}" if section else ""
        return where.fail(path, f"expected a mapping{keys} (got {show(err.get('input'))})")
    message, allowed = describe_validation_error(err, SweepSpec)
    return where.fail(path, message if allowed is None else f"{message}; allowed: {', '.join(allowed)}")


def _unknown_top_level(key: Any) -> str:
    known = known_keys()
    if str(key) in known or str(key) in {k.partition(".")[0] for k in known}:
        return (f"{key!r} is a training config key, not a spec field: put it under `base:` (fixed for every "
                f"trial) or `factors:` (varied); spec fields: {', '.join(USER_FIELDS)}")
    return f"unknown top-level key{did_you_mean(str(key), list(USER_FIELDS))}; allowed: {', '.join(USER_FIELDS)}"


def parse_spec(text: str, source: str = "<string>", overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Validate the YAML `text` of a spec (see `load_spec`); `source` names it in errors."""
    overrides = dict(overrides or {})
    where = SourceMap(source, text, set_paths(overrides))
    data = read_yaml(text, source)
    if data is None:
        raise UserError(f"{source}: the spec is empty; a sweep spec is a YAML mapping with at least `name:` "
                        f"(e.g. `name: my_sweep`), usually with base:, factors: and seeds:")
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of spec fields ({', '.join(USER_FIELDS)}), "
                        f"got {type(data).__name__} {show(data, 40)}")
    for key in data:
        if key not in USER_FIELDS:
            raise where.fail((str(key),), _unknown_top_level(key))
    if overrides:
        data = apply_overrides(data, overrides, source)
    try:
        spec = SweepSpec.model_validate({**data, "source": source, "text": text, "overrides": overrides})
        if is_grid(spec):
            expand(spec)  # resolves every trial, once (the spec keeps them); UserError with the spec line
        else:
            check_search(spec)
    except ValidationError as exc:
        raise _pydantic_to_user(exc, where) from None
    except FieldError as exc:
        raise where.fail(exc.path, exc.message) from None
    return spec


def _read(path: Path, source: str) -> str:
    try:
        raw = read_bounded(path)
    except OSError as exc:
        raise UserError(f"{source}: cannot read the spec: {exc.strerror or exc}") from None
    except YamlLimitError as exc:
        raise UserError(f"{source}: refused: {describe(exc)}; a spec is a few KiB") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{source}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                        f"{exc.start}); save the spec as UTF-8") from None


def _shipped() -> dict[str, Any]:
    """name -> Traversable of every spec in the `search_spaces` package."""
    root = resources.files(SPEC_PACKAGE)
    return {p.name.rsplit(".", 1)[0]: p for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith((".yaml", ".yml"))}


def list_specs() -> list[tuple[str, str]]:
    """(name, description) of every shipped spec, sorted by name."""
    out = []
    for name, item in _shipped().items():
        try:
            data = load_yaml(item.read_text(encoding="utf-8"))
            desc = data.get("description", "") if isinstance(data, dict) else ""
        except (yaml.YAMLError, UnicodeDecodeError):
            desc = "(invalid YAML)"
        out.append((name, str(desc or "").strip()))
    return out


def load_spec(ref: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Load and check a spec: `ref` is a path to a .yaml/.yml file, or the name of a shipped spec
    (`search_spaces/<name>.yaml`). `overrides` (`--set KEY=VALUE`, values already typed: see
    `trainables.config.parse_set`) set base config keys, or spec fields (`seeds`, `resources.gpu`,
    `factors.mix.pairing`, `search.num_trials`, ...)."""
    path = Path(ref)
    text_ref = str(ref)
    if path.is_file():
        return parse_spec(_read(path, text_ref), source=text_ref, overrides=overrides)
    shipped = _shipped()
    looks_like_path = isinstance(ref, Path) or text_ref.endswith((".yaml", ".yml")) or "/" in text_ref \
        or "\\" in text_ref
    if not looks_like_path and text_ref in shipped:
        item = shipped[text_ref]
        return parse_spec(item.read_text(encoding="utf-8"), source=f"{SPEC_PACKAGE}:{text_ref}", overrides=overrides)
    names = list(shipped)
    if path.is_dir():
        what = f"{text_ref}: is a directory, not a spec file"
    elif looks_like_path:
        what = f"{text_ref}: no such spec file"
    else:
        what = f"{text_ref!r}: not a spec file and not a shipped spec{did_you_mean(text_ref, names)}"
    raise UserError(f"{what}; give a path to a .yaml file or the name of a shipped spec: {', '.join(names)}")


__all__ = ["SPEC_PACKAGE", "list_specs", "load_spec", "parse_spec"]

"""Sweep specs: a YAML file (or the name of one shipped in `search_spaces/`) -> a checked, frozen
`SweepSpec`, and a grid spec -> its trials, each resolved once.

    spec = load_spec("selection_schemes")                     # shipped spec, by name
    spec = load_spec("my_sweep.yaml", parse_set(["epochs=2"]))  # a file, with `--set` overrides
    trials = expand(spec)                                     # [Trial(cfg, config_hash, run_hash, name, ...)]

Modules, in the order they depend on each other:
- `source_map`: spec paths, the YAML line map and duplicate-key loader, `FieldError` -> `UserError`;
- `distributions`: the `search.space` mini-language (`loguniform(a,b)`, `int(a,b)`, `choice(...)`);
- `overrides`: `--set` values merged into a raw spec;
- `check`: the registry cross-check - a training config's `ConfigError.keys` -> spec lines;
- `expand`: a grid -> its `Trial`s (resolved once, duplicates refused);
- `model`: the pydantic models (`SweepSpec` and its sections);
- `load`: `load_spec`, `parse_spec`, `list_specs`.
"""

from .distributions import DIST_FORMS, Distribution, parse_distribution
from .expand import MAX_NAME, Trial, expand, is_grid
from .load import list_specs, load_spec, parse_spec
from .model import MAX_TRIALS, METRICS, AshaSpec, Resources, SearchSpec, SweepSpec
from .source_map import _UniqueKeyLoader, arm_label, format_path

__all__ = [
    "DIST_FORMS",
    "MAX_NAME",
    "MAX_TRIALS",
    "METRICS",
    "AshaSpec",
    "Distribution",
    "Resources",
    "SearchSpec",
    "SweepSpec",
    "Trial",
    "_UniqueKeyLoader",
    "arm_label",
    "expand",
    "format_path",
    "is_grid",
    "list_specs",
    "load_spec",
    "parse_distribution",
    "parse_spec",
]

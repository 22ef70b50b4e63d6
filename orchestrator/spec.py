"""Sweep specs: a YAML file (or the name of one shipped in `search_spaces/`) -> a validated, frozen `SweepSpec`.

    spec = load_spec("selection_schemes")                  # shipped spec, by name
    spec = load_spec("my_sweep.yaml", {"epochs": 2})       # a file, with `--set` overrides
    spec.factor_levels()   # {"mix.selection": ["salient_to_corresponding", ...]}

A spec is checked completely at load time: its own fields (pydantic), and every training config it
will run - base + each factor level + each combination - against the trainables' registries
(`trainables.config.validate_config`), so a typo fails here, before Ray starts, and not in trial 37
an hour later. Every problem raises ONE `UserError` of the form

    FILE: FIELD.PATH (line N): what is wrong (got X); allowed: ...

YAML syntax errors carry their line and column; factor values are addressed by their index in the
list (`factors.mix.selection[2]`); a combination of levels that is invalid only together names every
level involved; a value that came from `--set KEY=VALUE` says so instead of giving a line. Only
`yaml.safe_load` semantics are used (plus: a key given twice in one mapping is an error, where plain
PyYAML silently keeps the last one). Grid expansion into trials lives in `orchestrator.expand`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from trainables.metrics import WORST
from trainables.mixing.registry import did_you_mean

from .errors import UserError
from .storage import NAME

#: the metrics a trial reports; `metric` must be one of them
METRICS = tuple(WORST)
NAME_RE = NAME  # the storage's rule: a sweep name is also a folder name
NAME_RULE = "1..64 characters from a-z, 0-9, '_' and '-' (pattern [a-z0-9_-]+)"
#: a grid larger than this is almost certainly a mistake (a seed count or a factor given in the wrong place)
MAX_TRIALS = 10_000
MAX_SEED = 2**63 - 1
DIST_FORMS = "loguniform(a,b) with 0<a<b, uniform(a,b) with a<b, int(a,b) with integers a<b (both inclusive), " \
             "choice(x,y,...) or a YAML list [x, y, ...]"
SPEC_PACKAGE = "search_spaces"

Path_ = tuple[str | int, ...]


class _FieldError(ValueError):
    """A problem at an absolute spec path; raised inside validators, turned into a `UserError` by the loader."""

    def __init__(self, path: Path_, message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _level(value: Any) -> str:
    """A factor level as people write it: strings bare, everything else as YAML-ish JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _did_you_mean(name: object, known: list[str]) -> str:
    return did_you_mean(str(name), known)


def format_path(path: Path_) -> str:
    """("factors", "mix.selection", 2) -> "factors.mix.selection[2]"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- search distributions (optuna) ------------------------------------------------------------------------------


class Distribution(BaseModel):
    """One dimension of an optuna search space; `str()` gives the canonical spec string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["loguniform", "uniform", "int", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"choice({', '.join(_level(c) for c in self.choices)})"
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


def _split_args(text: str) -> list[str]:
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
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*\((.*)\)\s*", value, flags=re.S)
        if not m:
            raise ValueError(f"bad distribution {value!r}; expected {DIST_FORMS}")
        kind, args = m.group(1), _split_args(m.group(2))
        if kind not in ("loguniform", "uniform", "int", "choice"):
            raise ValueError(f"unknown distribution {kind!r}{_did_you_mean(kind, ['loguniform', 'uniform', 'int'])}"
                             f" in {value!r}; expected {DIST_FORMS}")
        if kind != "choice":
            return _range_distribution(kind, args, value)
        choices = []
        for arg in args:
            try:
                choices.append(yaml.safe_load(arg))
            except yaml.YAMLError:
                choices.append(arg)
    else:
        raise ValueError(f"expected a distribution string ({DIST_FORMS}), got {_show(value)}; "
                         f"a fixed value belongs in base")
    if not choices:
        raise ValueError("choice needs at least one value, e.g. choice(cutmix, saliencymix)")
    keys = [json.dumps(c, sort_keys=True, default=str) for c in choices]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ValueError(f"choice lists {_level(choices[i])!s} twice; values must be distinct")
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


# -- the spec models ------------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Frozen):
    """Per-trial resources; `gpu: 1/k` packs k trials on one GPU (memory is not isolated)."""

    cpu: StrictFloat = Field(1.0, gt=0, description="CPU cores per trial")
    gpu: StrictFloat = Field(0.0, ge=0, description="GPUs per trial (a fraction packs trials)")

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise _FieldError(("resources", "gpu"), f"Ray gives a trial a fraction of ONE GPU or whole GPUs; "
                                                    f"use a value <= 1 or a whole number (got {v!r})")
        return v


class AshaSpec(_Frozen):
    """ASHA early stopping (screening only: it biases factorial ablations)."""

    grace_period: StrictInt = Field(1, ge=1, description="epochs before a trial can be stopped")
    reduction_factor: StrictFloat = Field(3.0, gt=1, description="keep 1/reduction_factor at each rung")


class SearchSpec(_Frozen):
    """`grid` runs the explicit factors x seeds grid; `optuna` samples `space` for `num_trials` trials."""

    algorithm: Literal["grid", "optuna"] = "grid"
    num_trials: StrictInt | None = Field(None, ge=1, description="optuna: trials to sample")
    max_concurrent: StrictInt | None = Field(None, ge=1, description="at most this many trials at once")
    space: dict[str, Distribution] = Field(default_factory=dict, description="optuna: config key -> distribution")

    @field_validator("space", mode="before")
    @classmethod
    def _parse_space(cls, raw: Any) -> dict[str, Distribution]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise _FieldError(("search", "space"), f"expected a mapping of config key -> distribution, e.g. "
                                                   f"{{optim.lr: loguniform(0.01, 0.3)}} (got {_show(raw)})")
        out: dict[str, Distribution] = {}
        for key, value in _flatten_leaves(raw, ("search", "space")):
            try:
                out[key] = parse_distribution(value)
            except ValueError as exc:
                raise _FieldError(("search", "space", key), str(exc)) from None
        return out

    @model_validator(mode="after")
    def _fits_algorithm(self) -> SearchSpec:
        if self.algorithm == "grid":
            for key in ("num_trials", "space"):
                if getattr(self, key):
                    raise _FieldError(("search", key), "only applies to search.algorithm=optuna; a grid runs "
                                                       "every combination of factors x seeds")
        else:
            if self.num_trials is None:
                raise _FieldError(("search", "num_trials"), "search.algorithm=optuna needs num_trials (>= 1)")
            if not self.space:
                raise _FieldError(("search", "space"), "search.algorithm=optuna needs a space, e.g. "
                                                       "{optim.lr: loguniform(0.01, 0.3)}")
        return self


def _flatten_leaves(raw: Mapping[Any, Any], path: Path_, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested maps -> (dotted key, leaf value); a key given both nested and dotted raises."""
    out: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise _FieldError(path, f"keys must be non-empty strings (got {_show(key)})")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_flatten_leaves(value, path, f"{dotted}."))
        else:
            out.append((dotted, value))
    seen: set[str] = set()
    for key, _ in out:
        if key in seen:
            raise _FieldError((*path, key), "given twice (as a nested map and as a dotted key)")
        seen.add(key)
    return out


def _parse_seeds(raw: Any) -> tuple[int, ...]:
    allowed = "an integer N >= 1 (meaning seeds 0..N-1) or a list of distinct integers >= 0"
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise _FieldError(("seeds",), f"{raw} seeds is no sweep; expected {allowed} (got {raw})")
        if raw > MAX_TRIALS:
            raise _FieldError(("seeds",), f"{raw} seeds exceed the limit of {MAX_TRIALS} trials (got {raw})")
        return tuple(range(raw))
    if not isinstance(raw, list | tuple):
        raise _FieldError(("seeds",), f"expected {allowed} (got {_show(raw)})")
    if not raw:
        raise _FieldError(("seeds",), f"empty list; expected {allowed}, e.g. [0, 1, 2] or 3")
    seen: dict[int, int] = {}
    for i, seed in enumerate(raw):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise _FieldError(("seeds", i), f"a seed is an integer in [0, 2**63) (got {_show(seed)})")
        if seed in seen:
            raise _FieldError(("seeds", i), f"duplicate seed {seed} (already seeds[{seen[seed]}]); seeds must be "
                                            f"distinct")
        seen[seed] = i
    return tuple(raw)


def _parse_factors(raw: Any) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _FieldError(("factors",), f"expected a mapping of config key -> list of levels, e.g. "
                                        f"factors: {{mix.preset: [cutmix, saliencymix]}} (got {_show(raw)})")
    out: dict[str, tuple[Any, ...]] = {}
    for key, levels in _flatten_leaves(raw, ("factors",)):
        path = ("factors", key)
        if key == "seed":
            raise _FieldError(path, "seeds are their own axis, not a factor: write `seeds: [0, 1, 2]` (or "
                                    "`seeds: 3`) at the top level")
        if not isinstance(levels, list | tuple):
            raise _FieldError(path, f"expected a list of levels, e.g. [a, b] (got {_show(levels)}); a value that "
                                    f"does not vary belongs in base")
        if not levels:
            raise _FieldError(path, "empty list; a factor needs at least one level (drop the factor, or move a "
                                    "fixed value to base)")
        keys = [json.dumps(v, sort_keys=True, default=str) for v in levels]
        for i, k in enumerate(keys):
            if k in keys[:i]:
                first = keys.index(k)
                raise _FieldError((*path, i), f"duplicate level {_level(levels[i])} (already {key}[{first}]); "
                                              f"levels must be distinct")
        out[key] = tuple(levels)
    return out


def _parse_base(raw: Any) -> dict[str, Any]:
    from trainables.config import ConfigError, flatten

    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _FieldError(("base",), f"expected a mapping of training config keys (dotted or nested), e.g. "
                                     f"base: {{dataset: cifar10, model: resnet18}} (got {_show(raw)})")
    try:
        flat = flatten(raw)
    except ConfigError as exc:
        key, rest, _ = _split_config_error(str(exc))
        raise _FieldError(("base", key) if key else ("base",), rest) from None
    if "seed" in flat:
        raise _FieldError(("base", "seed"), "seeds are their own axis: write `seeds: [0, 1, 2]` (or `seeds: 3`) at "
                                            "the top level, not base.seed")
    return flat


class SweepSpec(_Frozen):
    """A validated sweep: the base config, the factor grid, the seeds, and how Ray Tune runs it."""

    name: str = Field(description="[a-z0-9_-]+; the Ray experiment and the MLflow sweep run name")
    description: str = ""
    experiment: str = Field("mixsweep", description="MLflow experiment")
    base: dict[str, Any] = Field(default_factory=dict, description="flat dotted training config of every trial")
    factors: dict[str, tuple[Any, ...]] = Field(default_factory=dict, description="config key -> levels")
    seeds: tuple[int, ...] = Field((0,), description="one trial per seed and arm")
    search: SearchSpec = SearchSpec()
    scheduler: Literal["fifo", "asha"] = "fifo"
    asha: AshaSpec | None = None
    resources: Resources = Resources()
    metric: str = "final/top1_err"
    mode: Literal["min", "max"] = "min"
    max_failures: StrictInt = Field(2, ge=0, description="retries of a failed trial (from its checkpoint)")
    # provenance, not user fields:
    source: str = Field("<string>", description="the file path, or search_spaces:<name>")
    text: str = Field("", exclude=True, description="the raw YAML, logged as an MLflow artifact")
    overrides: dict[str, Any] = Field(default_factory=dict, description="--set overrides applied on load")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str:
        if not isinstance(v, str) or not NAME_RE.fullmatch(v):
            hint = re.sub(r"[^a-z0-9_-]+", "_", str(v).lower()).strip("_-")[:64] or "my_sweep"
            raise _FieldError(("name",), f"must be {NAME_RULE}, e.g. {hint!r} (got {_show(v)})")
        return v

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str) -> str:
        if not v.strip():
            raise _FieldError(("experiment",), "must be a non-empty MLflow experiment name (default 'mixsweep')")
        return v

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("search", mode="before")
    @classmethod
    def _search_shorthand(cls, v: Any) -> Any:
        return {"algorithm": v} if isinstance(v, str) else v

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v: Any) -> dict[str, Any]:
        return _parse_base(v)

    @field_validator("factors", mode="before")
    @classmethod
    def _factors(cls, v: Any) -> dict[str, tuple[Any, ...]]:
        return _parse_factors(v)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> tuple[int, ...]:
        return _parse_seeds(v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise _FieldError(("metric",), f"unknown metric {v!r}{_did_you_mean(v, list(METRICS))}; "
                                           f"allowed: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for key in self.factors:
            if key in self.base:
                raise _FieldError(("factors", key), f"also fixed in base (base.{key} = {_level(self.base[key])}); "
                                                    f"a key is either fixed in base or varied in factors - remove one")
        if self.asha is not None and self.scheduler != "asha":
            raise _FieldError(("asha",), "only applies to `scheduler: asha` (the scheduler is fifo)")
        if self.search.algorithm == "optuna":
            if self.factors:
                raise _FieldError(("factors",), "factors cannot be combined with search.algorithm=optuna (optuna "
                                                "samples search.space, there is no grid); put the levels in "
                                                "search.space as choice(...) or run them as a grid spec")
            if len(self.seeds) != 1:
                raise _FieldError(("seeds",), f"search.algorithm=optuna tunes one seed, so seeds must hold exactly "
                                              f"one (got {len(self.seeds)}: {list(self.seeds)[:5]}); re-run the best "
                                              f"config over several seeds with a grid spec")
            for key in self.search.space:
                if key == "seed":
                    raise _FieldError(("search", "space", "seed"), "the seed is not tuned; set `seeds: [N]`")
                if key in self.base:
                    raise _FieldError(("search", "space", key), f"also fixed in base (base.{key} = "
                                                                f"{_level(self.base[key])}); remove one")
        n = self.num_grid_trials()
        if n > MAX_TRIALS:
            sizes = " x ".join(f"{len(v)} {k}" for k, v in self.factors.items())
            raise _FieldError(("factors",), f"the grid has {n} trials ({sizes + ' x ' if sizes else ''}"
                                            f"{len(self.seeds)} seeds); the limit is {MAX_TRIALS}: split the sweep "
                                            f"or use search.algorithm=optuna")
        return self

    # -- views ----------------------------------------------------------------------------------------------------

    def base_config(self, resolved: bool = False) -> dict[str, Any]:
        """The flat user-level base config (a copy). `resolved=True`: the resolved config (recipe and defaults
        applied) of the first trial - first arm, first seed, an optuna space at its lower bounds/first choices -
        e.g. for the `epochs` a recipe supplies."""
        if not resolved:
            return dict(self.base)
        from trainables.config import validate_config

        first = {k: d.probe_values()[0] for k, d in self.search.space.items()}
        return validate_config({**self.base, **self.arms()[0], **first, "seed": self.seeds[0]}).flat()

    def to_yaml(self) -> str:
        """The effective spec (overrides applied, base flattened) as YAML that `parse_spec` reads back."""
        data = self.model_dump(exclude={"source", "text", "overrides"}, exclude_none=True)
        data["factors"] = {k: list(v) for k, v in self.factors.items()}
        data["seeds"] = list(self.seeds)
        data["search"] = {k: v for k, v in data["search"].items() if v not in (None, {})}
        if self.search.space:
            data["search"]["space"] = {k: list(d.choices) if d.kind == "choice" else str(d)
                                       for k, d in self.search.space.items()}
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)

    def factor_levels(self) -> dict[str, list[Any]]:
        """factor -> levels, in spec order (the report's columns and their order)."""
        return {k: list(v) for k, v in self.factors.items()}

    def num_arms(self) -> int:
        """Factor combinations (1 without factors)."""
        return math.prod(len(v) for v in self.factors.values())

    def num_grid_trials(self) -> int:
        """Trials of the grid: arms x seeds (optuna specs: `search.num_trials`)."""
        if self.search.algorithm == "optuna":
            return int(self.search.num_trials or 0)
        return self.num_arms() * len(self.seeds)

    def arms(self) -> list[dict[str, Any]]:
        """Every factor combination, first factor outermost (no factors: one empty arm)."""
        keys = list(self.factors)
        return [dict(zip(keys, combo)) for combo in itertools.product(*self.factors.values())]

    def warnings(self) -> list[str]:
        """Things that are valid but probably not what an ablation wants (for the CLI to print)."""
        out = []
        if self.scheduler == "asha" and self.search.algorithm == "grid" and self.factors:
            out.append("scheduler: asha stops weak arms early, which biases the comparison of factor levels; "
                       "use `scheduler: fifo` for the final ablation")
        return out


# -- config validation against the registries -----------------------------------------------------------------------


def _split_config_error(msg: str) -> tuple[str | None, str, str]:
    """A trainables ConfigError message -> (config key it names, the rest, kind: key|value|combination)."""
    m = re.match(r"unknown mixing key '([^']+)'(.*)", msg, flags=re.S)
    if m:
        return m.group(1), "unknown key" + m.group(2), "key"
    m = re.match(r"([A-Za-z_][\w]*(?:\.[\w<>]+)*): (.*)", msg, flags=re.S)
    if m:
        rest = m.group(2)
        return m.group(1), rest, "key" if rest.startswith(("unknown key", "unknown option")) else "value"
    return None, msg, "combination"


def _mentions(key: str, value: Any, msg: str) -> bool:
    """Does a config error message name this factor (`mix.preset=...`, `mix.preset:`, `preset 'cutmix'`)?"""
    short = key.rsplit(".", 1)[-1]
    named = re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", msg) is not None
    return named or (isinstance(value, str) and f"{short} {value!r}" in msg)


def _check_configs(spec: SweepSpec) -> None:
    """Build every training config the spec will run and validate it; attribute failures to spec paths."""
    from trainables.config import ConfigError, trial_hashes, validate_config

    base, seed = dict(spec.base), spec.seeds[0]
    factors, space = spec.factors, spec.search.space

    def check(config: dict[str, Any]) -> tuple[Any, ConfigError | None]:
        try:
            return validate_config({**config, "seed": seed}), None
        except ConfigError as exc:
            return None, exc

    def base_error(key: str, rest: str) -> _FieldError:
        return _FieldError(("base", key), rest)

    # 1. the base on its own (with factors, a failure may be context that a factor level supplies: steps 2-4;
    #    an unknown key is not: no level makes it known, and its message lists every known key, factors included)
    _, err = check(base)
    if err is not None:
        key, rest, kind = _split_config_error(str(err))
        if key in base and rest.startswith("unknown key"):
            raise base_error(key, rest)
        if not factors and not space:
            raise base_error(key, rest) if key in base and kind != "combination" else _FieldError(("base",), str(err))

    # 2. each factor level with the base alone: precise per-level messages
    failed_alone: set[tuple[str, int]] = set()
    for f, levels in factors.items():
        for i, value in enumerate(levels):
            _, err = check({**base, f: value})
            if err is None:
                continue
            failed_alone.add((f, i))
            key, rest, kind = _split_config_error(str(err))
            if key == f:
                raise _FieldError(("factors", f) if kind == "key" else ("factors", f, i), rest)
            if key in base and kind != "combination":
                if _mentions(f, value, str(err)) or (isinstance(value, str) and repr(value) in str(err)):
                    raise _FieldError(("factors", f, i), f"{f}={_level(value)} does not go with base.{key}: {err}")
                raise base_error(key, rest)

    # 3. each optuna space dimension at its bounds / choices, the other dimensions at their first probe value
    first = {k: d.probe_values()[0] for k, d in space.items()}
    for k, dist in space.items():
        for value in dist.probe_values():
            _, err = check({**base, **first, k: value})
            if err is None:
                continue
            key, rest, kind = _split_config_error(str(err))
            if key == k and kind == "key":
                raise _FieldError(("search", "space", k), rest)
            if key in base and kind != "combination":
                raise base_error(key, rest)
            raise _FieldError(("search", "space", k), f"{dist} includes {_level(value)}, which is invalid: {err}")

    # 4. every combination; two arms that resolve to the same training config are one trial twice
    seen: dict[str, dict[str, Any]] = {}
    keys = list(factors)
    for index in itertools.product(*(range(len(v)) for v in factors.values())) if factors else []:
        arm = {f: factors[f][i] for f, i in zip(keys, index)}
        cfg, err = check({**base, **arm})
        if err is not None:
            key, rest, kind = _split_config_error(str(err))
            if key in base and kind != "combination":
                raise base_error(key, rest)
            involved = [f for f in factors if _mentions(f, arm[f], str(err))]
            if len(involved) == 1:
                f, i = involved[0], index[keys.index(involved[0])]
                others = [a for a in spec.arms() if a[f] == arm[f]]
                if (f, i) in failed_alone and all(check({**base, **a})[1] is not None for a in others):
                    others = "with the base config" if len(factors) == 1 else "with every level of the other factors"
                    raise _FieldError(("factors", f, i), f"{f}={_level(arm[f])} fails {others}: {err}")
            if len(involved) < 2:
                involved = list(factors)
            combo = " × ".join(f"{f}={_level(arm[f])}" for f in involved)
            raise _FieldError(("factors",), f"the combination {combo} is invalid: {err}")
        config_hash, _ = trial_hashes(cfg)
        if config_hash in seen:
            raise _FieldError(("factors",), f"duplicate trial: {arm_label(seen[config_hash])} and {arm_label(arm)} "
                                            f"resolve to the same training config (config_hash {config_hash}); "
                                            f"remove one of the levels")
        seen[config_hash] = arm


def arm_label(levels: Mapping[str, Any]) -> str:
    """`mix.preset=cutmix × mix.pairing=greedy` (`(base)` for the single arm of a spec without factors)."""
    return " × ".join(f"{k}={_level(v)}" for k, v in levels.items()) or "(base)"


# -- YAML, errors with file and line ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (plain PyYAML silently keeps the last one)."""

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


class _Context:
    """Where a spec came from, for error messages: source name, raw text, lines of YAML nodes, --set paths."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.from_set: dict[str, str] = {}  # formatted spec path -> the --set key that produced it
        self._root: Any = None

    def fail(self, path: Path_, message: str) -> UserError:
        where = format_path(path)
        origin = next((self.from_set[p] for p in (format_path(path[:i]) for i in range(len(path), 0, -1))
                       if p in self.from_set), None)
        if origin is not None:
            where = f"{where} (from --set {origin})"
        else:
            line = self.line_of(path)
            where = f"{where} (line {line})" if line else where
        return UserError(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def line_of(self, path: Path_) -> int | None:
        if self._root is None:
            try:
                self._root = yaml.compose(self.text, Loader=yaml.SafeLoader) or False
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
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key and part.startswith(key + "."):
            return _line_in(value_node, [part[len(key) + 1:], *rest]) or key_node.start_mark.line + 1
    return None


def _pydantic_to_user(exc: ValidationError, ctx: _Context) -> UserError:
    err = exc.errors()[0]
    original = (err.get("ctx") or {}).get("error")
    if isinstance(original, _FieldError):
        return ctx.fail(original.path, original.message)
    path = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    kind, got = err["type"], err.get("input")
    if kind == "missing":
        hint = f": give the sweep a name of {NAME_RULE}, e.g. name: my_sweep" if path == ("name",) else ""
        return ctx.fail(path, f"required field is missing{hint}")
    if kind == "extra_forbidden":
        model = {"search": SearchSpec, "resources": Resources, "asha": AshaSpec}.get(str(path[0]), SweepSpec)
        allowed = list(model.model_fields) if model is not SweepSpec else list(USER_FIELDS)
        return ctx.fail(path, f"unknown key{_did_you_mean(path[-1], allowed)}; allowed: {', '.join(allowed)}")
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        msg = "expected a mapping"
        allowed = {"search": SearchSpec, "resources": Resources, "asha": AshaSpec}.get(str(path[-1]))
        if allowed is not None:
            msg += f" with keys {', '.join(allowed.model_fields)}"
    return ctx.fail(path, f"{msg} (got {_show(got)})")


#: top-level keys a spec file may use
USER_FIELDS = ("name", "description", "experiment", "base", "factors", "seeds", "search", "scheduler", "asha",
               "resources", "metric", "mode", "max_failures")


def _parse_scalar(value: Any) -> Any:
    """A `--set` value given as text is read as a YAML scalar/flow value, exactly as in the spec file."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """["optim.lr=0.1", "seeds=3"] -> {"optim.lr": 0.1, "seeds": 3} (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.1")
        out[key.strip()] = _parse_scalar(value)
    return out


def _flat(section: Any) -> dict[str, Any] | None:
    """A section as dotted keys ({} for None); None when it is not a valid mapping (reported later, as it is)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        return None
    try:
        return dict(_flatten_leaves(section, ()))
    except _FieldError:
        return None


def _apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], ctx: _Context) -> dict[str, Any]:
    """Put `--set` values into the raw spec: a spec field (`seeds=3`, `resources.gpu=0.5`,
    `factors.mix.pairing=[random, greedy]`, `search.space.optim.lr=...`) or, any other key, a base config key."""
    data = dict(data)
    for key, raw in overrides.items():
        value = _parse_scalar(raw)
        if not isinstance(key, str) or not key.strip():
            raise UserError(f"{ctx.source}: --set {key!r}: expected KEY=VALUE with a non-empty key")
        if key == "seed":
            raise UserError(f"{ctx.source}: --set seed: seeds are their own axis; use --set seeds=N (0..N-1) or "
                            f"--set 'seeds=[0, 1]'")
        head, _, rest = key.partition(".")
        if head not in USER_FIELDS:
            head, rest = "base", key
        factors = _flat(data.get("factors")) or {}
        if head == "base" and rest in factors:
            levels = factors[rest]
            shown = ", ".join(map(_level, levels)) if isinstance(levels, list) else _level(levels)
            raise UserError(f"{ctx.source}: --set {key}: {rest} is a factor of this spec (levels: {shown}); it cannot "
                            f"also be fixed - change its levels with --set 'factors.{rest}=[...]'")
        ctx.from_set[f"{head}.{rest}" if rest else head] = key
        section = data.get(head)
        if head == "search" and isinstance(section, str):
            section = {"algorithm": section}
        if not rest:
            data[head] = value
        elif head in ("base", "factors"):
            flat = _flat(section)
            data[head] = section if flat is None else {**flat, rest: value}
        elif head == "search" and rest.startswith("space.") and isinstance(section, Mapping | None):
            space = _flat((section or {}).get("space"))
            if space is not None:
                data["search"] = {**(section or {}), "space": {**space, rest[len("space."):]: value}}
        else:
            data[head] = {**(section if isinstance(section, Mapping) else {}), rest: value}
    return data


def _read(path: Path, source: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{source}: cannot read the spec: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(f"{source}: line {line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                        f"{exc.start}); save the spec as UTF-8") from None


def parse_spec(text: str, source: str = "<string>", overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Validate the YAML `text` of a spec (see `load_spec`); `source` names it in errors."""
    ctx = _Context(source, text)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
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
    if data is None:
        raise UserError(f"{source}: the spec is empty; a sweep spec is a YAML mapping with at least `name:` "
                        f"(e.g. `name: my_sweep`), usually with base:, factors: and seeds:")
    if not isinstance(data, dict):
        raise UserError(f"{source}: the top level must be a mapping of spec fields ({', '.join(USER_FIELDS)}), "
                        f"got {type(data).__name__} {_show(data, 40)}")
    for key in data:
        if key not in USER_FIELDS:
            raise ctx.fail((str(key),), _unknown_top_level(key))
    if overrides:
        data = _apply_overrides(data, overrides, ctx)
    try:
        spec = SweepSpec.model_validate({**data, "source": source, "text": text,
                                         "overrides": {k: _parse_scalar(v) for k, v in (overrides or {}).items()}})
        _check_configs(spec)
    except ValidationError as exc:
        raise _pydantic_to_user(exc, ctx) from None
    except _FieldError as exc:
        raise ctx.fail(exc.path, exc.message) from None
    return spec


def _unknown_top_level(key: Any) -> str:
    from trainables.config import known_keys

    if str(key) in known_keys() or str(key) in {k.split(".")[0] for k in known_keys()}:
        return (f"{key!r} is a training config key, not a spec field: put it under `base:` (fixed for every "
                f"trial) or `factors:` (varied); spec fields: {', '.join(USER_FIELDS)}")
    return f"unknown top-level key{_did_you_mean(key, list(USER_FIELDS))}; allowed: {', '.join(USER_FIELDS)}"


# -- loading by path or by name ---------------------------------------------------------------------------------


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
            data = yaml.safe_load(item.read_text(encoding="utf-8"))
            desc = data.get("description", "") if isinstance(data, dict) else ""
        except (yaml.YAMLError, UnicodeDecodeError):
            desc = "(invalid YAML)"
        out.append((name, str(desc or "").strip()))
    return out


def load_spec(ref: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Load and validate a spec: `ref` is a path to a .yaml/.yml file, or the name of a shipped spec
    (`search_spaces/<name>.yaml`). `overrides` (`--set KEY=VALUE`) set base config keys, or spec fields
    (`seeds`, `resources.gpu`, `factors.mix.pairing`, `search.num_trials`, ...); text values are read as YAML."""
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
        what = f"{text_ref!r}: not a spec file and not a shipped spec{_did_you_mean(text_ref, names)}"
    raise UserError(f"{what}; give a path to a .yaml file or the name of a shipped spec: {', '.join(names)}")


__all__ = [
    "DIST_FORMS",
    "MAX_TRIALS",
    "METRICS",
    "AshaSpec",
    "Distribution",
    "Resources",
    "SearchSpec",
    "SweepSpec",
    "arm_label",
    "format_path",
    "list_specs",
    "load_spec",
    "parse_distribution",
    "parse_overrides",
    "parse_spec",
]

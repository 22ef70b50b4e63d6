"""The spec models: a validated, frozen `SweepSpec` and its sections (pydantic).

    spec.factor_levels()   # {"mix.selection": ["salient_to_corresponding", ...]}
    spec.arms()            # every factor combination, first factor outermost
    spec.trials            # a grid's trials, each resolved once (`orchestrator.spec.expand`), cached

The models check the spec's own fields; every problem is raised as a `FieldError` at its spec path
(the loader adds file and line). Whether the training configs a spec will run are valid is the
registry cross-check's job (`check`, and `expand` for every trial of a grid).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from trainables.config import ConfigError, flatten, show, validate_config
from trainables.metrics import FINAL_ERR, WORST
from trainables.mixing.registry import did_you_mean

from ..storage import NAME, NAME_RULE
from .distributions import Distribution, parse_distribution
from .expand import Trial, resolve_grid
from .source_map import FieldError, SpecPath, level

#: the metrics a trial reports; `metric` must be one of them
METRICS = tuple(WORST)
#: an MLflow experiment name is free text, but a local store keeps its artifacts in `mlartifacts/<experiment>/`
EXPERIMENT_RULE = ("any text without '/', '\\' or control characters, not starting with '-', "
                   "and not '.' or '..'")
#: a grid larger than this is almost certainly a mistake (a seed count or a factor given in the wrong place)
MAX_TRIALS = 10_000
MAX_SEED = 2**63 - 1


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
            raise FieldError(("resources", "gpu"), f"Ray gives a trial a fraction of ONE GPU or whole GPUs; "
                                                   f"use a value <= 1 or a whole number (got {v!r})")
        return v


class AshaSpec(_Frozen):
    """ASHA early stopping (screening only: it biases factorial ablations)."""

    grace_period: StrictInt = Field(1, ge=1, description="epochs before a trial can be stopped")
    reduction_factor: StrictFloat = Field(3.0, gt=1, description="keep 1/reduction_factor at each rung")


def flat_section(raw: Mapping[Any, Any], path: SpecPath) -> dict[str, Any]:
    """A section of config keys (nested or dotted) as dotted keys; a problem is a FieldError under `path`."""
    try:
        return flatten(raw)
    except ConfigError as exc:
        raise FieldError((*path, *exc.keys), exc.detail) from None


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
            raise FieldError(("search", "space"), f"expected a mapping of config key -> distribution, e.g. "
                                                  f"{{optim.lr: loguniform(0.01, 0.3)}} (got {show(raw)})")
        out: dict[str, Distribution] = {}
        for key, value in flat_section(raw, ("search", "space")).items():
            try:
                out[key] = parse_distribution(value)
            except ValueError as exc:
                raise FieldError(("search", "space", key), str(exc)) from None
        return out

    @model_validator(mode="after")
    def _fits_algorithm(self) -> SearchSpec:
        if self.algorithm == "grid":
            for key in ("num_trials", "space"):
                if getattr(self, key):
                    raise FieldError(("search", key), "only applies to search.algorithm=optuna; a grid runs "
                                                      "every combination of factors x seeds")
        else:
            if self.num_trials is None:
                raise FieldError(("search", "num_trials"), "search.algorithm=optuna needs num_trials (>= 1)")
            if not self.space:
                raise FieldError(("search", "space"), "search.algorithm=optuna needs a space, e.g. "
                                                      "{optim.lr: loguniform(0.01, 0.3)}")
        return self


def _parse_seeds(raw: Any) -> tuple[int, ...]:
    allowed = "an integer N >= 1 (meaning seeds 0..N-1) or a list of distinct integers >= 0"
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 1:
            raise FieldError(("seeds",), f"{raw} seeds is no sweep; expected {allowed} (got {raw})")
        if raw > MAX_TRIALS:
            raise FieldError(("seeds",), f"{raw} seeds exceed the limit of {MAX_TRIALS} trials (got {raw})")
        return tuple(range(raw))
    if not isinstance(raw, list | tuple):
        raise FieldError(("seeds",), f"expected {allowed} (got {show(raw)})")
    if not raw:
        raise FieldError(("seeds",), f"empty list; expected {allowed}, e.g. [0, 1, 2] or 3")
    seen: dict[int, int] = {}
    for i, seed in enumerate(raw):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise FieldError(("seeds", i), f"a seed is an integer in [0, 2**63) (got {show(seed)})")
        if seed in seen:
            raise FieldError(("seeds", i), f"duplicate seed {seed} (already seeds[{seen[seed]}]); seeds must be "
                                           f"distinct")
        seen[seed] = i
    return tuple(raw)


def _parse_factors(raw: Any) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise FieldError(("factors",), f"expected a mapping of config key -> list of levels, e.g. "
                                       f"factors: {{mix.preset: [cutmix, saliencymix]}} (got {show(raw)})")
    out: dict[str, tuple[Any, ...]] = {}
    for key, levels in flat_section(raw, ("factors",)).items():
        path = ("factors", key)
        if key == "seed":
            raise FieldError(path, "seeds are their own axis, not a factor: write `seeds: [0, 1, 2]` (or "
                                   "`seeds: 3`) at the top level")
        if not isinstance(levels, list | tuple):
            raise FieldError(path, f"expected a list of levels, e.g. [a, b] (got {show(levels)}); a value that "
                                   f"does not vary belongs in base")
        if not levels:
            raise FieldError(path, "empty list; a factor needs at least one level (drop the factor, or move a "
                                   "fixed value to base)")
        keys = [json.dumps(v, sort_keys=True, default=str) for v in levels]
        for i, k in enumerate(keys):
            if k in keys[:i]:
                raise FieldError((*path, i), f"duplicate level {level(levels[i])} (already {key}[{keys.index(k)}]); "
                                             f"levels must be distinct")
        out[key] = tuple(levels)
    return out


def _parse_base(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise FieldError(("base",), f"expected a mapping of training config keys (dotted or nested), e.g. "
                                    f"base: {{dataset: cifar10, model: resnet18}} (got {show(raw)})")
    flat = flat_section(raw, ("base",))
    if "seed" in flat:
        raise FieldError(("base", "seed"), "seeds are their own axis: write `seeds: [0, 1, 2]` (or `seeds: 3`) at "
                                           "the top level, not base.seed")
    return flat


class SweepSpec(_Frozen):
    """A validated sweep: the base config, the factor grid, the seeds, and how Ray Tune runs it."""

    name: str = Field(description="[a-z0-9][a-z0-9_-]*; the Ray experiment and the MLflow sweep run name")
    description: str = ""
    experiment: str = Field("mixsweep", description="MLflow experiment")
    base: dict[str, Any] = Field(default_factory=dict, description="flat dotted training config of every trial")
    factors: dict[str, tuple[Any, ...]] = Field(default_factory=dict, description="config key -> levels")
    seeds: tuple[int, ...] = Field((0,), description="one trial per seed and arm")
    search: SearchSpec = SearchSpec()
    scheduler: Literal["fifo", "asha"] = "fifo"
    asha: AshaSpec | None = None
    resources: Resources = Resources()
    metric: str = FINAL_ERR
    mode: Literal["min", "max"] = "min"
    max_failures: StrictInt = Field(2, ge=0, description="retries of a failed trial (from its checkpoint)")
    stall_timeout: float | None = Field(None, description=(
        "seconds a running trial may go without finishing an epoch before it is stalled: stopped and retried "
        "from its checkpoint (before its first epoch: 3x as long, at least 120 s); null: max(600, 10 x its slowest "
        "epoch)"))
    # provenance, not user fields:
    source: str = Field("<string>", description="the file path, or search_spaces:<name>")
    text: str = Field("", exclude=True, description="the raw YAML, logged as an MLflow artifact")
    overrides: dict[str, Any] = Field(default_factory=dict, description="--set overrides applied on load")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str:
        if not isinstance(v, str) or not NAME.fullmatch(v):
            hint = re.sub(r"[^a-z0-9_-]+", "_", str(v).lower()).strip("_-")[:64] or "my_sweep"
            raise FieldError(("name",), f"must be {NAME_RULE}, e.g. {hint!r} (got {show(v)})")
        return v

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str) -> str:
        if not v.strip():
            raise FieldError(("experiment",), "must be a non-empty MLflow experiment name (default 'mixsweep')")
        if v.strip() in (".", "..") or v.startswith("-") or any(c in "/\\" or not c.isprintable() for c in v):
            raise FieldError(("experiment",), f"{v!r} is not allowed: an experiment name is {EXPERIMENT_RULE} "
                             "(it names a folder of the storage's artifacts)")
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

    @field_validator("stall_timeout", mode="before")
    @classmethod
    def _stall_timeout(cls, v: Any) -> float | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise FieldError(("stall_timeout",), f"expected a number of seconds > 0, or null for the default "
                                                 f"(max(600, 10 x the trial's slowest epoch)) (got {show(v)})")
        return float(v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise FieldError(("metric",), f"unknown metric {v!r}{did_you_mean(v, list(METRICS))}; "
                                          f"allowed: {', '.join(METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for key in self.factors:
            if key in self.base:
                raise FieldError(("factors", key), f"also fixed in base (base.{key} = {level(self.base[key])}); "
                                                   f"a key is either fixed in base or varied in factors - remove one")
        if self.asha is not None and self.scheduler != "asha":
            raise FieldError(("asha",), "only applies to `scheduler: asha` (the scheduler is fifo)")
        if self.search.algorithm == "optuna":
            if self.factors:
                raise FieldError(("factors",), "factors cannot be combined with search.algorithm=optuna (optuna "
                                               "samples search.space, there is no grid); put the levels in "
                                               "search.space as choice(...) or run them as a grid spec")
            if len(self.seeds) != 1:
                raise FieldError(("seeds",), f"search.algorithm=optuna tunes one seed, so seeds must hold exactly "
                                             f"one (got {len(self.seeds)}: {list(self.seeds)[:5]}); re-run the best "
                                             f"config over several seeds with a grid spec")
            for key in self.search.space:
                if key == "seed":
                    raise FieldError(("search", "space", "seed"), "the seed is not tuned; set `seeds: [N]`")
                if key in self.base:
                    raise FieldError(("search", "space", key), f"also fixed in base (base.{key} = "
                                                               f"{level(self.base[key])}); remove one")
        n = self.num_grid_trials()
        if n > MAX_TRIALS:
            sizes = " x ".join(f"{len(v)} {k}" for k, v in self.factors.items())
            raise FieldError(("factors",), f"the grid has {n} trials ({sizes + ' x ' if sizes else ''}"
                                           f"{len(self.seeds)} seeds); the limit is {MAX_TRIALS}: split the sweep "
                                           f"or use search.algorithm=optuna")
        return self

    # -- views ----------------------------------------------------------------------------------------------------

    @cached_property
    def trials(self) -> tuple[Trial, ...]:
        """Every trial of a grid spec, each resolved once (first factor outermost, seeds innermost); UserError
        naming the spec line for a config that does not validate, and for an optuna spec (no grid)."""
        return resolve_grid(self)

    def base_config(self, resolved: bool = False) -> dict[str, Any]:
        """The flat user-level base config (a copy). `resolved=True`: the resolved config (recipe and defaults
        applied) of the first trial - first arm, first seed, an optuna space at its lower bounds/first choices -
        e.g. for the `epochs` a recipe supplies."""
        if not resolved:
            return dict(self.base)
        if self.search.algorithm == "grid":
            return self.trials[0].cfg.flat()
        first = {k: d.probe_values()[0] for k, d in self.search.space.items()}
        return validate_config({**self.base, **first, "seed": self.seeds[0]}).flat()

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


__all__ = ["EXPERIMENT_RULE", "MAX_SEED", "MAX_TRIALS", "METRICS", "NAME_RULE", "AshaSpec", "Resources", "SearchSpec",
           "SweepSpec", "flat_section"]

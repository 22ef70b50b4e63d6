"""The training configuration: flat dotted keys, validated with pydantic; one trial resolved once.

A config is a mapping of dotted keys (`optim.lr`, `mix.saliency`, `data.clutter`, ...); nested
YAML maps flatten to the same keys (`flatten`, the one flattener). A `recipe` supplies defaults that
explicit keys override. Every error is a `ConfigError` carrying the key(s) at fault and what is
allowed (unknown keys get a "did you mean"); pydantic's errors become one by their `loc`.

    cfg = validate_config({"dataset": "synthetic_salient", "model": "small_cnn", "mix.preset": "cutmix"})
    cfg.flat()   # the resolved config as dotted keys: what MLflow params and config.yaml show
    trial = resolve_trial(config)   # cfg + config_hash + run_hash + name + epochs, computed once
    parse_set(["optim.lr=0.1", 'experiment="123"'])   # the one `--set KEY=VALUE` reader (YAML values)
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .data import DATASETS, dataset_options
from .mixing import FACTOR_KEYS, MixConfig, resolve_mix_config
from .mixing.errors import ConfigError
from .mixing.registry import did_you_mean
from .models import MODELS, TV_PREFIX, list_models, model_options
from .recipes import RECIPES
from .yamlio import YamlLimitError, describe, load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW beta1)")
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = True


class SchedConfig(_Strict):
    name: Literal["multistep", "cosine", "constant"] = "cosine"
    milestones: tuple[int, ...] = Field((), description="epochs where multistep multiplies the lr by gamma")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from lr/10, in epochs")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(m < 1 for m in v) or list(v) != sorted(set(v)):
            raise ValueError("milestones must be increasing epochs >= 1")
        return v


class EvalConfig(_Strict):
    fgsm_eps: float = Field(8 / 255, ge=0, le=1, description="FGSM step in [0,1] pixel units")
    noise_sigma: float = Field(0.1, ge=0, description="Gaussian noise sigma in [0,1] pixel units")
    robust_size: int = Field(1000, ge=0, description="test images used for the robustness metrics (0: skip)")
    batch_size: int | None = Field(None, ge=1, description="evaluation batch (default: 2 x batch_size)")


class TrainConfig(_Strict):
    """Everything one trial needs. Field docs double as `mixsweep list` help."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    dataset: str = "synthetic_salient"
    data: dict[str, Any] = Field(default_factory=dict, description="dataset options (data.*)")
    model: str = "small_cnn"
    model_opts: dict[str, Any] = Field(default_factory=dict, description="model options (model.*)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    recipe: str | None = None
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    loss: Literal["soft_ce", "bce_softmax"] = "soft_ce"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**63)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="mixed precision (bf16 autocast) on CUDA; ignored on CPU")
    workers: int = Field(2, ge=0, description="data-loading processes for folder datasets")
    eval: EvalConfig = EvalConfig()
    mix: MixConfig = Field(default_factory=resolve_mix_config)

    def flat(self) -> dict[str, Any]:
        """The resolved config as dotted keys (the one vocabulary of specs, MLflow and reports)."""
        out: dict[str, Any] = {"dataset": self.dataset}
        out.update({f"data.{k}": v for k, v in sorted(self.data.items())})
        out["model"] = self.model
        out.update({f"model.{k}": v for k, v in sorted(self.model_opts.items())})
        for key in ("epochs", "batch_size", "recipe", "loss", "label_smoothing", "seed", "device", "amp", "workers"):
            out[key] = getattr(self, key)
        for section in ("optim", "sched", "eval"):
            for k, v in getattr(self, section).model_dump().items():
                out[f"{section}.{k}"] = list(v) if isinstance(v, tuple) else v
        out.update({f"mix.{k}": v for k, v in self.mix.as_dict().items()})
        return out


_TOP = {name for name in TrainConfig.model_fields if name not in ("data", "model_opts", "mix", "optim", "sched",
                                                                   "eval")}
_SECTIONS = {"optim": OptimConfig, "sched": SchedConfig, "eval": EvalConfig}


def known_keys() -> list[str]:
    """Every dotted key a config may use (data.* / model.* options depend on the dataset / model)."""
    keys = sorted(_TOP) + [f"{s}.{k}" for s, m in _SECTIONS.items() for k in m.model_fields]
    return keys + ["data.<option>", "model.<option>"] + [f"mix.{k}" for k in FACTOR_KEYS]


def flatten(raw: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; a key given twice (nested and dotted) raises.

    ConfigError: a key that is not a non-empty string (keys: the map it is in), or a key given twice.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(prefix.rstrip(".") or (), f"keys must be non-empty strings (got {show(key)})")
        path = f"{prefix}{key}"
        items = flatten(value, f"{path}.") if isinstance(value, Mapping) else {path: value}
        for k, v in items.items():
            if k in out:
                raise ConfigError(k, "given twice (as a nested map and as a dotted key)")
            out[k] = v
    return out


def show(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: how messages quote a value they got."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- `--set KEY=VALUE` -------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A `--set` value read as one YAML value, exactly as in a YAML file: `0.1` a float, `[a, b]` a list,
    `"123"` the string 123; text that is not valid YAML (or is blank) stays the text. ConfigError when it is
    over `trainables.yamlio`'s bounds (nesting, alias expansion, size)."""
    if not text.strip():
        return text
    try:
        return load_yaml(text)
    except YamlLimitError as exc:
        raise ConfigError((), f"the value {show(text, 40)} is refused: {describe(exc)}") from None
    except yaml.YAMLError:
        return text


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` flags -> {key: value} (values: `parse_value`; a key given again wins).

    The one reader of `--set`, for `mixsweep` and `python -m trainables.train` alike.
    ConfigError when an item has no `=` or no key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError((), f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.1")
        try:
            out[key.strip()] = parse_value(text)
        except ConfigError as exc:
            raise ConfigError((), f"--set {key.strip()}: {exc.message}") from None
    return out


# -- pydantic's errors -------------------------------------------------------------------------------


def _literal_choices(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The values of the `Literal[...]` field at `loc` of `model` (through nested models), or None."""
    kind: Any = model
    for part in loc:
        fields = getattr(kind, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return None
        kind = fields[part].annotation
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # `X | None`
            members = [a for a in typing.get_args(kind) if a is not type(None)]
            kind = members[0] if len(members) == 1 else kind
    if typing.get_origin(kind) is not Literal:
        return None
    return tuple(str(a) for a in typing.get_args(kind))


#: pydantic error types (`err["type"]`) of a bound -> (its `ctx` key, how we write it)
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}
#: pydantic error types of a wrong type -> what was expected
_EXPECTED = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
             "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
             "bool_parsing": "true or false", "string_type": "a string"}


def describe_validation_error(err: Mapping[str, Any], model: type[BaseModel]) -> tuple[str, tuple[str, ...] | None]:
    """(message, allowed) for one of pydantic's `ValidationError.errors()` raised by `model`, in our words.

    Read from the error's structure (`type`, `ctx`, `input`), never from its text: our own validators'
    exceptions are used as they are; a `Literal` field says "unknown value" and lists its values;
    bounds and types say what is expected; anything else keeps pydantic's message. Each ends with
    the value it got.
    """
    got, kind, ctx = err.get("input"), err["type"], err.get("ctx") or {}
    original = ctx.get("error")
    if isinstance(original, ConfigError):
        return original.message, original.allowed
    if isinstance(original, Exception):
        return f"{original} (got {show(got)})", None
    if kind == "literal_error":
        choices = _literal_choices(model, tuple(err["loc"]))
        if choices is not None:
            return f"unknown value {show(got)}", choices
    if kind in _BOUNDS and _BOUNDS[kind][0] in ctx:
        name, op = _BOUNDS[kind]
        bound = f"{ctx[name]:g}" if isinstance(ctx[name], float) else ctx[name]
        return f"must be {op} {bound} (got {show(got)})", None
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]} (got {show(got)})", None
    return f"{err['msg']} (got {show(got)})", None


def _from_validation(exc: ValidationError, model: type[BaseModel], section: str = "") -> ConfigError:
    """The first of pydantic's errors as a ConfigError on the config key its `loc` names."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    message, allowed = describe_validation_error(err, model)
    if len(loc) > 1:  # inside a field's value (an item of a list): say where in it
        message = "at " + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip(".") \
            + f": {message}"
    key = ".".join(p for p in (section, str(loc[0]) if loc else "") if p)
    return ConfigError(key or (), message, allowed)


def _suggest(key: str, known: list[str]) -> str:
    """did-you-mean, also for a dotted key given without its section (`lr` -> `optim.lr`)."""
    tail = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1] and k != key]
    return f" (did you mean '{tail[0]}'?)" if tail else did_you_mean(key, known)


def _check_options(prefix: str, kind: str, name: str, opts: dict[str, Any], allowed: list[str] | None) -> None:
    if allowed is None:
        return
    dotted = [f"{prefix}.{a}" for a in allowed]
    for key in opts:
        if key not in allowed:
            raise ConfigError(f"{prefix}.{key}", f"unknown option for {kind} {name!r}"
                              f"{did_you_mean(f'{prefix}.{key}', dotted)}", dotted, context=(kind,), unknown=True)


def validate_config(raw: Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """Validate a (nested or dotted) config mapping into a frozen `TrainConfig`; ConfigError otherwise."""
    if isinstance(raw, TrainConfig):
        return raw
    flat = flatten(raw)
    recipe = flat.get("recipe")
    if recipe is not None:
        if not isinstance(recipe, str) or recipe not in RECIPES:
            raise ConfigError("recipe", f"unknown recipe {show(recipe)}{did_you_mean(str(recipe), RECIPES.names())}",
                              RECIPES.names())
        flat = {**RECIPES.get(recipe), **flat}
    fields: dict[str, Any] = {"data": {}, "model_opts": {}, "optim": {}, "sched": {}, "eval": {}}
    mix: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, rest = key.partition(".")
        if not rest and key in _TOP:
            fields[key] = value
        elif head == "data" and rest:
            fields["data"][rest] = value
        elif head == "model" and rest:
            fields["model_opts"][rest] = value
        elif head == "mix" and rest:
            mix[rest] = value
        elif head in _SECTIONS and rest:
            if rest not in _SECTIONS[head].model_fields:
                allowed = [f"{head}.{k}" for k in _SECTIONS[head].model_fields]
                raise ConfigError(key, f"unknown key{_suggest(key, allowed)}", allowed, unknown=True)
            fields[head][rest] = value
        else:
            raise ConfigError(key, f"unknown key{_suggest(key, known_keys())}", known_keys(), unknown=True)
    fields["mix"] = resolve_mix_config(mix)
    for section in _SECTIONS:
        try:
            fields[section] = _SECTIONS[section](**fields[section])
        except ValidationError as exc:
            raise _from_validation(exc, _SECTIONS[section], section) from None
    try:
        cfg = TrainConfig(**fields)
    except ValidationError as exc:
        raise _from_validation(exc, TrainConfig) from None
    if cfg.dataset not in DATASETS:
        raise ConfigError("dataset", f"unknown dataset {cfg.dataset!r}{did_you_mean(cfg.dataset, DATASETS.names())}",
                          DATASETS.names())
    _check_options("data", "dataset", cfg.dataset, cfg.data, dataset_options(cfg.dataset))
    if not cfg.model.startswith(TV_PREFIX) and cfg.model not in MODELS:
        raise ConfigError("model", f"unknown model {cfg.model!r}{did_you_mean(cfg.model, MODELS.names())}",
                          list_models())
    allowed_model_opts = model_options(cfg.model)
    allowed = None if allowed_model_opts is None else list(allowed_model_opts)
    _check_options("model", "model", cfg.model, cfg.model_opts, allowed)
    return cfg


#: execution details that do not change what a trial computes, left out of its identity (moving a
#: sweep to a cluster with another data.root must not turn finished trials into new ones)
NOT_IDENTITY = ("device", "workers", "data.root", "data.download")


def identity(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a flat config that decide what a trial computes: all but `NOT_IDENTITY`, except
    that an `imagefolder` dataset IS its root (two roots are two datasets, never one trial)."""
    keep = {"data.root"} if flat.get("dataset") == "imagefolder" else set()
    return {k: v for k, v in flat.items() if k not in NOT_IDENTITY or k in keep}


def trial_hashes(cfg: TrainConfig) -> tuple[str, str]:
    """(config_hash, run_hash): 12 hex digits of the resolved config without / with the seed.

    Computed over `cfg.flat()`, the RESOLVED config (so spellings that normalise to the same value,
    `uniform(0,1)` vs `uniform(0.0, 1.0)`, hash the same; `mix.preset` is part of it, so a preset
    and its factors spelled out by hand do not), minus execution details (`identity`).
    """
    flat = identity(cfg.flat())
    seed = flat.pop("seed")

    def digest(obj: object) -> str:
        return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]

    return digest(flat), digest({**flat, "seed": seed})


# -- one trial, resolved once ---------------------------------------------------------------------------


def trial_name(run_hash: str) -> str:
    """The name of a trial that has no readable one (a sampled trial): `trial-<first 8 of its run_hash>`."""
    return f"trial-{run_hash[:8]}"


@dataclass(frozen=True)
class ResolvedTrial:
    """One trial's config, resolved once: what it runs, who it is, what it is called.

    Made by `resolve_trial` (or, for every trial of a grid, by `orchestrator.spec.expand`) and passed
    along instead of resolving the config again: the driver's check, launch, progress and sync read it.
    """

    cfg: TrainConfig  #: the validated, resolved config
    config_hash: str  #: 12 hex digits of the resolved config without the seed (`trial_hashes`)
    run_hash: str  #: 12 hex digits with the seed: the trial's identity and workdir name
    name: str  #: short display and MLflow run name, unique in its sweep
    epochs: int  #: epochs the trial trains (`cfg.epochs`)


def resolve_trial(config: Mapping[str, Any] | TrainConfig, name: str | None = None) -> ResolvedTrial:
    """Validate `config` once and derive the trial's identity; `name` defaults to `trial_name(run_hash)`.

    ConfigError as `validate_config`."""
    cfg = validate_config(config)
    config_hash, run_hash = trial_hashes(cfg)
    return ResolvedTrial(cfg, config_hash, run_hash, name or trial_name(run_hash), cfg.epochs)


__all__ = [
    "NOT_IDENTITY",
    "ConfigError",
    "ResolvedTrial",
    "TrainConfig",
    "describe_validation_error",
    "flatten",
    "identity",
    "known_keys",
    "parse_set",
    "parse_value",
    "resolve_trial",
    "show",
    "trial_hashes",
    "trial_name",
    "validate_config",
]

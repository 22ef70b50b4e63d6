"""The training configuration: flat dotted keys, validated with pydantic.

A config is a mapping of dotted keys (`optim.lr`, `mix.saliency`, `data.clutter`, ...); nested
YAML maps flatten to the same keys. A `recipe` supplies defaults that explicit keys override.
Every error names the key path and what is allowed (unknown keys get a "did you mean").

    cfg = validate_config({"dataset": "synthetic_salient", "model": "small_cnn", "mix.preset": "cutmix"})
    cfg.flat()   # the resolved config as dotted keys: what MLflow params and config.yaml show
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .mixing import FACTOR_KEYS, MixConfig, resolve_mix_config
from .mixing.registry import did_you_mean
from .recipes import RECIPES


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key path and what is allowed."""


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


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; a key given twice (nested and dotted) raises."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}{key!r}: config keys must be strings")
        path = f"{prefix}{key}"
        items = flatten(value, f"{path}.") if isinstance(value, Mapping) else {path: value}
        for k, v in items.items():
            if k in out:
                raise ConfigError(f"{k}: given twice (as a nested map and as a dotted key)")
            out[k] = v
    return out


def _pydantic_message(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    return f"{prefix}{loc}: {err['msg']} (got {got!r})"


def _suggest(key: str, known: list[str]) -> str:
    """did-you-mean, also for a dotted key given without its section (`lr` -> `optim.lr`)."""
    tail = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1] and k != key]
    return f" (did you mean '{tail[0]}'?)" if tail else did_you_mean(key, known)


def _check_options(prefix: str, kind: str, name: str, opts: dict[str, Any], allowed: list[str] | None) -> None:
    if allowed is None:
        return
    for key in opts:
        if key not in allowed:
            dotted = [f"{prefix}.{a}" for a in allowed]
            raise ConfigError(f"{prefix}.{key}: unknown option for {kind} {name!r}"
                              f"{did_you_mean(f'{prefix}.{key}', dotted)}; allowed: {', '.join(dotted) or '(none)'}")


def validate_config(raw: Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """Validate a (nested or dotted) config mapping into a frozen `TrainConfig`."""
    if isinstance(raw, TrainConfig):
        return raw
    from .data import DATASETS
    from .data.base import dataset_options
    from .models import model_options

    flat = flatten(raw)
    recipe = flat.get("recipe")
    if recipe is not None:
        try:
            flat = {**RECIPES.get(recipe), **flat}
        except ValueError as exc:
            raise ConfigError(f"recipe: {exc}") from None
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
                raise ConfigError(f"{key}: unknown key{_suggest(key, allowed)}; allowed: {', '.join(allowed)}")
            fields[head][rest] = value
        else:
            raise ConfigError(f"{key}: unknown key{_suggest(key, known_keys())}; "
                              f"known: {', '.join(known_keys())}")
    try:
        fields["mix"] = resolve_mix_config(mix)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for section in _SECTIONS:
        try:
            fields[section] = _SECTIONS[section](**fields[section])
        except ValidationError as exc:
            raise ConfigError(_pydantic_message(exc, f"{section}.")) from None
    try:
        cfg = TrainConfig(**fields)
    except ValidationError as exc:
        raise ConfigError(_pydantic_message(exc)) from None
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {cfg.dataset!r}"
                          f"{did_you_mean(cfg.dataset, DATASETS.names())}; known: {', '.join(DATASETS.names())}")
    _check_options("data", "dataset", cfg.dataset, cfg.data, dataset_options(cfg.dataset))
    try:
        allowed_model_opts = model_options(cfg.model)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
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
    import hashlib
    import json

    flat = identity(cfg.flat())
    seed = flat.pop("seed")

    def digest(obj: object) -> str:
        return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]

    return digest(flat), digest({**flat, "seed": seed})

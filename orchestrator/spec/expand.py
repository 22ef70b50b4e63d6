"""Grid expansion: a grid `SweepSpec` -> its trials (factors x seeds), each RESOLVED ONCE.

    trials = expand(load_spec("selection_schemes"))   # 5 schemes x 5 seeds = 25 trials
    trials[0].name, trials[0].config_hash, trials[0].run_hash, trials[0].cfg, trials[0].epochs

A `Trial` is a `trainables.config.ResolvedTrial` (the resolved config, both hashes, the name, the
epochs) plus where it comes from: its factor levels, its seed and the USER-level flat config
(base + levels + seed) that the trial is launched with, so that what MLflow shows as params is what
the trial resolved itself. Each arm is validated once; its seeds differ in `seed` only.

This is also the per-trial check of a grid spec (`load_spec` runs it and `SweepSpec.trials` keeps the
result, so the driver never resolves a trial twice): a config that does not validate is attributed to
spec lines (`check.diagnose_grid`), and two arms that resolve to the same training config - a preset
and its factors spelled out by hand, `uniform(0,1)` and `uniform(0.0, 1.0)` - are one trial twice,
an error. Order: factors in spec order (first factor outermost), seeds innermost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.config import ConfigError, ResolvedTrial, TrainConfig, trial_hashes

from ..errors import UserError
from .check import diagnose_grid, try_config
from .overrides import set_paths
from .source_map import FieldError, SourceMap, arm_label

if TYPE_CHECKING:
    from .model import SweepSpec

MAX_NAME = 60


@dataclass(frozen=True)
class Trial(ResolvedTrial):
    """One trial of a grid sweep: a resolved trial and where in the grid it sits."""

    config: dict[str, Any]  #: flat dotted user-level training config, including `seed`
    levels: dict[str, Any]  #: factor -> this trial's level (empty for a spec without factors)
    seed: int


def is_grid(spec: SweepSpec) -> bool:
    """True when the spec runs an explicit grid (`expand` applies); False for optuna specs."""
    return spec.search.algorithm == "grid"


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of a grid spec, first factor outermost, seeds innermost (resolved once per spec)."""
    return list(spec.trials)


def resolve_grid(spec: SweepSpec) -> tuple[Trial, ...]:
    """Resolve every trial of a grid spec (what `SweepSpec.trials` caches); UserError naming the spec line
    of a config that does not validate, of two arms that are one training config, and for optuna specs."""
    if not is_grid(spec):
        raise UserError(f"{spec.source}: search.algorithm: {spec.search.algorithm} samples its trials while it "
                        f"runs, so the spec has no explicit grid to expand (check is_grid(spec) first)")
    arms = spec.arms()
    results = [try_config({**spec.base, **arm, "seed": spec.seeds[0]}) for arm in arms]
    try:
        if any(isinstance(r, ConfigError) for r in results):
            raise diagnose_grid(spec, arms, results)
        cfgs: list[TrainConfig] = results  # type: ignore[assignment]
        hashes = [trial_hashes(cfg)[0] for cfg in cfgs]
        first: dict[str, int] = {}
        for i, config_hash in enumerate(hashes):
            if config_hash in first:
                raise FieldError(("factors",), f"duplicate trial: {arm_label(arms[first[config_hash]])} and "
                                               f"{arm_label(arms[i])} resolve to the same training config "
                                               f"(config_hash {config_hash}); remove one of the levels")
            first[config_hash] = i
    except FieldError as exc:
        raise SourceMap(spec.source, spec.text, set_paths(spec.overrides)).fail(exc.path, exc.message) from None
    trials = []
    for arm, cfg, arm_name in zip(arms, cfgs, _arm_names(spec, arms, hashes)):
        for seed in spec.seeds:
            seeded = cfg if seed == cfg.seed else cfg.model_copy(update={"seed": seed})
            config_hash, run_hash = trial_hashes(seeded)
            trials.append(Trial(cfg=seeded, config_hash=config_hash, run_hash=run_hash, name=f"{arm_name}-s{seed}",
                                epochs=seeded.epochs, config={**spec.base, **arm, "seed": seed}, levels=dict(arm),
                                seed=seed))
    return tuple(trials)


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else repr(value)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_.") or "x"


def _arm_names(spec: SweepSpec, arms: list[dict[str, Any]], hashes: list[str]) -> list[str]:
    """Readable arm names (levels joined by '-'), made unique with a piece of the config hash on collisions."""
    room = MAX_NAME - len(f"-s{max(spec.seeds)}")
    names = ["-".join(_slug(v) for v in arm.values()) or spec.name for arm in arms]
    names = [n[:room].rstrip("-_.") for n in names]
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    names = [n if counts[n] == 1 else f"{n[: room - 7].rstrip('-_.')}-{h[:6]}" for n, h in zip(names, hashes)]
    if len(set(names)) != len(names):  # pragma: no cover - only if a hash piece reproduces another arm's name
        names = [f"{n[: room - 13].rstrip('-_.')}-{h}" for n, h in zip(names, hashes)]
    return names


__all__ = ["MAX_NAME", "Trial", "expand", "is_grid", "resolve_grid"]

"""Grid expansion: a `SweepSpec` -> the explicit list of trials (factors x seeds), each with its hashes.

    trials = expand(load_spec("selection_schemes"))   # 5 schemes x 5 seeds = 25 trials
    trials[0].name, trials[0].config_hash, trials[0].run_hash

Order: factors in spec order (first factor outermost), seeds innermost. `config` is the USER-level flat
config (base + this arm's levels + seed), not the resolved one, so the trial resolves it itself and what
MLflow shows as params is what the trial ran. Hashes come from `trainables.config.trial_hashes` over the
resolved config: `config_hash` is shared by the seeds of one arm, `run_hash` is unique per trial, and two
spellings of the same training config (a preset vs its factors spelled out) hash the same - which is why
two such arms in one spec are an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .spec import SweepSpec, arm_label

MAX_NAME = 60


@dataclass(frozen=True)
class Trial:
    """One trial of a grid sweep."""

    config: dict[str, Any]  #: flat dotted user-level training config, including `seed`
    levels: dict[str, Any]  #: factor -> this trial's level (empty for a spec without factors)
    seed: int
    config_hash: str  #: 12 hex digits of the resolved config without the seed (equal across an arm's seeds)
    run_hash: str  #: 12 hex digits of the resolved config with the seed (unique in a sweep)
    name: str  #: short run name, e.g. `salient_to_salient-s3`; unique in the sweep


def is_grid(spec: SweepSpec) -> bool:
    """True when the spec runs an explicit grid (`expand` applies); False for optuna specs."""
    return spec.search.algorithm == "grid"


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


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of a grid spec, first factor outermost, seeds innermost."""
    from trainables.config import ConfigError, trial_hashes, validate_config

    if not is_grid(spec):
        raise UserError(f"{spec.source}: search.algorithm: {spec.search.algorithm} samples its trials while it "
                        f"runs, so the spec has no explicit grid to expand (check is_grid(spec) first)")
    arms = spec.arms()
    rows: list[tuple[dict[str, Any], list[tuple[dict[str, Any], int, str, str]]]] = []
    seen: dict[str, dict[str, Any]] = {}
    for levels in arms:
        per_seed = []
        for seed in spec.seeds:
            config = {**spec.base, **levels, "seed": seed}
            try:
                config_hash, run_hash = trial_hashes(validate_config(config))
            except ConfigError as exc:  # load_spec checked this; a spec built by hand may not have been
                raise UserError(f"{spec.source}: factors: {arm_label(levels)} (seed {seed}): {exc}") from None
            per_seed.append((config, seed, config_hash, run_hash))
        config_hash = per_seed[0][2]
        if config_hash in seen:
            raise UserError(f"{spec.source}: factors: duplicate trial: {arm_label(seen[config_hash])} and "
                            f"{arm_label(levels)} resolve to the same training config (config_hash {config_hash}); "
                            f"remove one of the levels")
        seen[config_hash] = levels
        rows.append((levels, per_seed))
    names = _arm_names(spec, arms, [per_seed[0][2] for _, per_seed in rows])
    return [
        Trial(config=config, levels=dict(levels), seed=seed, config_hash=config_hash, run_hash=run_hash,
              name=f"{arm_name}-s{seed}")
        for (levels, per_seed), arm_name in zip(rows, names)
        for config, seed, config_hash, run_hash in per_seed
    ]


__all__ = ["MAX_NAME", "Trial", "expand", "is_grid"]

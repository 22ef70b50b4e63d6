"""Search sweeps across launches: each launch is a fresh Tune experiment with the study rebuilt from storage.

Tune's experiment restore starts from its last state snapshot, not from what is on disk: after a
kill -9 it can miss checkpoints and trials and run nothing (see ORCHESTRATION.md), and Tune's
per-trial files (params.json, result.json) of the last seconds are not in the storage yet. So a
search resumes the way a grid does, from the trials' workdirs. A sampled trial writes the config
it was given into its workdir (`sampled.json`) before it trains; its state is its workdir's, or
"stopped" when ASHA stopped it:

- a trial that ended (finished, diverged, stopped by ASHA) goes into the study with the value Tune
  told Optuna when it ended: the per-epoch metric of its last epoch (a diverged trial reports the
  worst value);
- a trial that started but did not end is enqueued, so that it runs first with the same params,
  hence the same run_hash and workdir, and continues from its checkpoint;
- the launch samples what is left of `search.num_trials`, with the sampler seeded by the spec's
  seed plus the number of trials sampled so far (deterministic, and not the stream that sampled
  the earlier trials, which would sample them again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainables.config import ConfigError, resolve_trial
from trainables.metrics import EPOCH_METRICS, PER_EPOCH, WORST, epoch_curve
from trainables.trialdir import TrialState, read_config

from .errors import UserError
from .storage import SweepPaths

STUDY = "mixsweep"


@dataclass
class SearchHistory:
    """The trials of a search that started in earlier launches, and what this launch runs."""

    params: dict[str, dict[str, Any]] = field(default_factory=dict)  #: run_hash -> sampled params (dotted keys)
    states: dict[str, str] = field(default_factory=dict)  #: run_hash -> finished | failed | stopped | partial | new
    values: dict[str, float] = field(default_factory=dict)  #: run_hash -> the value of a trial that ended
    num_samples: int = 0  #: trials this launch runs: the unfinished ones first, then new samples

    @property
    def unfinished(self) -> list[str]:
        return [h for h in self.params if h not in self.values]

    def count(self, state: str) -> int:
        return sum(s == state for s in self.states.values())


def per_epoch_metric(metric: str) -> str:
    """The per-epoch metric ASHA and Optuna use for `metric`; UserError when there is none."""
    name = epoch_curve(metric)
    if name is None:
        raise UserError(f"metric {metric!r} exists only when a trial ends, but ASHA and search algorithms read the "
                        f"metric every epoch; use one of {', '.join(sorted({*EPOCH_METRICS, *PER_EPOCH}))}")
    return name


def _fits(dist, value: Any) -> bool:
    if dist.kind == "choice":
        return value in dist.choices
    return isinstance(value, int | float) and dist.low <= value <= dist.high


def search_history(spec, paths: SweepPaths, stopped: set[str]) -> SearchHistory:
    """What the storage says about the trials `spec`'s search sampled so far (`stopped`: ASHA stops)."""

    metric = per_epoch_metric(spec.metric)
    space = spec.search.space
    history = SearchHistory()
    for trial_dir in paths.trial_dirs():
        try:  # sweeps of older versions have only the resolved config: fine unless a choice is spelled otherwise
            sampled = trial_dir.read_sampled() if trial_dir.sampled.exists() else read_config(trial_dir.config)
            params = {k: sampled[k] for k in space}
            run_hash = resolve_trial({**spec.base_config(), **params, "seed": spec.seeds[0]}).run_hash
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            continue  # nothing yet (killed as it started), or a cut file
        if run_hash != trial_dir.name or not all(_fits(space[k], v) for k, v in params.items()):
            continue  # a trial of another version of the spec
        state = trial_dir.state()
        state = "stopped" if state == TrialState.PARTIAL and run_hash in stopped else str(state)
        history.params[run_hash], history.states[run_hash] = params, state
        epochs = trial_dir.read_metrics()
        if state == TrialState.FAILED:
            history.values[run_hash] = WORST[metric]
        elif state in ("finished", "stopped") and epochs and metric in epochs[-1]:
            history.values[run_hash] = float(epochs[-1][metric])
    history.num_samples = max(0, spec.search.num_trials - len(history.values))
    return history


def optuna_search(spec, history: SearchHistory, param_space: dict[str, Any]):
    """OptunaSearch over `param_space` ({"trial": {"config": ..., "meta": ...}}) that knows `history`."""
    import optuna
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    def optuna_params(params: dict[str, Any]) -> dict[str, Any]:  # OptunaSearch flattens the space with "/"
        return {f"trial/config/{k}": v for k, v in params.items()}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=STUDY,
                                direction="minimize" if spec.mode == "min" else "maximize")
    distributions = OptunaSearch.convert_search_space(param_space)
    for run_hash, value in history.values.items():
        study.add_trial(optuna.trial.create_trial(params=optuna_params(history.params[run_hash]),
                                                  distributions=distributions, value=value))
    for run_hash in history.unfinished:
        study.enqueue_trial(optuna_params(history.params[run_hash]))
    sampler = TPESampler(seed=spec.seeds[0] + len(history.params))
    return OptunaSearch(metric=per_epoch_metric(spec.metric), mode=spec.mode, sampler=sampler, storage=storage,
                        study_name=STUDY)

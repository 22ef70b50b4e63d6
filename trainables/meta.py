"""`TrialMeta`: what the driver tells a trial besides its config, the one value that crosses Ray with it.

The driver (`orchestrator.launch`) builds it once per trial: the sweep, where the trial tracks to
(MLflow URI, experiment, sweep run), its identity (run and config hash, display name) and its
persistent folder. Ray carries it inside the Tune param space as a plain dict of strings
(`to_dict` / `from_dict`): Ray writes the param space into its JSON results, which
`mixsweep sync` reads back, and a search algorithm flattens it into constant parameters.

A search trial is sampled by Ray, so the driver cannot know its identity: its meta carries
`trials_dir` and no `run_hash`, and the trial derives an identified copy (`identified`) once it
has validated its config. Nothing changes a TrialMeta in place (it is frozen).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .trialdir import TrialDir


@dataclass(frozen=True)
class TrialMeta:
    """The metadata of one trial (every field a string; "" = not known / not used).

    Args:
        sweep: the sweep's name (MLflow tag `mixsweep.sweep`).
        tracking_uri: absolute MLflow tracking URI; "" turns tracking off (a trial outside a sweep).
        experiment_id, sweep_run_id: the MLflow experiment and the sweep's parent run.
        git_commit: the commit the driver runs (MLflow tag `mixsweep.git_commit`).
        trials_dir: the sweep's `trials/` folder: a sampled trial's folder is `<trials_dir>/<run_hash>`.
        run_hash, config_hash: the trial's identity with and without the seed (empty until a sampled
            trial knows its config).
        run_name: the display name (MLflow run name, progress table).
        workdir: the trial's persistent folder; "" = a scratch folder in Ray's trial directory.
    """

    sweep: str = ""
    tracking_uri: str = ""
    experiment_id: str = ""
    sweep_run_id: str = ""
    git_commit: str = ""
    trials_dir: str = ""
    run_hash: str = ""
    config_hash: str = ""
    run_name: str = ""
    workdir: str = ""

    def to_dict(self) -> dict[str, str]:
        """What travels in the Tune param space."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrialMeta:
        """The meta a param space (or a Ray result) carried; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: str(v) for k, v in (data or {}).items() if k in known and v is not None})

    def identified(self, *, config_hash: str, run_hash: str, run_name: str) -> TrialMeta:
        """A copy that knows the trial's identity; its workdir goes under `trials_dir` when there is one."""
        workdir = str(Path(self.trials_dir) / run_hash) if self.trials_dir else self.workdir
        return replace(self, config_hash=config_hash, run_hash=run_hash, run_name=run_name, workdir=workdir)

    @property
    def trial_dir(self) -> TrialDir | None:
        """The trial's persistent folder, None when it has none."""
        return TrialDir(Path(self.workdir)) if self.workdir else None

"""Which trials and MLflow runs belong to a sweep as its spec stands now.

A sweep's statistics, its saved UI views and `status` describe the trials of the CURRENT spec only. When a
spec is edited (a base key, a factor level, the seeds), the trials of the configurations it no longer has
keep their folders and their MLflow runs, but never count again:

- their runs are *retired*: tag `mixsweep.role=retired` (the views and every reader select `role=trial`)
  and `mixsweep.retired` saying why (`not in spec <hash>: epochs=2 (spec: 3)`), and `run` says how many;
- a retired run whose configuration the spec has again (an edit undone) is restored: its trial folder
  still holds the finished trial, so nothing is trained twice;
- readers (`report`, `sync`, `settle`) keep only the current trials' runs and folders as well, so a store
  written before this rule existed cannot pool two configurations either.

Failed trials run again from scratch (`run --retry-failed`) are retired too, under a new run_hash
(`<run_hash>~<stamp>`), so that the new attempt gets a run of its own; those are never restored.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from trainables.tracking import TAG_ROLE, TAG_RUN_HASH, param_value

from . import tracking
from .search import search_history
from .spec import SweepSpec, Trial, expand, is_grid
from .storage import SweepPaths

TAG_RETIRED = "mixsweep.retired"  #: why a run left its sweep's statistics
ROLE_TRIAL, ROLE_RETIRED = "trial", "retired"
NOT_IN_SPEC = "not in spec"  #: the start of TAG_RETIRED for runs of configurations the spec no longer has
MAX_REASONS = 3  #: differing keys named per run


def current_hashes(spec: SweepSpec, paths: SweepPaths, stopped: Iterable[str] = ()) -> set[str]:
    """The run_hashes of the trials `spec` has: every trial of a grid; the trials a search sampled under this
    version of the spec (a trial of an earlier version resolves to another run_hash, see `search_history`)."""
    if is_grid(spec):
        return {t.run_hash for t in expand(spec)}
    return set(search_history(spec, paths, set(stopped)).params)


def _allowed_values(trials: Iterable[Trial]) -> dict[str, set[str]]:
    """key -> every value (as MLflow keeps params: strings) that the current trials have for it."""
    allowed: dict[str, set[str]] = {}
    for t in trials:
        for key, value in t.cfg.flat().items():
            allowed.setdefault(key, set()).add(param_value(value))
    return allowed


def why_not_current(params: Mapping[str, str], allowed: Mapping[str, set[str]]) -> str:
    """The keys of a run's params whose value no current trial has: `epochs=2 (spec: 3)`."""
    diffs = []
    for key in sorted(allowed):
        value = params.get(key)
        if value is not None and value not in allowed[key]:
            now = ", ".join(sorted(allowed[key])[:4]) + (", ..." if len(allowed[key]) > 4 else "")
            diffs.append(f"{key}={value} (spec: {now})")
    if not diffs:
        return "a configuration the spec no longer has"
    return "; ".join(diffs[:MAX_REASONS]) + (f"; +{len(diffs) - MAX_REASONS} more" if len(diffs) > MAX_REASONS
                                             else "")


@dataclass
class Reconciled:
    """What `reconcile_runs` changed."""

    retired: int = 0
    restored: int = 0
    reasons: Counter = field(default_factory=Counter)  #: why -> how many runs retired for it


def reconcile_runs(client, experiment_id: str, spec: SweepSpec, current: set[str], spec_hash: str) -> Reconciled:
    """Retire the sweep's trial runs that are not in `current`; restore retired ones that are again."""
    result = Reconciled()
    allowed = _allowed_values(expand(spec)) if is_grid(spec) else {}
    for run in tracking.sweep_runs(client, experiment_id, spec.name, role=None):
        tags = run.data.tags
        role, run_hash = tags.get(TAG_ROLE), tags.get(TAG_RUN_HASH)
        if role == ROLE_TRIAL and run_hash not in current:
            why = why_not_current(run.data.params, allowed) if allowed else "sampled under another version of it"
            client.set_tag(run.info.run_id, TAG_RETIRED, f"{NOT_IN_SPEC} {spec_hash}: {why}")
            client.set_tag(run.info.run_id, TAG_ROLE, ROLE_RETIRED)
            result.retired += 1
            result.reasons[why] += 1
        elif role == ROLE_RETIRED and run_hash in current and tags.get(TAG_RETIRED, "").startswith(NOT_IN_SPEC):
            client.set_tag(run.info.run_id, TAG_ROLE, ROLE_TRIAL)
            client.delete_tag(run.info.run_id, TAG_RETIRED)
            result.restored += 1
    return result


def say_reconciled(result: Reconciled, out: TextIO) -> None:
    """The lines `run` prints about retired and restored runs (nothing when nothing changed)."""
    if result.retired:
        why = "; ".join(f"{reason} ({n})" if len(result.reasons) > 1 else reason
                        for reason, n in result.reasons.most_common(MAX_REASONS))
        print(f"[mixsweep] {result.retired} MLflow run(s) of configurations this spec no longer has are retired "
              f"(tag {TAG_ROLE}={ROLE_RETIRED}; kept, but not in the statistics, the views or status): {why}",
              file=out)
    if result.restored:
        print(f"[mixsweep] {result.restored} retired MLflow run(s) are back in the sweep: the spec has their "
              "configurations again", file=out)


def retired_count(client, experiment_id: str, sweep: str) -> int:
    """How many of the sweep's runs are retired because the spec no longer has their configuration."""
    return sum(r.data.tags.get(TAG_RETIRED, "").startswith(NOT_IN_SPEC)
               for r in tracking.sweep_runs(client, experiment_id, sweep, role=ROLE_RETIRED))


def retire_failed(paths: SweepPaths, client, runs: dict[str, Any], trials: list[Trial], out: TextIO) -> None:
    """Run failed trials again from scratch: a retry from their checkpoint would diverge the same way.

    The old workdir moves to `<sweep>/retired/`, the old MLflow run keeps its data but gives up
    its run_hash (tag `mixsweep.role=retired`), so the new attempt gets a run of its own.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for t in trials:
        target = paths.root / "retired" / f"{t.run_hash}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(paths.trial(t.run_hash).folder), target)
        run = runs.get(t.run_hash)
        if run is not None:
            client.set_tag(run.info.run_id, TAG_RETIRED, f"failed, run again from scratch on {stamp}")
            client.set_tag(run.info.run_id, TAG_ROLE, ROLE_RETIRED)
            client.set_tag(run.info.run_id, TAG_RUN_HASH, f"{t.run_hash}~{stamp}")
    if trials:
        print(f"[mixsweep] retrying {len(trials)} failed trial(s) from scratch; their old folders are in "
              f"{paths.root / 'retired'}", file=out)

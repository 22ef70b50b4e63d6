"""`mixsweep status NAME` and `mixsweep run --dry-run`: what a sweep holds, from storage and MLflow."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from trainables.trialdir import TrialState

from . import tracking
from .errors import UserError
from .jobs import last_job
from .launch import check_no_live_driver
from .membership import retired_count
from .spec import SweepSpec, expand, is_grid, load_spec
from .storage import SweepPaths, SweepState, sweep_paths


def print_plan(spec: SweepSpec, paths: SweepPaths, out: TextIO) -> None:
    """The trials a run would consider, with their state in the storage (writes nothing)."""
    if not is_grid(spec):
        print(f"{spec.name}: {spec.search.algorithm} search, {spec.search.num_trials} trials over "
              f"{', '.join(f'{k}={v}' for k, v in spec.search.space.items())}", file=out)
        return
    trials = expand(spec)
    print(f"{spec.name}: {len(trials)} trials = {spec.num_arms()} arms x {len(spec.seeds)} seeds "
          f"(metric {spec.metric}, {spec.mode})", file=out)
    print(f"  {'trial':44s} {'run_hash':12s}  state", file=out)
    for t in trials:
        print(f"  {t.name[:44]:44s} {t.run_hash}  {paths.trial(t.run_hash).state()}", file=out)


def _driver_note(paths: SweepPaths) -> str:
    try:
        record = check_no_live_driver(paths)
    except UserError:
        return " (a driver is running)"
    return " (its last driver died: mixsweep resume continues it)" if record else ""


def sweep_status(name: str, *, storage: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    paths = sweep_paths(storage, name)
    state = SweepState.load(paths)
    statuses: dict[str, str] = {}
    metrics: dict[str, float] = {}
    retired = 0
    try:
        tracking.check_tracking_uri(state.tracking_uri, timeout=3)
        client = tracking.client(state.tracking_uri)
        tracking.check_sweep_store(client, state, load_spec(paths.spec).experiment, storage)
        retired = retired_count(client, state.experiment_id, name)
        for run in tracking.trial_runs(client, state.experiment_id, name):
            h = run.data.tags.get(tracking.TAG_RUN_HASH)
            statuses[h] = run.info.status
            if state.metric in run.data.metrics:
                metrics[h] = run.data.metrics[state.metric]
    except UserError as exc:  # e.g. a store that no longer holds the sweep: said whole
        print(f"(MLflow: {exc}; showing the storage view)", file=out)
    except Exception as exc:  # noqa: BLE001 - status still works from the storage alone
        print(f"(MLflow unavailable: {str(exc)[:200]}; showing the storage view)", file=out)
    print(f"sweep {name} in {paths.storage}: {len(state.trials)} trials, tracking {state.tracking_uri}"
          f"{_driver_note(paths)}", file=out)
    if retired:
        print(f"  {retired} MLflow run(s) of configurations the spec no longer has are retired (not shown, not in the "
              "report)", file=out)
    job = last_job(paths)
    if job:  # a submitted sweep: its job's own state is on the cluster
        print(f"  last Ray job: {job[0]} (its state: mixsweep status {name} --address {job[1]})", file=out)
    print(f"  {'trial':44s} {'state':9s} {'epochs':>7s} {'mlflow':9s} {state.metric:>16s}", file=out)
    stopped = set(state.stopped)  # by ASHA: ended, though its workdir has no final result
    stalls = []
    for t in state.trials:
        h = t.run_hash
        trial_dir = paths.trial(h)
        value = f"{metrics[h]:.2f}" if h in metrics else "-"
        state = trial_dir.state()
        epochs = trial_dir.epochs_done()
        shown = "stopped" if h in stopped and state == TrialState.PARTIAL else state
        stall = trial_dir.read_stalled()
        if stall:
            stalls.append(_stall_note(t.name, stall))
            if state in (TrialState.PARTIAL, TrialState.NEW) and epochs <= int(stall.get("epoch", 0)):
                shown = "stalled"  # no epoch since: stopped, waiting for (or in) Ray's retry
        print(f"  {t.name[:44]:44s} {shown:9s} {epochs:>7d} {statuses.get(h, '-'):9s} {value:>16s}", file=out)
    for note in stalls:
        print(note, file=out)
    return 0


def _stall_note(name: str, stall: dict) -> str:
    """The line about a trial that stalled (its `stalled.json`)."""
    times = f"{stall.get('count', 1)} time(s), last" if stall.get("count", 1) != 1 else "once,"
    return (f"  {name}: stalled {times} at {stall.get('at', '?')} in epoch {int(stall.get('epoch', 0)) + 1} (no "
            f"progress for {stall.get('silent_s', '?')} s, limit {stall.get('limit_s', '?')} s: stall_timeout); its "
            f"process was stopped, for Ray to retry it from its checkpoint (it counts against max_failures)")

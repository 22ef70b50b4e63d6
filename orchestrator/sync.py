"""`mixsweep sync NAME`: back-fill MLflow from the Ray results, idempotently.

When the tracking server was unreachable for part of a sweep, trials kept training (tracking
never fails a trial) and their metrics stayed in Ray's results (`result.json` of every launch)
and in their workdirs. Sync replays them into MLflow with the trials' own get-or-create and
"log an epoch only once" rules, so running it twice changes nothing, then sets each run's
status from what the trial reached (FINISHED / FAILED / KILLED; RUNNING only while a driver runs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trainables.config import ConfigError, resolve_trial, trial_name
from trainables.meta import TrialMeta
from trainables.metrics import FINAL_ERR, TEST_ERR
from trainables.tracking import TrialTracker
from trainables.trialdir import TrialDir, TrialState, read_config

from . import tracking
from .errors import UserError
from .launch import check_no_live_driver
from .membership import current_hashes
from .spec import expand, is_grid, load_spec
from .storage import SweepPaths, SweepState, sweep_lock, sweep_paths

#: the states of a trial that has ended for good
ENDED = (TrialState.FINISHED, TrialState.FAILED)


@dataclass
class TrialRecord:
    """What the results say about one trial."""

    run_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    meta: TrialMeta = field(default_factory=TrialMeta)  #: as the first Ray result carried it
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, float] | None = None
    error: str | None = None
    config_file: Path | None = None  #: the workdir's config.yaml, read only when needed


def _record(records: dict[str, TrialRecord], run_hash: str) -> TrialRecord:
    return records.setdefault(run_hash, TrialRecord(run_hash))


def collect(paths: SweepPaths) -> dict[str, TrialRecord]:
    """Per run_hash: config, every epoch's metrics (first report wins), final metrics, failure."""
    records: dict[str, TrialRecord] = {}
    from ray.tune.result import AUTO_RESULT_KEYS, DONE, TRIAL_ID

    bookkeeping = {*AUTO_RESULT_KEYS, DONE, TRIAL_ID}  # what Ray adds to each report: not a trial metric
    for result_file in sorted(paths.ray.glob("*/*/result.json")):
        for line in result_file.read_text(errors="replace").splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            trial = (result.get("config") or {}).get("trial") or {}
            meta = TrialMeta.from_dict(trial.get("meta"))
            run_hash = result.get("run_hash") or meta.run_hash
            if not run_hash:
                continue
            rec = _record(records, run_hash)
            rec.config = rec.config or dict(trial.get("config") or {})
            rec.meta = rec.meta if rec.meta != TrialMeta() else meta
            if result.get("failed") or result.get("diverged"):  # `diverged`: results of older versions
                rec.error = str(result.get("error", "failed"))
            elif "epoch" in result and TEST_ERR in result:
                metrics = {k: v for k, v in result.items() if k not in bookkeeping}
                rec.epochs.setdefault(int(result["epoch"]), metrics)
                if FINAL_ERR in result:
                    rec.final = {k: v for k, v in result.items()
                                 if k.startswith(("final/", "best/", "robust/", "cost/"))}
    for trial_dir in paths.trial_dirs():  # workdirs on this machine complete the picture
        rec = _record(records, trial_dir.name)
        if trial_dir.config.exists() and not rec.config:
            rec.config_file = trial_dir.config
        for m in trial_dir.read_metrics():
            rec.epochs.setdefault(int(m["epoch"]), m)
        final = _read_json(trial_dir.final)
        if final:
            rec.final = final
        if trial_dir.failed.exists():
            rec.error = str((_read_json(trial_dir.failed) or {}).get("error", f"failed ({TrialDir.FAILED} is "
                                                                              "damaged)"))
    return {h: r for h, r in records.items() if (r.config or r.config_file) and (r.epochs or r.error)}


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file of a trial's workdir; None when missing, and when damaged (said on stderr)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        print(f"[mixsweep] {path} cannot be read ({type(exc).__name__}); ignoring it", file=sys.stderr)
        return None
    return data if isinstance(data, dict) else None


def trial_config(rec: TrialRecord, launched: Mapping[str, Mapping[str, Any]]):
    """The trial, resolved from its config: as Ray recorded it, as the spec launched it, or its config.yaml.

    Raises ConfigError (naming the file) when none of them validates.
    """

    errors = []
    for source, raw in (("its Ray results", rec.config), ("the sweep's spec", launched.get(rec.run_hash))):
        if raw:
            try:
                return resolve_trial(raw)
            except ConfigError as exc:
                errors.append(f"{source}: {exc}")
    if rec.config_file is not None:
        try:
            return resolve_trial(read_config(rec.config_file))
        except ConfigError as exc:
            errors.append(f"{rec.config_file}: {exc}")
    raise ConfigError((), "; ".join(errors) or "no config recorded")


def sync_trials(paths: SweepPaths, state: SweepState, *, only: set[str] | None = None,
                skip: set[str] = frozenset(), unfinished: tuple[str, str] | None = None,
                launched: Mapping[str, Mapping[str, Any]] | None = None, out: TextIO | None = None) -> SyncResult:
    """Replay the trials' results into MLflow.

    Args:
        only: run_hashes to sync (default: every trial with results).
        skip: run_hashes not to sync (trials ASHA stopped early keep what the driver recorded).
        unfinished: (status, reason) for trials that neither finished nor failed; None leaves
            their runs as they are (a driver may still be running them).
        launched: run_hash -> the config the sweep launched it with (grid sweeps), a fallback when
            the trial's own records cannot be read.

    A trial whose config cannot be read from anywhere is skipped and named (with its folder) in
    `SyncResult.unreadable`; the others are synced. MLflow failing raises UserError.
    """
    out = out or sys.stderr
    uri = state.tracking_uri
    names = state.names
    records = {h: r for h, r in collect(paths).items() if (only is None or h in only) and h not in skip}
    result = SyncResult()
    for run_hash, rec in sorted(records.items()):
        try:
            trial = trial_config(rec, launched or {})
        except ConfigError as exc:
            result.unreadable[run_hash] = str(exc)
            print(f"[mixsweep] trial {run_hash}: skipped, its config cannot be read ({exc}). Its results stay in "
                  f"{paths.trial(run_hash).folder}; to run it again from scratch, delete that folder and resume",
                  file=out)
            continue
        meta = TrialMeta(sweep=state.name, run_hash=run_hash, config_hash=trial.config_hash, tracking_uri=uri,
                         experiment_id=state.experiment_id, sweep_run_id=state.sweep_run_id,
                         run_name=names.get(run_hash, rec.meta.run_name or trial_name(run_hash)),
                         git_commit=rec.meta.git_commit)
        tracker = TrialTracker(meta, trial.cfg.flat())
        before = tracker.last_step
        for epoch in sorted(rec.epochs):
            tracker.log_epoch(epoch, rec.epochs[epoch])
        result.synced += 1
        result.epochs += sum(1 for e in rec.epochs if e > before)
        if rec.final and tracker.active and FINAL_ERR not in tracker.client.get_run(tracker.run_id).data.metrics:
            tracker.log_final(max(rec.epochs), rec.final)
        if rec.final:
            tracker.log_artifacts(*paths.trial(run_hash).artifacts)
            tracker.finish("FINISHED")
        elif rec.error:
            tracker.finish("FAILED", rec.error)
        elif unfinished is not None:
            tracker.finish(*unfinished)
        if tracker.error:
            raise UserError(f"MLflow at {uri} failed while syncing: {tracker.error}") from tracker.exception
    return result


@dataclass
class SyncResult:
    """What `sync_trials` did."""

    synced: int = 0  #: trials replayed into MLflow
    epochs: int = 0  #: epochs back-filled
    unreadable: dict[str, str] = field(default_factory=dict)  #: run_hash -> why its config cannot be read


def sync_sweep(name: str, *, storage: Path, out: TextIO | None = None) -> int:
    out = out or sys.stderr
    paths = sweep_paths(storage, name)
    state = SweepState.load(paths)
    uri = state.tracking_uri
    tracking.check_tracking_uri(uri)
    check_no_live_driver(paths)  # a running driver keeps its own books (and holds the sweep's lock)
    hint = f"not finished; continue with: mixsweep resume {name} --storage {storage}"
    stopped = set(state.stopped)
    with sweep_lock(paths, "sync"):
        tracking.check_sweep_store(tracking.client(uri), state, _experiment(paths), storage)
        current = _current(paths, state)  # not the trials of an earlier version of the spec
        result = sync_trials(paths, state, only=current, skip=stopped, unfinished=("KILLED", hint),
                             launched=launched_configs(paths), out=out)
        ended = all(t.run_hash in stopped or paths.trial(t.run_hash).state() in ENDED for t in state.trials)
        tracking.client(uri).set_terminated(state.sweep_run_id, "FINISHED" if ended else "KILLED")
    print(f"[mixsweep] synced {result.synced} trial(s) of {name} into {uri}: {result.epochs} epoch(s) back-filled"
          + (f"; {len(result.unreadable)} skipped (see above)" if result.unreadable else ""), file=out)
    return 1 if result.unreadable else 0


def _experiment(paths: SweepPaths) -> str:
    """The MLflow experiment of the sweep's spec; UserError when spec.yaml cannot be read (then nothing is written)."""
    return load_spec(paths.spec).experiment


def _current(paths: SweepPaths, state: SweepState) -> set[str]:
    """The run_hashes of the sweep's spec as it stands (a grid's are in sweep.json when spec.yaml cannot be read)."""
    try:
        spec = load_spec(paths.spec)
    except UserError:
        return {t.run_hash for t in state.trials}
    return current_hashes(spec, paths, state.stopped)


def launched_configs(paths: SweepPaths) -> dict[str, dict[str, Any]]:
    """run_hash -> launch config of a grid sweep, from its saved spec ({} when there is none to read)."""
    try:
        spec = load_spec(paths.spec)
    except UserError:
        return {}
    return {t.run_hash: t.config for t in expand(spec)} if is_grid(spec) else {}

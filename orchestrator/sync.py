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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import tracking
from .errors import UserError
from .launch import check_no_live_driver
from .storage import SweepPaths, load_state, sweep_paths


@dataclass
class TrialRecord:
    """What the results say about one trial."""

    run_hash: str
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, float] | None = None
    error: str | None = None


def _record(records: dict[str, TrialRecord], run_hash: str) -> TrialRecord:
    return records.setdefault(run_hash, TrialRecord(run_hash))


def collect(paths: SweepPaths) -> dict[str, TrialRecord]:
    """Per run_hash: config, every epoch's metrics (first report wins), final metrics, failure."""
    records: dict[str, TrialRecord] = {}
    for result_file in sorted(paths.ray.glob("*/*/result.json")):
        for line in result_file.read_text(errors="replace").splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            trial = (result.get("config") or {}).get("trial") or {}
            run_hash = result.get("run_hash") or (trial.get("meta") or {}).get("run_hash")
            if not run_hash:
                continue
            rec = _record(records, run_hash)
            rec.config = rec.config or dict(trial.get("config") or {})
            rec.meta = rec.meta or dict(trial.get("meta") or {})
            if result.get("diverged"):
                rec.error = str(result.get("error", "diverged"))
            elif "epoch" in result and "test/top1_err" in result:
                rec.epochs.setdefault(int(result["epoch"]), result)
                if "final/top1_err" in result:
                    rec.final = {k: v for k, v in result.items()
                                 if k.startswith(("final/", "best/", "robust/", "cost/"))}
    for workdir in sorted(paths.trials.glob("*")):  # workdirs on this machine complete the picture
        rec = _record(records, workdir.name)
        if (workdir / "config.yaml").exists() and not rec.config:
            rec.config = yaml.safe_load((workdir / "config.yaml").read_text()) or {}
        if (workdir / "metrics.jsonl").exists():
            for line in (workdir / "metrics.jsonl").read_text().splitlines():
                if line.strip():
                    m = json.loads(line)
                    rec.epochs.setdefault(int(m["epoch"]), m)
        if (workdir / "final.json").exists():
            rec.final = json.loads((workdir / "final.json").read_text())
        if (workdir / "failed.json").exists():
            rec.error = json.loads((workdir / "failed.json").read_text()).get("error", "diverged")
    return {h: r for h, r in records.items() if r.config and (r.epochs or r.error)}


def sync_sweep(name: str, *, storage: Path, out: TextIO = sys.stderr) -> int:
    from trainables.config import trial_hashes, validate_config
    from trainables.tracking import TrialTracker

    paths = sweep_paths(storage, name)
    state = load_state(paths)
    uri = state["tracking_uri"]
    tracking.check_tracking_uri(uri)
    driver_alive = False
    try:
        check_no_live_driver(paths)
    except UserError:
        driver_alive = True
    names = {t["run_hash"]: t["name"] for t in state.get("trials", [])}
    records = collect(paths)
    logged = statuses = 0
    for run_hash, rec in sorted(records.items()):
        cfg = validate_config(rec.config)
        config_hash, _ = trial_hashes(cfg)
        meta = {"sweep": name, "run_hash": run_hash, "config_hash": config_hash, "tracking_uri": uri,
                "experiment_id": state["experiment_id"], "sweep_run_id": state["sweep_run_id"],
                "run_name": names.get(run_hash, rec.meta.get("run_name", f"trial-{run_hash[:8]}")),
                "git_commit": rec.meta.get("git_commit", "")}
        tracker = TrialTracker(meta, cfg.flat())
        if tracker.error:
            raise UserError(f"MLflow at {uri} failed while syncing: {tracker.error}")
        before = tracker.last_step
        for epoch in sorted(rec.epochs):
            tracker.log_epoch(epoch, rec.epochs[epoch])
        logged += sum(1 for e in rec.epochs if e > before)
        has_final = "final/top1_err" in tracker.client.get_run(tracker.run_id).data.metrics
        if rec.final and not has_final:
            tracker.log_final(max(rec.epochs), rec.final)
        if rec.final:
            tracker.finish("FINISHED")
        elif rec.error:
            tracker.finish("FAILED", rec.error)
        elif not driver_alive:
            tracker.finish("KILLED", f"not finished; continue with: mixsweep resume {name} --storage {storage}")
        statuses += 1
        if tracker.error:
            raise UserError(f"MLflow at {uri} failed while syncing: {tracker.error}")
    print(f"[mixsweep] synced {len(records)} trial(s) of {name} into {uri}: {logged} epoch(s) back-filled, "
          f"{statuses} status(es) set", file=out)
    return 0

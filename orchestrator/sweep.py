"""The sweep workflows behind `mixsweep run | resume | status`.

A trial's state comes from its workdir (final.json / failed.json / checkpoints) and MLflow; a
trial that ended (finished, diverged, or stopped early by ASHA) is never launched again, so
re-running `run` on an extended grid launches only the new trials, and `resume` after a crash
or a stop launches only what is left.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import tracking
from .errors import UserError
from .expand import Trial, expand, is_grid
from .launch import (
    LaunchPlan,
    check_no_live_driver,
    epochs_done,
    leftover_ray_processes,
    record_driver,
    run_plan,
    stop_processes,
    trial_meta,
    trial_state,
)
from .spec import SweepSpec, load_spec
from .storage import SweepPaths, load_state, save_state, sweep_paths

RESUME_HINT = "mixsweep resume {name} --storage {storage}"


def spec_hash(spec: SweepSpec) -> str:
    return hashlib.sha1(spec.to_yaml().encode()).hexdigest()[:12]


def sweep_params(spec: SweepSpec) -> dict[str, Any]:
    """The sweep run's params: the spec's settings, base and factor lists."""
    params: dict[str, Any] = {
        "sweep.metric": spec.metric, "sweep.mode": spec.mode, "sweep.seeds": list(spec.seeds),
        "sweep.search": spec.search.algorithm, "sweep.scheduler": spec.scheduler,
        "sweep.resources.cpu": spec.resources.cpu, "sweep.resources.gpu": spec.resources.gpu,
        "sweep.max_failures": spec.max_failures,
    }
    params.update({f"base.{k}": v for k, v in spec.base.items()})
    params.update({f"factors.{k}": list(v) for k, v in spec.factors.items()})
    params.update({f"search.{k}": str(v) for k, v in spec.search.space.items()})
    return params


@dataclass
class Plan:
    """Which trials of a grid are done and which get launched."""

    trials: list[Trial]
    finished: list[Trial] = field(default_factory=list)
    failed: list[Trial] = field(default_factory=list)
    stopped: list[Trial] = field(default_factory=list)
    todo: list[Trial] = field(default_factory=list)


def classify(trials: list[Trial], paths: SweepPaths, finished_in_mlflow: set[str], stopped: set[str],
             retry_failed: bool) -> Plan:
    plan = Plan(trials)
    for t in trials:
        state = trial_state(paths.workdir(t.run_hash))
        if state == "finished" or t.run_hash in finished_in_mlflow:
            plan.finished.append(t)
        elif state == "failed" and not retry_failed:
            plan.failed.append(t)
        elif t.run_hash in stopped:
            plan.stopped.append(t)
        else:
            if state == "failed":
                (paths.workdir(t.run_hash) / "failed.json").unlink()
            plan.todo.append(t)
    return plan


def _epochs(trial: Trial) -> int:
    from trainables.config import validate_config

    return validate_config(trial.config).epochs


def _cleanup_leftovers(paths: SweepPaths, out: TextIO) -> None:
    record = check_no_live_driver(paths)
    if record is None:
        return
    procs = leftover_ray_processes(record)
    print(f"[mixsweep] the previous driver (pid {record.get('pid')}, started {record.get('started')}) is gone",
          file=out)
    if procs:
        names = ", ".join(sorted({_name(p) for p in procs}))
        print(f"[mixsweep] found {len(procs)} leftover process(es) of its local Ray instance ({names}); "
              f"stopping them so that nothing orphaned keeps running or writing", file=out)
        stop_processes(procs)
    else:
        print("[mixsweep] no leftover Ray processes of it are running", file=out)
    paths.driver.unlink(missing_ok=True)


def _name(proc) -> str:
    try:
        return proc.name()
    except Exception:  # noqa: BLE001 - it may have exited meanwhile
        return "?"


def _tracking(spec: SweepSpec, paths: SweepPaths, uri: str):
    tracking.check_tracking_uri(uri)
    client = tracking.client(uri)
    artifact_root = paths.storage / "mlartifacts" if uri.startswith("sqlite:") else None
    try:
        exp_id = tracking.ensure_experiment(client, spec.experiment, artifact_root)
        sweep_run = tracking.ensure_sweep_run(client, exp_id, spec, spec_hash(spec), sweep_params(spec))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store that answers but fails is the user's to fix
        raise UserError(f"MLflow tracking store {uri} failed: {type(exc).__name__}: {exc}") from None
    return client, exp_id, sweep_run


ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")


def check_address(address: str | None) -> None:
    if address is not None and not ADDRESS.match(address):
        raise UserError(f"--address {address!r}: expected 'auto', HOST:PORT (a cluster's GCS) or ray://HOST:PORT "
                        "(Ray Client)")


def launch_sweep(spec: SweepSpec, paths: SweepPaths, *, tracking_uri: str, address: str | None,
                 retry_failed: bool = False, out: TextIO | None = None) -> int:
    """Run what is left of `spec` in `paths`; returns the exit code (0 done, 1 failures, 130 stopped)."""
    out = out or sys.stderr
    from .progress import Progress

    check_address(address)
    tracking.check_tracking_uri(tracking_uri, require_folder=False)  # fail fast, before anything is written
    try:
        paths.storage.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--storage {paths.storage} cannot be created: {exc.strerror}") from None
    _cleanup_leftovers(paths, out)
    client, exp_id, sweep_run = _tracking(spec, paths, tracking_uri)
    paths.root.mkdir(parents=True, exist_ok=True)
    old = load_state(paths) if paths.state.exists() else {}
    grid = is_grid(spec)
    trials = expand(spec) if grid else []
    plan = classify(trials, paths, tracking.finished_hashes(tracking.trial_runs(client, exp_id, spec.name)),
                    set(old.get("stopped", [])), retry_failed)
    launches = int(old.get("launches", 0))
    state = {"name": spec.name, "source": spec.source, "spec_hash": spec_hash(spec), "tracking_uri": tracking_uri,
             "experiment_id": exp_id, "sweep_run_id": sweep_run, "metric": spec.metric, "mode": spec.mode,
             "address": address or "", "launches": launches, "stopped": old.get("stopped", []),
             "trials": [{"run_hash": t.run_hash, "config_hash": t.config_hash, "name": t.name, "seed": t.seed,
                         "levels": t.levels} for t in trials]}
    from trainables.checkpoint import atomic_write_text

    atomic_write_text(paths.spec, spec.to_yaml())
    save_state(paths, state)
    ended = {t.run_hash for t in plan.finished + plan.failed}
    if ended:  # e.g. killed between final.json and closing its MLflow run
        from .sync import sync_trials

        sync_trials(paths, state, only=ended)
    if grid:
        print(f"[mixsweep] sweep {spec.name}: {len(trials)} trials ({spec.num_arms()} arms x {len(spec.seeds)} seeds)"
              f" - {len(plan.finished)} finished, {len(plan.failed)} failed earlier"
              f"{' (use --retry-failed to run them again)' if plan.failed else ''}, {len(plan.stopped)} stopped by "
              f"ASHA; launching {len(plan.todo)}", file=out)
        if not plan.todo:
            tracking.client(tracking_uri).set_terminated(sweep_run, "FINISHED")
            print("[mixsweep] nothing to run", file=out)
            return 1 if plan.failed else 0
        name = f"launch-{launches + 1:03d}"
        restore = False
    else:
        name = "search"
        from ray import tune

        restore = (paths.ray / name).exists() and tune.Tuner.can_restore(str(paths.ray / name))
        print(f"[mixsweep] sweep {spec.name}: {spec.search.algorithm} search, {spec.search.num_trials} trials"
              f"{' (restoring the search)' if restore else ''}", file=out)
    state["launches"] = launches + 1
    save_state(paths, state)
    meta = trial_meta(spec, paths, tracking_uri, exp_id, sweep_run, tracking.git_commit())
    progress = Progress(metric=spec.metric, names={t.run_hash: t.name for t in plan.todo},
                        epochs={t.run_hash: _epochs(t) for t in plan.todo}, out=out,
                        on_start=lambda: record_driver(paths, address))
    try:
        completed = run_plan(LaunchPlan(spec, paths, plan.todo, meta, address, name, restore), progress)
    except BaseException:
        _settle_safely(spec, paths, client, exp_id, sweep_run, progress, False, out)  # no run left RUNNING
        raise
    return _settle_safely(spec, paths, client, exp_id, sweep_run, progress, completed, out)


def _settle_safely(spec, paths, client, exp_id, sweep_run, progress, completed, out) -> int:
    """`_settle`, surviving a tracking server that went away during the sweep."""
    try:
        return _settle(spec, paths, client, exp_id, sweep_run, progress, completed, out)
    except Exception as exc:  # noqa: BLE001 - the trials' results are safe in the storage
        print(f"[mixsweep] MLflow is unreachable ({type(exc).__name__}: {str(exc)[:200]}); the trials' results are "
              f"safe in {paths.root}. Once the server is back: mixsweep sync {spec.name} --storage {paths.storage}",
              file=out)
        return 130 if not completed else 1


def _settle(spec: SweepSpec, paths: SweepPaths, client, exp_id: str, sweep_run: str, progress, completed: bool,
            out: TextIO) -> int:
    """After a launch: mark MLflow runs that cannot still be running, record ASHA stops, summarise."""
    state = load_state(paths)
    hint = RESUME_HINT.format(name=spec.name, storage=paths.storage)
    runs = tracking.trial_runs(client, exp_id, spec.name)
    early: dict[str, int] = {}
    if completed:
        # Tune "completed" a trial that has no final result: ASHA stopped it early. It has ended.
        early = {r.run_hash: r.epoch for r in progress.rows.values()
                 if r.status == "FINISHED" and r.final is None and r.epochs and r.epoch < r.epochs}
        for run in runs:
            epoch = early.get(run.data.tags.get(tracking.TAG_RUN_HASH))
            if epoch is not None:
                client.set_tag(run.info.run_id, tracking.TAG_ERROR, f"stopped early by ASHA after epoch {epoch}")
                client.set_terminated(run.info.run_id, "KILLED")
        state["stopped"] = sorted({*state.get("stopped", []), *early})
        unfinished = ("FAILED", "the trial's process ended without finishing (see the Ray log)")
    else:
        unfinished = ("KILLED", f"sweep stopped; resume with: {hint}")
    from .sync import sync_trials

    launched = {r.run_hash for r in progress.rows.values()} - set(early)
    sync_trials(paths, state, only=launched, unfinished=unfinished)  # what the results say, per trial
    tracking.mark_unfinished(client, tracking.trial_runs(client, exp_id, spec.name), *unfinished)  # no results yet
    if not completed:
        running = sum(r.status == "RUNNING" for r in progress.rows.values())
        print(f"[mixsweep] stopped: {running} running trial(s) keep their last checkpoint and are marked KILLED in "
              "MLflow", file=out)
    save_state(paths, state)
    counts = {"finished": 0, "failed": 0, "partial": 0, "new": 0}
    for t in state["trials"]:
        counts[trial_state(paths.workdir(t["run_hash"]))] += 1
    ended_early = set(state["stopped"]) & {t["run_hash"] for t in state["trials"]}
    remaining = counts["partial"] + counts["new"] - len(ended_early)
    if state["trials"]:
        print(f"[mixsweep] sweep {spec.name}: {counts['finished']} finished, {counts['failed']} failed, "
              f"{remaining} not finished of {len(state['trials'])}", file=out)
    if not completed:
        client.set_terminated(sweep_run, "KILLED")
        print(f"[mixsweep] to continue: {hint}", file=out)
        return 130
    if remaining:
        client.set_terminated(sweep_run, "FAILED")
        print(f"[mixsweep] some trials did not finish; to run them again: {hint}", file=out)
        return 1
    client.set_terminated(sweep_run, "FINISHED")
    print(f"[mixsweep] next: mixsweep report {spec.name} --storage {paths.storage}", file=out)
    return 1 if counts["failed"] else 0


def run_sweep(ref: str, *, storage: Path, tracking_uri: str | None, address: str | None, overrides: dict[str, Any],
              dry_run: bool = False, retry_failed: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stderr
    spec = load_spec(ref, overrides=overrides)
    paths = sweep_paths(storage, spec.name)
    check_address(address)
    uri = tracking_uri or tracking.default_tracking_uri(storage)
    if dry_run:
        print_plan(spec, paths, out=sys.stdout)
        return 0
    return launch_sweep(spec, paths, tracking_uri=uri, address=address, retry_failed=retry_failed, out=out)


def resume_sweep(name: str, *, storage: Path, address: str | None, retry_failed: bool = False,
                 out: TextIO | None = None) -> int:
    out = out or sys.stderr
    paths = sweep_paths(storage, name)
    state = load_state(paths)
    spec = load_spec(paths.spec)
    counts = {"finished": 0, "failed": 0, "partial": 0, "new": 0}
    for t in state.get("trials", []):
        counts[trial_state(paths.workdir(t["run_hash"]))] += 1
    print(f"[mixsweep] resuming {name}: {counts['finished']} finished, {counts['failed']} failed, {counts['partial']} "
          f"with checkpoints (continue from their last epoch), {counts['new']} not started", file=out)
    return launch_sweep(spec, paths, tracking_uri=state["tracking_uri"],
                        address=address or state.get("address") or None, retry_failed=retry_failed, out=out)


def print_plan(spec: SweepSpec, paths: SweepPaths, out: TextIO) -> None:
    if not is_grid(spec):
        print(f"{spec.name}: {spec.search.algorithm} search, {spec.search.num_trials} trials over "
              f"{', '.join(f'{k}={v}' for k, v in spec.search.space.items())}", file=out)
        return
    trials = expand(spec)
    print(f"{spec.name}: {len(trials)} trials = {spec.num_arms()} arms x {len(spec.seeds)} seeds "
          f"(metric {spec.metric}, {spec.mode})", file=out)
    print(f"  {'trial':44s} {'run_hash':12s}  state", file=out)
    for t in trials:
        print(f"  {t.name[:44]:44s} {t.run_hash}  {trial_state(paths.workdir(t.run_hash))}", file=out)


def sweep_status(name: str, *, storage: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    paths = sweep_paths(storage, name)
    state = load_state(paths)
    statuses: dict[str, str] = {}
    metrics: dict[str, float] = {}
    try:
        client = tracking.client(state["tracking_uri"])
        tracking.check_tracking_uri(state["tracking_uri"], timeout=3)
        for run in tracking.trial_runs(client, state["experiment_id"], name):
            h = run.data.tags.get(tracking.TAG_RUN_HASH)
            statuses[h] = run.info.status
            if state["metric"] in run.data.metrics:
                metrics[h] = run.data.metrics[state["metric"]]
    except Exception as exc:  # noqa: BLE001 - status still works from the storage alone
        print(f"(MLflow unavailable: {exc}; showing the storage view)", file=out)
    record = paths.driver.exists()
    print(f"sweep {name} in {paths.storage}: {len(state['trials'])} trials, tracking {state['tracking_uri']}"
          f"{' (a driver is running)' if record else ''}", file=out)
    print(f"  {'trial':44s} {'state':9s} {'epochs':>7s} {'mlflow':9s} {state['metric']:>16s}", file=out)
    for t in state["trials"]:
        h = t["run_hash"]
        wd = paths.workdir(h)
        value = f"{metrics[h]:.2f}" if h in metrics else "-"
        print(f"  {t['name'][:44]:44s} {trial_state(wd):9s} {epochs_done(wd):>7d} {statuses.get(h, '-'):9s} "
              f"{value:>16s}", file=out)
    return 0

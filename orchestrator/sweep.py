"""The sweep workflows behind `mixsweep run` and `mixsweep resume`.

A trial's state comes from its workdir (final.json / failed.json / checkpoints) and MLflow; a
trial that ended (finished, diverged, or stopped early by ASHA) is not launched again, so
re-running `run` on an extended grid launches only the new trials, and `resume` after a crash
or a stop launches only what is left. One lock per sweep keeps two drivers off the same trials.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trainables.checkpoint import disk_full
from trainables.config import trial_name

from . import tracking
from .errors import UserError
from .launch import (
    STOP_TIMEOUT_S,
    LaunchPlan,
    StopSignals,
    check_data,
    check_no_live_driver,
    leftover_ray_processes,
    per_epoch_metric,
    record_driver,
    run_plan,
    stop_processes,
    trial_meta,
    trial_state,
)
from .spec import SweepSpec, Trial, expand, is_grid, load_spec
from .storage import DamagedState, SweepPaths, load_state, save_state, sweep_lock, sweep_paths
from .sync import collect, sync_trials

RESUME_HINT = "mixsweep resume {name} --storage {storage}"
ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")


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


def check_address(address: str | None) -> None:
    if address is not None and not ADDRESS.match(address):
        raise UserError(f"--address {address!r}: expected 'auto', HOST:PORT (a cluster's GCS) or ray://HOST:PORT "
                        "(Ray Client)")


def count_states(paths: SweepPaths, trials: list[dict[str, Any]]) -> dict[str, int]:
    """How many of `trials` (state records) are finished / failed / partial / new in the storage."""
    counts = {"finished": 0, "failed": 0, "partial": 0, "new": 0}
    for t in trials:
        counts[trial_state(paths.workdir(t["run_hash"]))] += 1
    return counts


@dataclass
class Plan:
    """Which trials of a grid have ended and which get launched."""

    finished: list[Trial] = field(default_factory=list)
    failed: list[Trial] = field(default_factory=list)
    stopped: list[Trial] = field(default_factory=list)
    retry: list[Trial] = field(default_factory=list)  #: failed trials to run again from scratch
    todo: list[Trial] = field(default_factory=list)  #: everything that gets launched (retry included)


def classify(trials: list[Trial], paths: SweepPaths, finished_in_mlflow: set[str], stopped: set[str],
             retry_failed: bool) -> Plan:
    """Sort trials by what their workdir and MLflow say; no side effects."""
    plan = Plan()
    for t in trials:
        state = trial_state(paths.workdir(t.run_hash))
        if state == "finished" or t.run_hash in finished_in_mlflow:
            plan.finished.append(t)
        elif state == "failed":
            (plan.retry if retry_failed else plan.failed).append(t)
        elif t.run_hash in stopped:
            plan.stopped.append(t)
        else:
            plan.todo.append(t)
    plan.todo = plan.retry + plan.todo
    return plan


def _retire(paths: SweepPaths, client, runs: dict[str, Any], trials: list[Trial], out: TextIO) -> None:
    """Run failed trials again from scratch: a retry from their checkpoint would diverge the same way.

    The old workdir moves to `<sweep>/retired/`, the old MLflow run keeps its data but gives up
    its run_hash (tag `mixsweep.role=retired`), so the new attempt gets a run of its own.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for t in trials:
        target = paths.root / "retired" / f"{t.run_hash}-{stamp}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(paths.workdir(t.run_hash)), target)
        run = runs.get(t.run_hash)
        if run is not None:
            client.set_tag(run.info.run_id, tracking.TAG_ROLE, "retired")
            client.set_tag(run.info.run_id, tracking.TAG_RUN_HASH, f"{t.run_hash}~{stamp}")
    if trials:
        print(f"[mixsweep] retrying {len(trials)} failed trial(s) from scratch; their old folders are in "
              f"{paths.root / 'retired'}", file=out)


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
              f"stopping them so that nothing orphaned keeps running or writing (SIGTERM, then waiting up to "
              f"{STOP_TIMEOUT_S:.0f} s for them to exit)", file=out, flush=True)
        killed = stop_processes(procs)
        print(f"[mixsweep] {killed} of them ignored SIGTERM and had to be killed (SIGKILL)" if killed else
              "[mixsweep] they exited", file=out)
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


def _needs_sync(run) -> bool:
    """An ended trial whose MLflow run is missing, still open, or lacks its final metrics."""
    return run is None or run.info.status not in ("FINISHED", "FAILED") or (
        run.info.status == "FINISHED" and "final/top1_err" not in run.data.metrics)


def launch_sweep(spec: SweepSpec, paths: SweepPaths, *, tracking_uri: str, address: str | None,
                 retry_failed: bool = False, out: TextIO | None = None) -> int:
    """Run what is left of `spec` in `paths`; returns the exit code (0 done, 1 failures, 130 stopped).

    A full disk (the storage, the tracking store, a trial's folder) stops the sweep with one UserError
    naming the place; the trials keep their last checkpoint, and `resume` continues once there is room.
    """
    try:
        return _launch(spec, paths, tracking_uri=tracking_uri, address=address, retry_failed=retry_failed,
                       out=out or sys.stderr)
    except Exception as exc:
        if not disk_full(exc):
            raise
        where = exc.filename if isinstance(exc, OSError) and exc.filename else paths.storage
        raise UserError(_no_space(spec, paths, f"no space left on {where}")) from None


def _no_space(spec: SweepSpec, paths: SweepPaths, what: str) -> str:
    return (f"{what}; the sweep stopped and its trials keep their last checkpoint. Free some space, then: "
            f"{RESUME_HINT.format(name=spec.name, storage=paths.storage)}")


def _launch(spec: SweepSpec, paths: SweepPaths, *, tracking_uri: str, address: str | None, retry_failed: bool,
            out: TextIO) -> int:
    check_address(address)
    grid = is_grid(spec)
    if not grid or spec.scheduler == "asha":
        per_epoch_metric(spec.metric)
    tracking.check_tracking_uri(tracking_uri, require_folder=False)  # fail fast, before anything is written
    if address and tracking_uri.startswith("sqlite:"):
        print("[mixsweep] warning: a sqlite tracking store is not safe across machines (and never on NFS); for a "
              "multi-node cluster pass --tracking-uri http://... of an MLflow server", file=out)
    try:
        paths.storage.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--storage {paths.storage} cannot be created: {exc.strerror}") from None
    with sweep_lock(paths, "run"):
        _cleanup_leftovers(paths, out)
        client, exp_id, sweep_run = _tracking(spec, paths, tracking_uri)
        old = _previous_state(paths, out)
        trials = expand(spec) if grid else []
        runs = {r.data.tags.get(tracking.TAG_RUN_HASH): r for r in tracking.trial_runs(client, exp_id, spec.name)}
        stopped = set(old.get("stopped", [])) if spec.scheduler == "asha" else set()
        plan = classify(trials, paths, tracking.finished_hashes(runs.values()), stopped, retry_failed)
        _retire(paths, client, runs, plan.retry, out)
        launches = max([int(old.get("launches", 0))] + [int(p.name[7:]) for p in paths.ray.glob("launch-[0-9]*")
                                                         if p.name[7:].isdigit()])
        state = {"name": spec.name, "source": spec.source, "spec_hash": spec_hash(spec),
                 "tracking_uri": tracking_uri, "experiment_id": exp_id, "sweep_run_id": sweep_run,
                 "metric": spec.metric, "mode": spec.mode, "address": address or "", "launches": launches,
                 "stopped": sorted(stopped),
                 "trials": [{"run_hash": t.run_hash, "config_hash": t.config_hash, "name": t.name, "seed": t.seed,
                             "levels": t.levels} for t in trials] if grid else old.get("trials", [])}
        from trainables.checkpoint import atomic_write_text

        atomic_write_text(paths.spec, spec.to_yaml())
        save_state(paths, state)
        stale = {t.run_hash for t in plan.finished + plan.failed if _needs_sync(runs.get(t.run_hash))}
        if stale:  # e.g. killed between final.json and closing its MLflow run
            sync_trials(paths, state, only=stale, launched={t.run_hash: t.config for t in trials}, out=out)
        if grid:
            print(f"[mixsweep] sweep {spec.name}: {len(trials)} trials ({spec.num_arms()} arms x "
                  f"{len(spec.seeds)} seeds) - {len(plan.finished)} finished, {len(plan.failed)} failed earlier"
                  f"{' (use --retry-failed to run them again)' if plan.failed else ''}, {len(plan.stopped)} "
                  f"stopped by ASHA; launching {len(plan.todo)}", file=out)
            if not plan.todo:
                client.set_terminated(sweep_run, "FINISHED")
                print("[mixsweep] nothing to run", file=out)
                return 1 if plan.failed else 0
            name, history = f"launch-{launches + 1:03d}", None
        else:  # a fresh experiment too, its study rebuilt from the storage (see orchestrator.search)
            from .search import search_history

            history = search_history(spec, paths, stopped)
            stale = {h for h in history.values if history.states[h] != "stopped" and _needs_sync(runs.get(h))}
            if stale:
                sync_trials(paths, state, only=stale, out=out)
            print(f"[mixsweep] sweep {spec.name}: {spec.search.algorithm} search, {spec.search.num_trials} trials - "
                  f"{history.count('finished')} finished, {history.count('failed')} failed, "
                  f"{history.count('stopped')} stopped by ASHA, {len(history.unfinished)} to continue; launching "
                  f"{history.num_samples}", file=out)
            if not history.num_samples:
                client.set_terminated(sweep_run, "FINISHED")
                print("[mixsweep] nothing to run", file=out)
                return 1 if history.count("failed") else 0
            name = f"search-{launches + 1:03d}"
        try:
            check_data([t.cfg for t in plan.todo] or [spec.base_config(resolved=True)], address, out)
        except UserError:
            client.set_terminated(sweep_run, "FAILED")
            raise
        state["launches"] = launches + 1
        save_state(paths, state)
        from .progress import Progress

        meta = trial_meta(spec, paths, tracking_uri, exp_id, sweep_run, tracking.git_commit())
        progress = Progress(metric=spec.metric, names={t.run_hash: t.name for t in plan.todo},
                            epochs={t.run_hash: t.epochs for t in plan.todo}, out=out,
                            on_start=lambda: record_driver(paths, address))
        configs = {t.run_hash: t.config for t in plan.todo}
        with StopSignals(out) as signals:
            try:
                completed = run_plan(LaunchPlan(spec, paths, plan.todo, meta, address, name, history), progress,
                                     signals)
            except BaseException as exc:
                signals.hold()
                if not disk_full(exc):
                    _settle_safely(spec, paths, client, exp_id, sweep_run, progress, False, configs, out=out)
                else:  # no run left RUNNING, where the disk allows; the one message is the UserError that follows
                    _settle_quietly(spec, paths, client, exp_id, sweep_run, progress, configs)
                raise
            if progress.fatal:  # a trial hit a full disk: Tune stopped every trial
                _settle_quietly(spec, paths, client, exp_id, sweep_run, progress, configs)
                raise UserError(_no_space(spec, paths, progress.fatal))
            return _settle_safely(spec, paths, client, exp_id, sweep_run, progress, completed, configs, out=out)


def _settle_quietly(spec, paths, client, exp_id, sweep_run, progress, configs) -> None:
    """Settle a stopped launch as far as a full disk allows, printing nothing (MLflow's logger included)."""
    import logging

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _settle(spec, paths, client, exp_id, sweep_run, progress, False, configs, io.StringIO())
    except Exception:  # noqa: BLE001, S110 - best effort: resume settles the rest once there is room
        pass
    finally:
        logger.setLevel(level)


def _previous_state(paths: SweepPaths, out: TextIO) -> dict[str, Any]:
    """sweep.json of an earlier run, {} when there is none; a damaged one is rebuilt by this run."""
    if not paths.state.exists():
        return {}
    try:
        return load_state(paths)
    except DamagedState as exc:
        print(f"[mixsweep] warning: {str(exc).split('. ')[0]}; rebuilding it from the spec and the trials' folders",
              file=out)
        return {}


def _settle_safely(spec, paths, client, exp_id, sweep_run, progress, completed, configs, *, out,
                   attempts: int = 3) -> int:
    """`_settle`, surviving a tracking store that fails for a moment or went away during the sweep."""
    for attempt in range(1, attempts + 1):
        try:
            return _settle(spec, paths, client, exp_id, sweep_run, progress, completed, configs, out)
        except Exception as exc:  # noqa: BLE001 - MLflow failing here costs nothing: results are in the storage
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
            if disk_full(exc):  # no retry helps; the caller says where
                raise
            if attempt < attempts:  # _settle is idempotent: a busy sqlite file or a restarting server may recover
                print(f"[mixsweep] updating MLflow failed ({error}); trying again ({attempt}/{attempts - 1})",
                      file=out)
                time.sleep(2.0 * attempt)
    print(f"[mixsweep] MLflow could not be updated ({error}); the trials' results are safe in {paths.root}. "
          f"Once MLflow works again: mixsweep sync {spec.name} --storage {paths.storage}", file=out)
    if not completed:
        print(f"[mixsweep] stopped; to continue: {RESUME_HINT.format(name=spec.name, storage=paths.storage)}",
              file=out)
    return 130 if not completed else 1


def _settle(spec: SweepSpec, paths: SweepPaths, client, exp_id: str, sweep_run: str, progress, completed: bool,
            configs: dict[str, dict[str, Any]], out: TextIO) -> int:
    """After a launch: settle every trial's MLflow run from its results, record ASHA stops, summarise."""
    state = load_state(paths)
    hint = RESUME_HINT.format(name=spec.name, storage=paths.storage)
    early: dict[str, int] = {}
    runs = {r.data.tags.get(tracking.TAG_RUN_HASH): r for r in tracking.trial_runs(client, exp_id, spec.name)}
    if completed and spec.scheduler == "asha":  # Tune ended a trial before its last epoch: ASHA stopped it
        early = {r.run_hash: r.epoch for r in progress.rows.values() if r.status == "STOPPED"}
        for run in runs.values():
            epoch = early.get(run.data.tags.get(tracking.TAG_RUN_HASH))
            if epoch is not None:
                client.set_tag(run.info.run_id, tracking.TAG_ERROR, f"stopped early by ASHA after epoch {epoch}")
                client.set_terminated(run.info.run_id, "KILLED")
        state["stopped"] = sorted({*state.get("stopped", []), *early})
    unfinished = (("FAILED", "the trial's process ended without finishing (see the Ray log)") if completed
                  else ("KILLED", f"sweep stopped; resume with: {hint}"))
    launched = {r.run_hash for r in progress.rows.values() if r.run_hash} or set(collect(paths))
    stale = {h for h in launched - set(early) if _needs_sync(runs.get(h))}  # runs the trials did not close
    sync_trials(paths, state, only=stale, unfinished=unfinished, launched=configs, out=out)  # the trials' results
    tracking.mark_unfinished(client, tracking.trial_runs(client, exp_id, spec.name), *unfinished)  # no results yet
    if not is_grid(spec):  # a search's trials are known only once sampled
        state["trials"] = [{"run_hash": h, "config_hash": "", "name": r.meta.get("run_name", trial_name(h)),
                            "seed": r.config.get("seed", 0), "levels": {k: r.config.get(k) for k in spec.search.space}}
                           for h, r in sorted(collect(paths).items())]
    save_state(paths, state)  # before anything is printed: a retry of this function prints it once
    if not completed:
        running = sum(r.status == "RUNNING" for r in progress.rows.values())
        print(f"[mixsweep] stopped: {running} running trial(s) keep their last checkpoint and are marked KILLED in "
              "MLflow", file=out)
    counts = count_states(paths, state["trials"])
    ended_early = set(state["stopped"]) & {t["run_hash"] for t in state["trials"]}
    remaining = counts["partial"] + counts["new"] - len(ended_early)
    if state["trials"]:
        print(f"[mixsweep] sweep {spec.name}: {counts['finished']} finished, {counts['failed']} failed, "
              f"{len(ended_early)} stopped by ASHA, {remaining} not finished of {len(state['trials'])}", file=out)
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
    from .status import print_plan

    spec = load_spec(ref, overrides=overrides)
    paths = sweep_paths(storage, spec.name)
    check_address(address)
    if dry_run:
        print_plan(spec, paths, out=sys.stdout)
        return 0
    uri = tracking_uri or tracking.default_tracking_uri(storage)
    return launch_sweep(spec, paths, tracking_uri=uri, address=address, retry_failed=retry_failed, out=out)


def resume_sweep(name: str, *, storage: Path, address: str | None, retry_failed: bool = False,
                 out: TextIO | None = None) -> int:
    out = out or sys.stderr
    paths = sweep_paths(storage, name)
    state = load_state(paths)
    spec = load_spec(paths.spec)
    counts = count_states(paths, state.get("trials", []))
    print(f"[mixsweep] resuming {name}: {counts['finished']} finished, {counts['failed']} failed, {counts['partial']} "
          f"with checkpoints (continue from their last epoch), {counts['new']} not started", file=out)
    return launch_sweep(spec, paths, tracking_uri=state["tracking_uri"],
                        address=address or state.get("address") or None, retry_failed=retry_failed, out=out)

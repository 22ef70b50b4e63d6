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
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from trainables.config import trial_name
from trainables.files import atomic_write_text, disk_full
from trainables.metrics import FINAL_ERR
from trainables.mixing.lazy import lazy_import
from trainables.trialdir import TrialDir, TrialState

from . import membership, mlflow_views, tracking
from .console import SweepLogs, terminal, wants_live
from .errors import UserError
from .jobs import record_job, resume_hint
from .launch import (
    STOP_TIMEOUT_S,
    LaunchPlan,
    OutOfTime,
    StopNow,
    StopSignals,
    check_data,
    check_no_live_driver,
    leftover_ray_processes,
    record_driver,
    run_plan,
    stop_processes,
    trial_meta,
)
from .search import SearchHistory, per_epoch_metric, search_history
from .spec import SweepSpec, Trial, expand, is_grid, load_spec
from .status import print_plan
from .storage import DamagedState, SweepPaths, SweepState, TrialEntry, sweep_lock, sweep_paths
from .sync import collect, sync_trials
from .ui import print_sweep_links

if TYPE_CHECKING:
    from .progress import Progress

#: bound by name: it imports Ray Tune, which only a session that runs needs (not --dry-run)
progress_module = lazy_import("orchestrator.progress")
#: bound by name: pandas and matplotlib, for the report at the end of a sweep
report_module = lazy_import("orchestrator.report")

RESUME_HINT = "mixsweep resume {name} --storage {storage}"
ADDRESS = re.compile(r"^(auto|local|[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")


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


#: why `ray://` (Ray Client) is refused: under it Tune runs the experiment in an actor on the cluster, so the
#: driver's callbacks are pickled there - the progress callback holds this terminal's stderr (PicklingError on
#: the head: "Cannot pickle files that are not opened for reading") and the sweep session - and they would
#: update copies on the head, while the driver settles MLflow from storage it reads on this machine
RAY_CLIENT = ("--address {address}: Ray Client (ray://) is not supported: Tune would run the sweep inside an actor "
              "on the cluster, away from this driver's progress, storage and MLflow bookkeeping. Run the driver on "
              "the cluster instead: mixsweep submit SPEC --address http://HEAD:8265 --storage /shared/path (a Ray "
              "job; it outlives this machine), or mixsweep run SPEC --address auto on a node of the cluster")


def check_address(address: str | None) -> None:
    """`--address` / RAY_ADDRESS; empty is unset, as Ray reads it (a new local instance)."""
    if not address:
        return
    if address.startswith("ray://"):
        raise UserError(RAY_CLIENT.format(address=address))
    if not ADDRESS.match(address):
        raise UserError(f"--address {address!r}: expected 'auto' or HOST:PORT (a cluster's GCS); from outside the "
                        "cluster, use mixsweep submit --address http://HEAD:8265")


def count_states(paths: SweepPaths, trials: Iterable[TrialEntry]) -> dict[str, int]:
    """How many of `trials` are finished / failed / partial / new in the storage."""
    counts = dict.fromkeys(TrialState, 0)
    for t in trials:
        counts[paths.trial(t.run_hash).state()] += 1
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
        state = paths.trial(t.run_hash).state()
        if state == TrialState.FINISHED or t.run_hash in finished_in_mlflow:
            plan.finished.append(t)
        elif state == TrialState.FAILED:
            (plan.retry if retry_failed else plan.failed).append(t)
        elif t.run_hash in stopped:
            plan.stopped.append(t)
        else:
            plan.todo.append(t)
    plan.todo = plan.retry + plan.todo
    return plan


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
        run.info.status == "FINISHED" and FINAL_ERR not in run.data.metrics)


def _previous_state(paths: SweepPaths, out: TextIO) -> SweepState | None:
    """sweep.json of an earlier run, None when there is none; a damaged one is rebuilt by this run."""
    if not paths.state.exists():
        return None
    try:
        return SweepState.load(paths)
    except DamagedState as exc:
        print(f"[mixsweep] warning: {exc.reason}; rebuilding it from the spec and the trials' folders",
              file=out)
        return None


class SweepSession:
    """One `mixsweep run` / `resume` of a sweep: `execute()` = prepare → plan → run → settle.

    - `check`: fail fast (address, metric, tracking URI, storage), before anything is written;
    - `prepare`: under the sweep's lock, clean up after a dead driver, read the previous sweep.json,
      open MLflow (experiment, sweep run), write spec.yaml and sweep.json;
    - `plan`: which trials have ended (workdirs and MLflow) and which get launched; close the MLflow
      runs of ended trials that were left open; check the launch's data files (`LaunchPlan`, or None);
    - `run`: one Tune experiment under `StopSignals` (Ctrl+C / SIGTERM stop it gracefully);
    - `settle`: every trial's MLflow run from its results, ASHA stops, the summary and the exit code.

    Args:
        spec, paths: the sweep and where it lives.
        tracking_uri: the MLflow store; address: the Ray cluster (None: a local instance).
        retry_failed: run trials that failed for good again, from scratch.
        out: where progress goes (stderr).
    """

    def __init__(self, spec: SweepSpec, paths: SweepPaths, *, tracking_uri: str, address: str | None,
                 retry_failed: bool = False, out: TextIO | None = None) -> None:
        self.spec, self.paths, self.tracking_uri, self.address = spec, paths, tracking_uri, address
        self.retry_failed = retry_failed
        self.out = terminal(out)  #: lines go above the live table while one is shown
        self.grid = is_grid(spec)
        self.hint = resume_hint(spec.name, paths.storage) or RESUME_HINT.format(name=spec.name, storage=paths.storage)
        self.client = None  #: the MLflow client (prepare)
        self.state: SweepState | None = None  #: sweep.json as this session keeps it (prepare, plan, settle)
        self.trials: list[Trial] = []  #: every trial of a grid (prepare)
        self.runs: dict[str, Any] = {}  #: run_hash -> the trial's MLflow run before this launch (prepare)
        self.failed_before = 0  #: trials that failed for good earlier and are not retried (plan)
        self.launched: dict[str, dict[str, Any]] = {}  #: run_hash -> config of the grid trials launched (plan)
        self.reconciled = membership.Reconciled()  #: runs retired / restored for this spec (prepare)

    def execute(self) -> int:
        """Run what is left of the sweep; the exit code (0 done, 1 failures, 130 stopped).

        Ctrl+C / SIGTERM are handled in every phase (`StopSignals`); the bookkeeping after the launch (MLflow,
        the report, the views) runs under a deadline, so a tracking server that hangs costs a bounded time.
        A full disk (the storage, the tracking store, a trial's folder) stops the sweep with one UserError
        naming the place; the trials keep their last checkpoint, and `resume` continues once there is room.
        """
        try:
            with StopSignals(self.out) as signals:
                self.check()
                with sweep_lock(self.paths, "run"), SweepLogs(self.paths.logs):  # Ray's and MLflow's chatter: logs/
                    return self._execute(signals)
        except Exception as exc:
            if not disk_full(exc):
                raise
            where = exc.filename if isinstance(exc, OSError) and exc.filename else self.paths.storage
            raise UserError(self._no_space(f"no space left on {where}")) from None

    def _execute(self, signals: StopSignals) -> int:
        try:
            self.prepare()
            plan = self.plan()
        except StopNow:  # before the launch: the sweep run is not left RUNNING without a word
            if self.state is not None and self._bounded(signals, "closing the sweep run", lambda: (
                    self.client.set_terminated(self.state.sweep_run_id, "KILLED")))[0]:
                self._say(f"stopped before the launch; to continue: {self.hint}")
            raise
        if plan is None:  # every trial has ended; a report that a killed driver never wrote is written now
            outdated = report_outdated(self.paths)
            due = outdated or bool(self.reconciled.retired or self.reconciled.restored)  # it counted other runs
            return self._finish(signals, lambda: self.nothing_to_run(outdated), report=due)
        progress, completed = self.run(plan, signals)
        return self._finish(signals, lambda: self.settle(progress, completed), report=completed)

    def _finish(self, signals: StopSignals, settle, *, report: bool) -> int:
        """The bookkeeping: `settle()` (it gives the exit code), the report (`report`) and the views, each under
        its deadline; once one is cut short the rest is left to `resume` (the message says so)."""
        done, code = self._bounded(signals, "settling MLflow", settle)
        if not done:
            return 130 if signals.stops else 1
        if report and not self._bounded(signals, "writing the report", self.print_report)[0]:
            return 130 if signals.stops else 1
        if code == 1:  # something failed
            self._say(f"full logs (Ray, MLflow, the trials' output): {self.paths.logs}")
        if not self._bounded(signals, "updating the MLflow views", lambda: self._with_links(code))[0]:
            return 130 if signals.stops else code
        return code

    def _bounded(self, signals: StopSignals, what: str, work, *, quiet: bool = False) -> tuple[bool, Any]:
        """(True, `work()`) under `signals.books` (its deadline), or (False, None) once cut short, said once."""
        began = time.monotonic()
        try:
            with signals.books():
                return True, work()
        except OutOfTime:
            if not quiet:
                why = ("a stop was asked for" if signals.now else
                       f"MLflow at {self.tracking_uri} did not answer in time")
                self._say(f"{what}: cut short after {time.monotonic() - began:.0f} s ({why}). The trials' results are "
                          f"safe in {self.paths.root}; to finish the books (MLflow runs, the report) and whatever is "
                          f"left of the sweep: {self.hint}")
            return False, None

    def _with_links(self, code: int) -> int:
        """The saved MLflow UI views brought up to date with this launch's trials, and their links."""
        mlflow_views.publish_quietly(self.client, self.state.experiment_id, self.spec, self.state.sweep_run_id,
                                     out=self.out)
        print_sweep_links(self.spec.name, storage=self.paths.storage, out=self.out)
        return code

    def print_report(self) -> None:
        """The report of the sweep (`mixsweep report`): its summary tables and where its files are."""
        name, storage = self.spec.name, self.paths.storage
        again = f"mixsweep report {name} --storage {storage}"
        try:
            files = report_module.report_sweep(name, storage=storage)
        except UserError as exc:
            self._say(f"no report: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - the sweep's results stand; the report can be made again
            if disk_full(exc):
                raise
            self._say(f"warning: the report failed ({type(exc).__name__}: {str(exc)[:200]}); again: {again}")
            return
        summary = files.get("summary.md") or files["report.md"]
        show_markdown(summary.read_text(encoding="utf-8"), self.out)
        others = ", ".join(p.name for key, p in files.items() if key != "report.md")
        self._say(f"report: {files['report.md']} (beside it: {others}); again: {again}")

    def _no_space(self, what: str) -> str:
        return (f"{what}; the sweep stopped and its trials keep their last checkpoint. Free some space, then: "
                f"{self.hint}")

    def _say(self, text: str) -> None:
        print(f"[mixsweep] {text}", file=self.out)

    # -- check ------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse what cannot work before anything is written (UserError)."""
        spec = self.spec
        check_address(self.address or os.environ.get("RAY_ADDRESS"))  # Ray reads RAY_ADDRESS when no --address
        if not self.grid or spec.scheduler == "asha":
            per_epoch_metric(spec.metric)
        tracking.check_tracking_uri(self.tracking_uri, require_folder=False)
        if self.address and self.tracking_uri.startswith("sqlite:"):
            self._say("warning: a sqlite tracking store is not safe across machines (and never on NFS); for a "
                      "multi-node cluster pass --tracking-uri http://... of an MLflow server")
        try:
            self.paths.storage.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--storage {self.paths.storage} cannot be created: {exc.strerror}") from None

    # -- prepare ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Clean up after a dead driver, read the previous sweep.json, open MLflow, write spec.yaml and sweep.json."""
        spec, paths = self.spec, self.paths
        _cleanup_leftovers(paths, self.out)
        old = _previous_state(paths, self.out)  # before MLflow: a sweep.json of a newer version stops here, untouched
        self.client, exp_id, sweep_run = _tracking(spec, paths, self.tracking_uri)
        mlflow_views.publish_quietly(self.client, exp_id, spec, sweep_run, out=self.out)  # saved UI views
        self.trials = expand(spec) if self.grid else []
        current = membership.current_hashes(spec, paths, old.stopped if old else ())
        self.reconciled = membership.reconcile_runs(self.client, exp_id, spec, current, spec_hash(spec))
        membership.say_reconciled(self.reconciled, self.out)
        self.runs = {r.data.tags.get(tracking.TAG_RUN_HASH): r
                     for r in tracking.trial_runs(self.client, exp_id, spec.name)}
        launches = max([old.launches if old else 0] + [int(p.name[7:]) for p in paths.ray.glob("launch-[0-9]*")
                                                       if p.name[7:].isdigit()])
        entries = tuple(TrialEntry(t.run_hash, t.name, t.config_hash, t.seed, t.levels) for t in self.trials)
        stopped = old.stopped if old and spec.scheduler == "asha" else ()
        self.state = SweepState(name=spec.name, source=spec.source, spec_hash=spec_hash(spec),
                                tracking_uri=self.tracking_uri, experiment_id=exp_id, sweep_run_id=sweep_run,
                                metric=spec.metric, mode=spec.mode, address=self.address or "", launches=launches,
                                stopped=tuple(sorted(stopped)),
                                trials=entries if self.grid else old.trials if old else ())
        atomic_write_text(paths.spec, spec.to_yaml())
        self.state.save(paths)
        record_job(self.client, sweep_run, paths)  # a `mixsweep submit` job: its id on the sweep run and in storage

    # -- plan -------------------------------------------------------------------------------
    def plan(self) -> LaunchPlan | None:
        """What this launch runs, or None when nothing is left; the trials' data files are checked here."""
        spec, state = self.spec, self.state
        if self.grid:
            todo, history, kind = self._plan_grid(), None, "launch"
        else:  # a fresh experiment too, its study rebuilt from the storage (see orchestrator.search)
            todo, history, kind = [], self._plan_search(), "search"
        if not (todo or history and history.num_samples):
            return None
        try:
            check_data([t.cfg for t in todo] or [spec.base_config(resolved=True)], self.address, self.out)
        except UserError:
            self.client.set_terminated(state.sweep_run_id, "FAILED")
            raise
        name = f"{kind}-{state.launches + 1:03d}"
        self.state = replace(state, launches=state.launches + 1)
        self.state.save(self.paths)
        self.launched = {t.run_hash: t.config for t in todo}
        meta = trial_meta(spec, self.paths, self.tracking_uri, state.experiment_id, state.sweep_run_id,
                          tracking.git_commit())
        return LaunchPlan(spec, self.paths, todo, meta, self.address, name, history)

    def _plan_grid(self) -> list[Trial]:
        """The grid trials to launch (failed ones to retry first); closes the runs of ended trials left open."""
        spec, paths = self.spec, self.paths
        plan = classify(self.trials, paths, tracking.finished_hashes(self.runs.values()), set(self.state.stopped),
                        self.retry_failed)
        membership.retire_failed(paths, self.client, self.runs, plan.retry, self.out)
        stale = {t.run_hash for t in plan.finished + plan.failed if _needs_sync(self.runs.get(t.run_hash))}
        if stale:  # e.g. killed between final.json and closing its MLflow run
            sync_trials(paths, self.state, only=stale, launched={t.run_hash: t.config for t in self.trials},
                        out=self.out)
        self.failed_before = len(plan.failed)
        self._say(f"sweep {spec.name}: {len(self.trials)} trials ({spec.num_arms()} arms x {len(spec.seeds)} seeds) - "
                  f"{len(plan.finished)} finished, {len(plan.failed)} failed earlier"
                  f"{' (use --retry-failed to run them again)' if plan.failed else ''}, {len(plan.stopped)} "
                  f"stopped by ASHA; launching {len(plan.todo)}")
        return plan.todo

    def _plan_search(self) -> SearchHistory:
        """The search's trials so far and how many this launch samples; closes the runs of ended trials left open."""
        spec = self.spec
        history = search_history(spec, self.paths, set(self.state.stopped))
        stale = {h for h in history.values if history.states[h] != "stopped" and _needs_sync(self.runs.get(h))}
        if stale:
            sync_trials(self.paths, self.state, only=stale, out=self.out)
        self.failed_before = history.count("failed")
        self._say(f"sweep {spec.name}: {spec.search.algorithm} search, {spec.search.num_trials} trials - "
                  f"{history.count('finished')} finished, {history.count('failed')} failed, "
                  f"{history.count('stopped')} stopped by ASHA, {len(history.unfinished)} to continue; launching "
                  f"{history.num_samples}")
        return history

    def nothing_to_run(self, report_due: bool = False) -> int:
        """Every trial has ended: close the sweep run; 1 when some failed."""
        self.client.set_terminated(self.state.sweep_run_id, "FINISHED")
        self._say("nothing to run")
        if report_due:  # e.g. its driver was killed while writing it
            self._say("the report is missing or older than the trials' results (its driver ended before writing it): "
                      "writing it")
        return 1 if self.failed_before else 0

    # -- run --------------------------------------------------------------------------------
    def run(self, plan: LaunchPlan, signals: StopSignals) -> tuple[Progress, bool]:
        """Run the launch on Ray Tune; (progress, True when every trial ended / False when it was stopped).

        Interrupted (a second Ctrl+C, an error): the books are settled as far as possible, then it raises.
        A trial on a full disk stops the whole launch: settled quietly, then one UserError.
        """
        progress = progress_module.Progress(
            metric=self.spec.metric, names={t.run_hash: t.name for t in plan.trials},
            epochs={t.run_hash: t.epochs for t in plan.trials},
            total=len(plan.trials) or (plan.search.num_samples if plan.search else 0), out=self.out,
            title=f"{self.spec.name} · {plan.launch_name}", log_hint=str(self.paths.logs),
            on_start=lambda: record_driver(self.paths, self.address))
        try:
            completed = run_plan(plan, progress, signals)
        except BaseException as exc:
            signals.hold()
            if not disk_full(exc):
                self._bounded(signals, "settling MLflow", lambda: self.settle(progress, completed=False))
            else:  # no run left RUNNING, where the disk allows; the one message is the UserError that follows
                self._bounded(signals, "settling MLflow", lambda: self._settle_quietly(progress), quiet=True)
            raise
        if progress.fatal:  # a trial hit a full disk: Tune stopped every trial
            self._bounded(signals, "settling MLflow", lambda: self._settle_quietly(progress), quiet=True)
            raise UserError(self._no_space(progress.fatal))
        return progress, completed

    # -- settle -----------------------------------------------------------------------------
    def settle(self, progress: Progress, completed: bool, *, attempts: int = 3) -> int:
        """Settle the books after a launch (`_settle_once`), surviving a tracking store that fails for a moment
        or went away during the sweep; the exit code."""
        for attempt in range(1, attempts + 1):
            try:
                return self._settle_once(progress, completed, self.out)
            except Exception as exc:  # noqa: BLE001 - MLflow failing here costs nothing: results are in the storage
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                if disk_full(exc):  # no retry helps; the caller says where
                    raise
                if attempt < attempts:  # idempotent: a busy sqlite file or a restarting server may recover
                    self._say(f"updating MLflow failed ({error}); trying again ({attempt}/{attempts - 1})")
                    time.sleep(2.0 * attempt)
        self._say(f"MLflow could not be updated ({error}); the trials' results are safe in {self.paths.root}. "
                  f"Once MLflow works again: mixsweep sync {self.spec.name} --storage {self.paths.storage}")
        if not completed:
            self._say(f"stopped; to continue: {self.hint}")
        return 130 if not completed else 1

    def _settle_quietly(self, progress: Progress) -> None:
        """Settle a stopped launch as far as a full disk allows, printing nothing (MLflow's logger included)."""
        logger = logging.getLogger("mlflow")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                self._settle_once(progress, False, io.StringIO())
        except Exception:  # noqa: BLE001, S110 - best effort: resume settles the rest once there is room
            pass
        finally:
            logger.setLevel(level)

    def _settle_once(self, progress: Progress, completed: bool, out: TextIO) -> int:
        """Every trial's MLflow run from its results, ASHA stops recorded, sweep.json saved, the summary printed."""
        spec, paths, client, state = self.spec, self.paths, self.client, self.state
        early: dict[str, int] = {}
        runs = {r.data.tags.get(tracking.TAG_RUN_HASH): r
                for r in tracking.trial_runs(client, state.experiment_id, spec.name)}
        if completed and spec.scheduler == "asha":  # Tune ended a trial before its last epoch: ASHA stopped it
            early = {r.run_hash: r.epoch for r in progress.rows.values() if r.status == "STOPPED"}
            for run in runs.values():
                epoch = early.get(run.data.tags.get(tracking.TAG_RUN_HASH))
                if epoch is not None:
                    client.set_tag(run.info.run_id, tracking.TAG_ERROR, f"stopped early by ASHA after epoch {epoch}")
                    client.set_terminated(run.info.run_id, "KILLED")
            state = replace(state, stopped=tuple(sorted({*state.stopped, *early})))
        unfinished = (("FAILED", "the trial's process ended without finishing (see the Ray log)") if completed
                      else ("KILLED", f"sweep stopped; resume with: {self.hint}"))
        current = membership.current_hashes(spec, paths, state.stopped)  # not the folders of an earlier spec
        launched = {r.run_hash for r in progress.rows.values() if r.run_hash} or set(collect(paths)) & current
        stale = {h for h in launched - set(early) if _needs_sync(runs.get(h))}  # runs the trials did not close
        sync_trials(paths, state, only=stale, unfinished=unfinished, launched=self.launched, out=out)
        tracking.mark_unfinished(client, tracking.trial_runs(client, state.experiment_id, spec.name), *unfinished)
        if not self.grid:  # a search's trials are known only once sampled
            state = replace(state, trials=tuple(
                TrialEntry(h, r.meta.run_name or trial_name(h), "", r.config.get("seed", 0),
                           {k: r.config.get(k) for k in spec.search.space}) for h, r in sorted(collect(paths).items())
                if h in current))
        state.save(paths)  # before anything is printed: a retry of this function prints it once
        self.state = state
        if not completed:
            running = sum(r.status == "RUNNING" for r in progress.rows.values())
            print(f"[mixsweep] stopped: {running} running trial(s) keep their last checkpoint and are marked KILLED "
                  "in MLflow", file=out)
        counts = count_states(paths, state.trials)
        ended_early = set(state.stopped) & {t.run_hash for t in state.trials}
        remaining = counts["partial"] + counts["new"] - len(ended_early)
        if state.trials:
            print(f"[mixsweep] sweep {spec.name}: {counts['finished']} finished, {counts['failed']} failed, "
                  f"{len(ended_early)} stopped by ASHA, {remaining} not finished of {len(state.trials)}", file=out)
        if not completed:
            client.set_terminated(state.sweep_run_id, "KILLED")
            print(f"[mixsweep] to continue: {self.hint}", file=out)
            return 130
        if remaining:
            client.set_terminated(state.sweep_run_id, "FAILED")
            print(f"[mixsweep] some trials did not finish; to run them again: {self.hint}", file=out)
            return 1
        client.set_terminated(state.sweep_run_id, "FINISHED")
        return 1 if counts["failed"] else 0


def report_outdated(paths: SweepPaths) -> bool:
    """The sweep's report is missing or older than its newest trial result (final.json, failed.json).

    Its report.md is written last, as a whole (`report.write_report`): a report cut short (a killed driver)
    never looks written."""
    try:
        written = (paths.report / "report.md").stat().st_mtime_ns
    except OSError:
        return True
    for result in (*paths.trials.glob(f"*/{TrialDir.FINAL}"), *paths.trials.glob(f"*/{TrialDir.FAILED}")):
        with contextlib.suppress(OSError):
            if result.stat().st_mtime_ns > written:
                return True
    return False


def show_markdown(text: str, out: TextIO) -> None:
    """Markdown (the report's tables) as it is in a pipe; rendered by rich on a terminal that takes it."""
    if not wants_live(out):
        print(text.rstrip("\n"), file=out, flush=True)
        return
    from rich.console import Console
    from rich.markdown import Markdown

    Console(file=getattr(out, "stream", out), highlight=False).print(Markdown(text))


def launch_sweep(spec: SweepSpec, paths: SweepPaths, *, tracking_uri: str, address: str | None,
                 retry_failed: bool = False, out: TextIO | None = None) -> int:
    """Run what is left of `spec` in `paths` (a `SweepSession`); the exit code (0 done, 1 failures, 130 stopped)."""
    return SweepSession(spec, paths, tracking_uri=tracking_uri, address=address, retry_failed=retry_failed,
                        out=out).execute()


def run_sweep(ref: str, *, storage: Path, tracking_uri: str | None, address: str | None, overrides: dict[str, Any],
              dry_run: bool = False, retry_failed: bool = False, out: TextIO | None = None) -> int:
    """`mixsweep run SPEC`: launch what is left of the spec (`--dry-run`: list its trials, run nothing)."""
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
    """`mixsweep resume NAME`: launch what is left of a sweep with the spec and tracking store it ran with."""
    out = out or sys.stderr
    paths = sweep_paths(storage, name)
    state = SweepState.load(paths)
    spec = load_spec(paths.spec)
    counts = count_states(paths, state.trials)
    print(f"[mixsweep] resuming {name}: {counts['finished']} finished, {counts['failed']} failed, {counts['partial']} "
          f"with checkpoints (continue from their last epoch), {counts['new']} not started", file=out)
    return launch_sweep(spec, paths, tracking_uri=state.tracking_uri, address=address or state.address or None,
                        retry_failed=retry_failed, out=out)

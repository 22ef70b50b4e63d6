"""Launch a sweep on Ray Tune: connect, build the Tuner, run, and settle the books afterwards.

Each launch is a fresh Tune experiment over the trials that have not ended yet (a grid is an
explicit list of trials, see `expand`): `run` launches what is missing, so a grid can be
extended, and `resume` launches the rest after a crash or a stop. Nothing is lost or redone
because every trial continues from its own workdir (see `trainables.trainable`). Optuna sweeps
too: their study is rebuilt from the storage at each launch (see `orchestrator.search`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from trainables.config import validate_config
from trainables.data import build_dataset, dataset_options
from trainables.files import atomic_write_text, disk_full
from trainables.meta import TrialMeta
from trainables.mixing.lazy import lazy_import
from trainables.tracking import http_settings

from .errors import UserError
from .search import optuna_search, per_epoch_metric
from .storage import SweepPaths

# bound by name: the trainable loads torch, which `mixsweep status` (it imports this module) does not need
trainable = lazy_import("trainables.trainable")



@dataclass(frozen=True)
class LaunchPlan:
    """What one launch runs and where it reports."""

    spec: Any
    paths: SweepPaths
    trials: list  #: the Trial objects to run (grid); empty for a search algorithm
    meta: TrialMeta  #: what every trial is told (tracking, sweep run, trials folder); identities are added per trial
    address: str | None
    launch_name: str
    search: Any = None  #: the search's `SearchHistory` (search algorithms)


def _alive(pid: int, created: float | None) -> bool:
    """Process `pid` runs, and is the one started at `created` (not a recycled pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        same = created is None or abs(proc.create_time() - created) < 0.01
        return same and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def check_no_live_driver(paths: SweepPaths) -> dict[str, Any] | None:
    """The previous driver's record, after making sure it is gone (a live one is a user error)."""
    if not paths.driver.exists():
        return None
    try:
        record = json.loads(paths.driver.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("pid") and record.get("pid") != os.getpid() and _alive(int(record["pid"]), record.get("created")):
        raise UserError(f"sweep {paths.name!r} is being run by process {record['pid']} "
                        f"(started {record.get('started', '?')}); stop it first (Ctrl+C / kill -TERM {record['pid']})")
    return record


def ray_children() -> list[dict[str, float]]:
    """This driver's child processes (the local Ray instance: GCS, raylet, agents, workers)."""
    import psutil

    out = []
    for child in _children():
        try:
            out.append({"pid": child.pid, "created": child.create_time()})
        except psutil.Error:
            continue
    return out


def record_driver(paths: SweepPaths, address: str | None) -> None:
    """Write driver.json: this process and its Ray processes, to find leftovers after a crash."""
    import psutil

    record = {"pid": os.getpid(), "created": psutil.Process().create_time(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "address": address or "",
              "children": [] if address else ray_children()}
    atomic_write_text(paths.driver, json.dumps(record, indent=1) + "\n")


def leftover_ray_processes(record: Mapping[str, Any] | None) -> list:
    """Processes a dead driver's local Ray instance left behind (orphaned agents, workers).

    Ray fate-shares GCS, raylet and workers with the driver, but its dashboard and runtime-env
    agents can outlive a SIGKILL. They are matched by pid AND start time, so a recycled pid is
    never taken for a leftover.
    """
    import psutil

    found = []
    for child in (record or {}).get("children", []):
        try:
            proc = psutil.Process(int(child["pid"]))
            if abs(proc.create_time() - float(child["created"])) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


#: how long stopped processes get to exit after SIGTERM before they are killed
STOP_TIMEOUT_S = 10.0


def stop_processes(procs: list, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM `procs`, wait up to `timeout` s, SIGKILL the rest; returns how many had to be killed."""
    import psutil

    for proc in procs:
        with suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return len(alive)


@contextmanager
def ray_connection(address: str | None, paths: SweepPaths, on_worker_line=None,
                   signals: StopSignals | None = None) -> Iterator[None]:
    """Connect to Ray (an embedded local instance by default) and record it in driver.json.

    Ray speaks to `<sweep>/logs/` only (`orchestrator.console`): its loggers (set up by the session), and the
    trial processes' output, which reaches this driver through Ray's log stream and is written to workers.log
    by our printer; `on_worker_line(pid, line)` gets the lines of ours among it (`console.SHOWN`).

    Ray changes this process's signal handlers (`resync_signal_handlers`): `signals` (the sweep's
    `StopSignals`) are installed again once `ray.init` returned and once `ray.shutdown` did.
    """
    import ray

    from .console import WORKERS_LOG, WorkerOutput, ray_env

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # trials checkpoint every epoch and Tune keeps 2, so it snapshots its state often by design:
    # silence that warning (the one about a snapshot that is actually slow stays on)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray_env()
    _quiet_about_full_disks("ray.tune.execution.experiment_state")
    # log_to_driver: the workers' output comes here, for `WorkerOutput`; the "ray" logger keeps the handlers the
    # session gave it (driver.log; configure_logging=False would remove them)
    workers = WorkerOutput(paths.logs / WORKERS_LOG, forward=on_worker_line)
    target = address or os.environ.get("RAY_ADDRESS")  # RAY_ADDRESS: set inside a Ray job
    try:
        try:
            if target:  # an existing cluster: its workers get the MLflow settings through the runtime_env
                ray.init(address=target, runtime_env=_worker_env(), log_to_driver=True)
            else:
                # "local": a new instance even when a `ray start` cluster runs on this machine (no address
                # would join the one in /tmp/ray/ray_current_cluster, and die with it); its workers are
                # children of this process and inherit its environment
                ray.init(address="local", include_dashboard=False, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot connect to Ray at {target or 'a new local instance'}: {exc}") from None
        except SystemExit as exc:  # SIGTERM during ray.init: Ray's handler, in place meanwhile, calls sys.exit
            if signals is None or exc.code != signal.SIGTERM:
                raise
            signals.stop_now(signal.SIGTERM)
        if signals is not None:
            signals.arm()
        workers.install()
        record_driver(paths, address)
        yield
    finally:
        local = [] if address else _children()
        try:
            ray.shutdown()
        finally:
            resync_signal_handlers()  # at once: a SIGTERM while waiting for the workers below would kill us
            workers.uninstall()
        # the raylet's workers notice its end only after a while: wait for them (then stop them), so
        # that no trial process still writes to MLflow or its workdir while the driver settles
        _, alive = _wait_gone(local, timeout=15.0)
        stop_processes(alive)
        paths.driver.unlink(missing_ok=True)


def _worker_env() -> dict[str, Any]:
    """The runtime_env of a job on an existing cluster, whose workers do not inherit this process's
    environment: the MLflow HTTP settings, as the user set them here or else `HTTP_DEFAULTS`.

    Inside a Ray job (`mixsweep submit`, a KubeRay RayJob) Ray merges this with the job's own runtime_env
    and refuses a variable set in both: the job's own values stay, the rest are added."""
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    in_job = ((job.get("runtime_env") or {}).get("env_vars") or {}) if isinstance(job, dict) else {}
    return {"env_vars": {key: value for key, value in http_settings().items() if key not in in_job}}


def _quiet_about_full_disks(logger_name: str) -> None:
    """Drop a logger's tracebacks of a full disk: the driver reports that once, with where and what to do."""
    import logging

    logger = logging.getLogger(logger_name)
    if not any(getattr(f, "mixsweep", False) for f in logger.filters):
        def keep(record: logging.LogRecord) -> bool:
            return not (record.exc_info and disk_full(record.exc_info[1]))

        keep.mixsweep = True
        logger.addFilter(keep)


def _children() -> list:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _wait_gone(procs: list, timeout: float) -> tuple[list, list]:
    import psutil

    return psutil.wait_procs(procs, timeout=timeout) if procs else ([], [])


def resync_signal_handlers() -> None:
    """Give the kernel Python's SIGINT / SIGTERM handlers again.

    `ray.shutdown()` shuts the core worker's C++ logging down (`RayLog::ShutDownRayLog` ->
    `UninstallSignalAction`), which resets SIGTERM (with the fatal signals it handled) to SIG_DFL through
    `sigaction`, behind Python's back: `signal.getsignal` still names the Python handler, which no longer runs,
    and the next SIGTERM kills the process at once (rc 143: no settle, no report). SIGINT is not touched.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in StopSignals.SIGNALS:
        handler = signal.getsignal(sig)
        if handler is not None:  # None: not installed from Python, nothing to restore
            signal.signal(sig, handler)


class StopNow(KeyboardInterrupt):
    """A second Ctrl+C / SIGTERM: stop at once, without waiting for Tune to wind the trials down."""


class OutOfTime(BaseException):
    """The driver's bookkeeping after a launch ran past its deadline (`StopSignals.books`).

    A BaseException: no `except Exception` on the way (MLflow's, ours) takes it for a store error to retry."""


#: the bookkeeping after a launch (MLflow settle; then the report and views, each): its deadline as a whole, not
#: per call, so that a tracking server that hangs costs a bounded time; and what is left of it once a stop is asked
#: for again ("stop now")
BOOKS_S, STOP_NOW_S = 120.0, 10.0


class StopSignals:
    """Ctrl+C (SIGINT) and SIGTERM while a sweep's driver runs, the same for both, in every phase.

    - Before the launch (the checks, preparing, planning): a signal raises `StopNow`.
    - The launch: the first one stops gracefully: inside `Tuner.fit` it is handed to Tune (its SIGUSR1 handler;
      its own SIGINT handler is off), which ends the trials after a last experiment checkpoint. The next one, or
      one that comes when no Tune run is under way, raises `StopNow`.
    - Ray's shutdown (`hold()`, called when the launch ends): every signal is only acknowledged, so that no Ray
      process is orphaned and no KeyboardInterrupt escapes from a clean-up or an atexit hook.
    - The bookkeeping (`books()`: settling MLflow, the report, the views), under a deadline: a first signal is
      acknowledged (the trials have ended: finishing up); a further one ("stop now") leaves it `STOP_NOW_S`
      more. Past the deadline `OutOfTime` is raised, for the caller to print what is left and how to finish it.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, out) -> None:
        self.out, self.graceful, self.holding = out, False, False
        self.stops = 0  #: signals received so far
        self.now = False  #: a stop-now was asked for: what is left gets `STOP_NOW_S`
        self.deadline: float | None = None  #: time.monotonic() at which the bookkeeping under way is cut short

    def __enter__(self) -> StopSignals:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune hears a stop through SIGUSR1, from us
        self._previous = {sig: signal.getsignal(sig) for sig in (*self.SIGNALS, signal.SIGUSR1)}
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: `ray.init` puts handlers of its own in their place, `ray.shutdown` SIG_DFL."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hold(self) -> None:
        """From now on, signals do not interrupt: the clean-up runs to its end."""
        self.holding = True

    @contextmanager
    def books(self, seconds: float = BOOKS_S) -> Iterator[None]:
        """Bookkeeping after the launch (or instead of one), cut short by `OutOfTime` after `seconds` (after
        `STOP_NOW_S` once a stop-now was asked for); signals meanwhile: see the class."""
        self.arm()  # Ray's shutdown may have reset SIGTERM behind Python's back
        self.holding = False
        self.deadline = time.monotonic() + (min(seconds, STOP_NOW_S) if self.now else seconds)
        previous, (pending, _), began = signal.signal(signal.SIGALRM, self._on_alarm), \
            signal.getitimer(signal.ITIMER_REAL), time.monotonic()
        self._alarm()
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if pending:  # someone else's timer (a test runner's timeout): given back, minus the time spent here
                signal.setitimer(signal.ITIMER_REAL, max(0.001, pending - (time.monotonic() - began)))
            self.deadline, self.holding = None, True  # the session ends: signals are acknowledged only

    def stop_now(self, signum: int) -> None:
        """Stop at once: raise `StopNow`, after saying so."""
        self.holding = self.now = True
        self._say(f"{signal.Signals(signum).name}: stopping now")
        raise StopNow

    def _alarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(0.001, self.deadline - time.monotonic()))

    def _on_alarm(self, signum, frame) -> None:
        if self.deadline is not None:
            self.deadline, self.holding = None, True  # raised once; what the caller says then is not cut in turn
            raise OutOfTime

    def _say(self, text: str) -> None:
        print(f"[mixsweep] {text}", file=self.out, flush=True)

    def _on_signal(self, signum, frame) -> None:
        self.stops += 1
        name = signal.Signals(signum).name
        if self.deadline is not None:  # the bookkeeping: never an interruption, a shorter deadline at most
            if self.stops == 1:
                self._say(f"{name}: the trials have ended; finishing up: writing the report and closing the MLflow "
                          f"runs (again to stop now: at most {STOP_NOW_S:.0f} s more)")
                return
            self.now = True
            self.deadline = min(self.deadline, time.monotonic() + STOP_NOW_S)
            self._alarm()
            self._say(f"{name}: stopping now: finishing the books within {self.deadline - time.monotonic():.0f} s")
            return
        if self.holding:
            self.now = self.now or self.stops > 1
            self._say("already stopping: shutting Ray down and closing the MLflow runs, please wait (kill -9 would "
                      "leave them open)")
            return
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if not self.graceful and callable(tune_handler) and tune_handler is not self._previous[signal.SIGUSR1]:
            self.graceful = True
            self._say(f"{name}: stopping; running trials keep their last checkpoint (Ctrl+C again to stop at once)")
            tune_handler(signum, frame)
            return
        self.stop_now(signum)


def _scheduler(spec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler != "asha":
        return FIFOScheduler()
    asha = getattr(spec, "asha", None)
    kwargs = {} if asha is None else {k: v for k, v in asha.model_dump().items() if v is not None}
    if spec.search.space:  # a search: the epochs its first sampled config gets (a space may supply keys)
        epochs = spec.base_config(resolved=True)["epochs"]
        if "epochs" in spec.search.space:
            epochs = max(spec.search.space["epochs"].probe_values())
    else:
        epochs = max(t.epochs for t in spec.trials)  # resolved once, when the spec loaded
    return ASHAScheduler(time_attr="epoch", metric=per_epoch_metric(spec.metric), mode=spec.mode, max_t=epochs,
                         **kwargs)


def _search(spec, meta: TrialMeta, history):
    """(param_space, search_alg, num_samples) for a search-algorithm spec that has `history` so far."""
    from ray.tune.search import ConcurrencyLimiter

    space = {key: dist.to_tune() for key, dist in spec.search.space.items()}
    param_space = {"trial": {"config": {**spec.base_config(), **space, "seed": spec.seeds[0]}, "meta": meta.to_dict()}}
    limit = spec.search.max_concurrent or max(1, int(os.cpu_count() or 1))
    alg = ConcurrencyLimiter(optuna_search(spec, history, param_space), max_concurrent=limit)
    return param_space, alg, history.num_samples


def _fatal_stopper(progress):
    """A Tune stopper that ends the whole experiment once a trial reported a fatal problem (a full disk)."""
    from ray.tune import Stopper

    class StopOnFatal(Stopper):
        """Stops every trial once `progress.fatal` is set; never a single trial."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return progress.fatal is not None

    return StopOnFatal()


def build_tuner(plan: LaunchPlan, progress):
    from ray import tune

    spec = plan.spec
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from .stall import StallWatch

    resourced = tune.with_resources(trainable.run_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    # Tune's default loggers but TensorBoard's (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, see `console.ray_env`):
    # result.json is what `mixsweep sync` replays; the metrics are in MLflow
    run_config = tune.RunConfig(
        name=plan.launch_name, storage_path=str(plan.paths.ray), verbose=0,
        callbacks=[progress, StallWatch(progress, spec.stall_timeout, spec.max_failures), JsonLoggerCallback(),
                   CSVLoggerCallback()],
        stop=_fatal_stopper(progress),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )
    if plan.trials:
        items = [{"config": t.config, "meta": plan.meta.identified(config_hash=t.config_hash, run_hash=t.run_hash,
                                                                  run_name=t.name).to_dict()} for t in plan.trials]
        param_space, search_alg, samples = {"trial": tune.grid_search(items)}, None, 1
    else:
        param_space, search_alg, samples = _search(spec, plan.meta, plan.search)
    tune_config = tune.TuneConfig(
        scheduler=_scheduler(spec), search_alg=search_alg, num_samples=samples, reuse_actors=True,
        trial_dirname_creator=lambda trial: trial.trial_id,
    )
    return tune.Tuner(resourced, param_space=param_space, tune_config=tune_config, run_config=run_config)


def run_plan(plan: LaunchPlan, progress, signals: StopSignals) -> bool:
    """Run one launch; returns True when every trial ended, False when it was stopped (SIGINT/SIGTERM)."""
    with ray_connection(plan.address, plan.paths, on_worker_line=getattr(progress, "worker_line", None),
                        signals=signals):
        try:
            results = build_tuner(plan, progress).fit()
        finally:
            signals.hold()  # Ray's shutdown is not to be cut short (the bookkeeping after it: `signals.books`)
            close = getattr(progress, "close", None)
            if close is not None:
                close()  # the live table ends before anything else prints
    if results.num_errors:
        print(f"[mixsweep] {results.num_errors} trial(s) ended with an error after retries (full logs: "
              f"{plan.paths.logs})", file=getattr(progress, "out", None) or sys.stderr)
    expected = len(plan.trials) if plan.trials else plan.search.num_samples
    stopped = {tid for tid, row in progress.rows.items() if row.status == "STOPPED"}  # by the scheduler

    def ended(result) -> bool:  # after Ctrl+C Tune calls stopped and unstarted trials "terminated" too
        metrics = result.metrics or {}
        return result.error is not None or bool(metrics.get("done")) or metrics.get("trial_id") in stopped

    return len(results) >= expected and all(ended(r) for r in results)


def check_data(configs: list, address: str | None, out) -> None:
    """Fail fast on data files a trial would not find: each distinct file dataset of `configs` (the trials'
    resolved `TrainConfig`s; a mapping is resolved here) is opened
    once here, before Ray starts (UserError naming what is missing). On a cluster (`address`) the data
    may live on the worker nodes only, so a problem is a warning there; each trial still fails at once,
    without retries, with the reason the driver prints."""
    seen = set()
    for config in configs:
        cfg = validate_config(config)
        key = (cfg.dataset, json.dumps(cfg.data, sort_keys=True, default=str))
        if key in seen or "root" not in dataset_options(cfg.dataset):  # procedural datasets read no files
            continue
        seen.add(key)
        try:
            build_dataset(cfg.dataset, **cfg.data)
        except (ValueError, TypeError, OSError) as exc:
            if not address:
                raise UserError(str(exc)) from None
            print(f"[mixsweep] warning: on this machine (the trials check it on theirs): {exc}", file=out)


def trial_meta(spec, paths: SweepPaths, tracking_uri: str, experiment_id: str, sweep_run_id: str,
               commit: str) -> TrialMeta:
    """What every trial of this launch is told (each grid trial gets its identity added in `build_tuner`)."""
    return TrialMeta(sweep=spec.name, tracking_uri=tracking_uri, experiment_id=experiment_id,
                     sweep_run_id=sweep_run_id, git_commit=commit, trials_dir=str(paths.trials))


__all__ = ["LaunchPlan", "build_tuner", "check_no_live_driver", "leftover_ray_processes", "record_driver", "run_plan",
           "stop_processes", "trial_meta"]

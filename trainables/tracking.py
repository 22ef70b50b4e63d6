"""MLflow tracking of one trial, from the worker (the driver creates experiment and sweep run).

Get-or-create: a trial's run is found by its sweep and `run_hash` tags (a resumed or relaunched
trial continues its own run: exactly one run per trial), nested under the sweep run. Params are
the full flat config, logged once. Each epoch's metrics go in ONE `log_batch` with step=epoch,
and only for epochs the run does not have yet, so a trial that restarts from an older checkpoint
never logs an epoch twice. Tracking must never cost training: any MLflow error is reported once
on stderr and tracking switches off for the rest of the trial (the metrics stay in the Ray
results and `mixsweep sync` back-fills MLflow later).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .meta import TrialMeta
from .metrics import TEST_ERR

TAG_SWEEP, TAG_ROLE, TAG_RUN_HASH, TAG_CONFIG_HASH = "mixsweep.sweep", "mixsweep.role", "mixsweep.run_hash", \
    "mixsweep.config_hash"
TAG_TRIAL_ID, TAG_COMMIT, TAG_NODE, TAG_NODES, TAG_ERROR = "ray.trial_id", "mixsweep.git_commit", \
    "mixsweep.node_id", "mixsweep.node_history", "mixsweep.error"
TAG_DEVICE = "mixsweep.device"
TAG_NOTE = "mlflow.note.content"  #: MLflow's run description (Markdown in the UI)
MAX_PARAMS_PER_BATCH, MAX_PARAM_CHARS = 100, 6000
PROGRESS_KEY = TEST_ERR  #: the per-epoch metric whose history says which epochs are logged
#: a trial must not stall on a dead tracking server: few, short HTTP retries (users may override)
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def apply_http_defaults() -> None:
    """Few, short MLflow HTTP retries unless the user set their own (MLFLOW_HTTP_REQUEST_*).

    Sets the process environment: call it once, at a process entry point (`mixsweep`'s main, a Ray
    trial's start, `python -m trainables.train`), never from a library function."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def http_settings() -> dict[str, str]:
    """The MLflow HTTP settings for processes that do not inherit this one's environment (a cluster's workers):
    the user's where set here, else `HTTP_DEFAULTS`."""
    return {key: os.environ.get(key, value) for key, value in HTTP_DEFAULTS.items()}


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold `<db>.lock` next to a sqlite store: MLflow creates and migrates the schema when a process
    first opens a store, and processes doing that at once on a new database fail or corrupt it.

    Every sweep in a storage folder shares its `mlflow.db`, so the per-sweep lock does not cover
    this. Servers need no lock; neither does a folder where the lock file cannot be created
    (nothing can create a database there either)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    try:
        handle = open(db.with_name(db.name + ".lock"), "a+")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mlflow_client(uri: str):
    """An MlflowClient opened under `store_lock` (opening creates a new store). HTTP retries: see
    `apply_http_defaults`, which the entry points call."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)


def param_value(value: Any) -> str:
    text = "None" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Log `params` (values cut to MAX_PARAM_CHARS) in batches of at most MAX_PARAMS_PER_BATCH, MLflow's cap
    per `log_batch`; the one param logger of the trial runs and the sweep run."""
    from mlflow.entities import Param

    items = [Param(k, param_value(v)) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])


def find_trial_run(client, experiment_id: str, sweep: str, run_hash: str):
    """The run of (sweep, run_hash), or None."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_RUN_HASH}` = '{run_hash}'",
        max_results=5,
    )
    return runs[0] if runs else None


def open_trial_run(client, meta: TrialMeta, params: Mapping[str, Any], trial_id: str = "",
                   node_id: str = "", device: str = "") -> tuple[str, int]:
    """Get-or-create the trial's run; returns (run_id, last epoch already logged)."""
    from mlflow.entities import RunStatus, RunTag

    run = find_trial_run(client, meta.experiment_id, meta.sweep, meta.run_hash)
    if run is None:
        tags = {
            TAG_SWEEP: meta.sweep, TAG_ROLE: "trial", TAG_RUN_HASH: meta.run_hash,
            TAG_CONFIG_HASH: meta.config_hash, TAG_COMMIT: meta.git_commit,
            "mlflow.runName": meta.run_name or meta.run_hash,
        }
        if meta.sweep_run_id:
            tags["mlflow.parentRunId"] = meta.sweep_run_id
        run = client.create_run(meta.experiment_id, tags=tags, run_name=tags["mlflow.runName"])
        run_id = run.info.run_id
        log_params(client, run_id, params)
        last = 0
    else:
        run_id = run.info.run_id
        history = client.get_metric_history(run_id, PROGRESS_KEY)
        last = max((m.step for m in history), default=0)
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    nodes = [n for n in (run.data.tags.get(TAG_NODES, "") if run.data else "").split(",") if n]
    if node_id and (not nodes or nodes[-1] != node_id):
        nodes.append(node_id)
    tags = [RunTag(TAG_TRIAL_ID, trial_id), RunTag(TAG_NODE, node_id), RunTag(TAG_NODES, ",".join(nodes)),
            RunTag(TAG_DEVICE, device)]
    client.log_batch(run_id, tags=[t for t in tags if t.value])
    return run_id, last


class TrialTracker:
    """Logs one trial to MLflow; every method is a no-op once tracking has failed."""

    def __init__(self, meta: TrialMeta, params: Mapping[str, Any], *, trial_id: str = "",
                 node_id: str = "", device: str = "") -> None:
        self.meta, self.run_id, self.last_step, self.error = meta, None, 0, None
        self.exception: Exception | None = None  #: what switched tracking off
        self.client = None
        if not meta.tracking_uri:
            return
        self._guard("open", self._open, params, trial_id, node_id, device)

    def _open(self, params, trial_id, node_id, device) -> None:
        # MLflow logs a store error with its traceback before raising it; `_guard` reports it in one line
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.client = mlflow_client(self.meta.tracking_uri)
        self.run_id, self.last_step = open_trial_run(self.client, self.meta, params, trial_id, node_id, device)

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.error is None

    def _guard(self, what: str, fn, *args) -> None:
        if self.error is not None:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - tracking must never fail a trial
            self.error, self.exception = f"{type(exc).__name__}: {exc}", exc
            first = " ".join(self.error.split())[:300]  # SQL errors carry every parameter of the statement
            print(f"mixsweep: MLflow tracking off for run {self.meta.run_hash} ({what} failed: "
                  f"{first}); metrics stay in the Ray results, `mixsweep sync` back-fills them",
                  file=sys.stderr, flush=True)

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's numeric metrics in one batch, unless this epoch is already logged."""
        if not self.active or step <= self.last_step:
            return

        def log() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                     if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"]
            client = self.client
            for i in range(0, len(items), 1000):
                client.log_batch(self.run_id, metrics=items[i : i + 1000])
            self.last_step = step

        self._guard("log_batch", log)

    def log_final(self, step: int, final: Mapping[str, float]) -> None:
        """Log the final/* metrics at the last epoch's step (when the epoch line was back-filled)."""
        if not self.active:
            return

        def log() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, step) for k, v in final.items() if k != "epochs"]
            self.client.log_batch(self.run_id, metrics=items)

        self._guard("log_batch", log)

    def log_artifacts(self, *paths: Path) -> None:
        if self.active:
            for path in paths:
                if Path(path).exists():
                    self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path))

    def finish(self, status: str, error: str | None = None) -> None:
        """Mark the run FINISHED / FAILED / KILLED (with the reason as a tag when failed); a FINISHED
        run loses the reason an earlier stop or failure left (a resumed trial that then finished)."""
        if not self.active:
            return
        if error:
            self._guard("set_tag", self.client.set_tag, self.run_id, TAG_ERROR, error[:5000])
        elif status == "FINISHED":
            self._guard("delete_tag", self._clear_error)
        self._guard("set_terminated", self.client.set_terminated, self.run_id, status)

    def _clear_error(self) -> None:
        if TAG_ERROR in self.client.get_run(self.run_id).data.tags:
            self.client.delete_tag(self.run_id, TAG_ERROR)

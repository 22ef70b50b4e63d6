"""MLflow from the driver: tracking URI, experiment, the sweep run, and reading trial runs back.

The driver creates the experiment (and with it a new sqlite schema) once, before any trial
starts: several processes creating a new sqlite database at once corrupt it. Sweeps in one
storage folder share its database, so its first opening and the experiment's creation happen
under a lock file next to it (`store_lock`). Workers only log into an existing experiment
(`trainables.tracking`).
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainables.tracking import (
    TAG_CONFIG_HASH,
    TAG_DEVICE,
    TAG_ERROR,
    TAG_NODE,
    TAG_NOTE,
    TAG_ROLE,
    TAG_RUN_HASH,
    TAG_SWEEP,
    log_params,
    mlflow_client,
    store_lock,
)

from .errors import UserError

TAG_SPEC_HASH = "mixsweep.spec_hash"
MAX_TAG_CHARS = 8000  # MLflow's limit on a tag's value (longer ones are refused, not cut)


def default_tracking_uri(storage: Path) -> str:
    return f"sqlite:///{(storage / 'mlflow.db').resolve()}"


#: how long the pre-flight check waits for a tracking server's answer (a hung one is refused, not waited for)
CHECK_TIMEOUT_S = 5.0
#: a read-only API call the pre-flight check makes after /health: a server whose /health answers may still hang
#: behind it (its database); any HTTP answer will do (a 401 or a 404 is an answer)
API_PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"


def check_tracking_uri(uri: str, timeout: float = CHECK_TIMEOUT_S, *, require_folder: bool = True) -> None:
    """Fail fast, before any trial starts, when the tracking store cannot be reached, or a server accepts
    connections but does not answer within `timeout` (its /health, then one API call). Without
    `require_folder`, a sqlite store's folder may still be missing (the storage creates it)."""
    if is_server(uri):
        status = _ask(uri, "/health", timeout)
        if status not in (200, 401, 403):  # a server that guards /health too: the credential check names why
            raise UserError(f"MLflow tracking server {uri} answered {status} on /health")
        _ask(uri, API_PROBE, timeout)
        from .credentials import check_credentials

        check_credentials(uri, timeout)  # a server that needs credentials: a 401 names MLflow's variables
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_absolute():
            raise UserError(f"tracking URI {uri}: sqlite paths must be absolute (sqlite:////abs/path/mlflow.db); "
                            "Ray trials run in other folders")
        if require_folder and not path.parent.is_dir():
            raise UserError(f"tracking URI {uri}: folder {path.parent} does not exist")
    elif uri.startswith("sqlite:"):
        raise UserError(f"tracking URI {uri}: sqlite URIs must be absolute (sqlite:////abs/path/mlflow.db)")


def _ask(uri: str, path: str, timeout: float) -> int:
    """The HTTP status a tracking server answers on `path` (UserError: out of reach, or no answer in `timeout`)."""
    url = uri.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user-given tracking server
            return resp.status
    except urllib.error.HTTPError as exc:
        if path != "/health" or exc.code in (401, 403):  # an answer (it may want credentials, or know no Default)
            return exc.code
        reason = exc.reason
    except TimeoutError:  # connected, then nothing: urllib raises the read's timeout as it is
        asked = path.split("?")[0]
        raise UserError(f"the MLflow tracking server at {uri} accepts connections but did not answer {asked} "
                        f"within {timeout:.0f} s (hung, overloaded, or not an MLflow server); check it (curl "
                        f"{uri}/health) or pass another --tracking-uri") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
    raise UserError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it (mlflow "
                    f"server --host 127.0.0.1 --port PORT ...) or pass another --tracking-uri")


def client(uri: str):
    """An MlflowClient (HTTP retries bounded by the process's entry point, `apply_http_defaults`); a new
    sqlite store is created under its lock, whichever of our processes opens it first."""
    return mlflow_client(uri)


def is_server(uri: str) -> bool:
    """Whether `uri` is a tracking server (its UI is on the same host), not a local store."""
    return uri.startswith(("http://", "https://"))


def store_errors() -> tuple[type[BaseException], ...]:
    """What a reachable store that fails raises through MlflowClient (the server's errors, the network,
    the database file): `except tracking.store_errors()`, so that our own bugs keep their traceback."""
    from mlflow.exceptions import MlflowException  # MLflow itself is imported only by commands that use it
    from requests import RequestException

    return (MlflowException, RequestException, OSError)


def ensure_experiment(mlflow_client, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, created if missing (local stores keep artifacts under `artifact_root`).
    Sweeps sharing a sqlite store check and create under its lock: one experiment, not one error."""
    with store_lock(mlflow_client.tracking_uri):
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise UserError(f"MLflow experiment {name!r} is deleted; restore it or use another `experiment:`")
            return exp.experiment_id
        location = (artifact_root / name).resolve().as_uri() if artifact_root is not None else None
        return mlflow_client.create_experiment(name, artifact_location=location)


def check_sweep_store(mlflow_client, state, experiment: str, storage: Path) -> None:
    """Make sure the store still holds the sweep `state` describes before anything reads or writes there: its
    experiment `experiment` under the stored id, and its sweep run in it. A tracking server that came back
    with a fresh database (where another experiment may have taken the stored id) is a UserError, not a
    sweep's runs written into another team's experiment."""
    uri, sweep = mlflow_client.tracking_uri, state.name
    exp = mlflow_client.get_experiment_by_name(experiment)
    if exp is None or exp.experiment_id != state.experiment_id or exp.lifecycle_stage == "deleted":
        other = _experiment_name(mlflow_client, state.experiment_id)
        found = (f"it has no experiment {experiment!r}" if exp is None else
                 f"experiment {experiment!r} is deleted there" if exp.lifecycle_stage == "deleted" else
                 f"experiment {experiment!r} has id {exp.experiment_id} there")
        held = f", and id {state.experiment_id} is {other!r}" if other and other != experiment else ""
        problem = f"the sweep's experiment {experiment!r} had id {state.experiment_id}; {found}{held}"
    else:
        try:
            run = mlflow_client.get_run(state.sweep_run_id)
            ours = run.info.experiment_id == state.experiment_id and run.data.tags.get(TAG_SWEEP) == sweep
        except store_errors():
            ours = False
        if ours:
            return
        problem = f"its sweep run {state.sweep_run_id} is not in experiment {experiment!r} there"
    raise UserError(f"the MLflow store {uri} does not hold sweep {sweep!r} any more ({problem}): it was replaced or "
                    "reset since the sweep ran, so nothing was read or written there. To track the sweep in this "
                    f"store anew (its experiment, runs and metrics from the trials' folders): mixsweep resume {sweep} "
                    f"--storage {storage}")


def _experiment_name(mlflow_client, experiment_id: str) -> str | None:
    try:
        return mlflow_client.get_experiment(experiment_id).name
    except store_errors():
        return None


def find_sweep_run(mlflow_client, experiment_id: str, sweep: str):
    runs = mlflow_client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_ROLE}` = 'sweep'",
        max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def ensure_sweep_run(mlflow_client, experiment_id: str, spec, spec_hash: str, params: Mapping[str, Any]) -> str:
    """Get-or-create the sweep's parent run; params and the spec artifact are logged once per spec version."""
    from mlflow.entities import RunStatus

    run = find_sweep_run(mlflow_client, experiment_id, spec.name)
    if run is None:
        tags = {TAG_SWEEP: spec.name, TAG_ROLE: "sweep", TAG_SPEC_HASH: spec_hash, "mlflow.runName": spec.name}
        if spec.description:  # until `mlflow_views.publish` writes the whole description (cut to MLflow's limit)
            tags[TAG_NOTE] = spec.description[:MAX_TAG_CHARS]
        run = mlflow_client.create_run(experiment_id, tags=tags, run_name=spec.name)
        run_id = run.info.run_id
        log_params(mlflow_client, run_id, params)
        mlflow_client.log_text(run_id, spec.text, "spec.yaml")
        return run_id
    run_id = run.info.run_id
    if run.data.tags.get(TAG_SPEC_HASH) != spec_hash:  # an extended or edited spec: keep every version
        mlflow_client.log_text(run_id, spec.text, f"spec-{spec_hash}.yaml")
        mlflow_client.set_tag(run_id, TAG_SPEC_HASH, spec_hash)
    mlflow_client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    return run_id


def sweep_runs(mlflow_client, experiment_id: str, sweep: str, role: str | None = "trial") -> list:
    """The sweep's runs of `role` (`trial`, `retired`; None: both, not the sweep run), all pages."""
    roles = f"tags.`{TAG_ROLE}` = '{role}'" if role else f"tags.`{TAG_ROLE}` != 'sweep'"
    out, token = [], None
    while True:
        page = mlflow_client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and {roles}",
            max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def trial_runs(mlflow_client, experiment_id: str, sweep: str) -> list:
    """Every trial run of the sweep (all pages); retired runs are not trial runs."""
    return sweep_runs(mlflow_client, experiment_id, sweep, role="trial")


def finished_hashes(runs: Iterable) -> set[str]:
    return {r.data.tags.get(TAG_RUN_HASH) for r in runs if r.info.status == "FINISHED"} - {None}


def mark_unfinished(mlflow_client, runs: Iterable, status: str, reason: str) -> int:
    """Set every RUNNING trial run to `status` (KILLED after a stop); returns how many."""
    n = 0
    for run in runs:
        if run.info.status == "RUNNING":
            mlflow_client.set_tag(run.info.run_id, TAG_ERROR, reason)
            mlflow_client.set_terminated(run.info.run_id, status)
            n += 1
    return n


def runs_frame(runs: Iterable, factors: Iterable[str]):
    """One row per trial run: hashes, seed, status, error, factor params, all metrics, device."""
    import pandas as pd

    rows = []
    for run in runs:
        tags, params = run.data.tags, run.data.params
        row = {"run_hash": tags.get(TAG_RUN_HASH), "config_hash": tags.get(TAG_CONFIG_HASH),
               "name": tags.get("mlflow.runName"), "seed": int(params.get("seed", 0)), "status": run.info.status,
               "error": tags.get(TAG_ERROR, ""), "device": tags.get(TAG_DEVICE, ""),
               "node_id": tags.get(TAG_NODE, ""), "run_id": run.info.run_id}
        for factor in factors:
            row[factor] = params.get(factor)
        row.update(run.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def git_commit() -> str:
    """The commit of the mixsweep checkout that runs (not of whatever folder the user is in)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                             cwd=here)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

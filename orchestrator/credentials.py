"""Credentials of an MLflow tracking server: MLflow's own, and a 401/403 as one message that names them.

MLflow reads them itself, in every process that talks to the server: MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD (basic auth) or MLFLOW_TRACKING_TOKEN (bearer), else the file
~/.mlflow/credentials. mixsweep never copies them anywhere (not into a Ray job's runtime_env or
metadata, nor any file): a submitted sweep's driver and workers find them on the cluster's machines.
"""

from __future__ import annotations

import os

from .errors import UserError
from .jobs import ENV_JOB_ID

VARIABLES = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
FILE = "~/.mlflow/credentials ([mlflow] tracking_username = ..., tracking_password = ...)"
#: an authenticated request any MLflow server answers (auth apps guard it; /health they do not)
PROBE = "/api/2.0/mlflow/experiments/search"


def check_credentials(uri: str, timeout: float = 5.0) -> None:
    """UserError naming MLflow's credential variables when the server at `uri` refuses this process (401/403);
    anything else (unreachable, slow, a 5xx) is left to the caller's own checks and to MLflow."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    try:
        response = http_request(creds, PROBE, "GET", max_retries=0, timeout=timeout, raise_on_status=False,
                                params={"max_results": 1})
    except Exception:  # noqa: BLE001 - reachability is check_tracking_uri's; this one is about credentials
        return
    if response.status_code not in (401, 403):
        return
    given = "were refused" if (creds.username or creds.token) else "are missing"
    if os.environ.get(ENV_JOB_ID):  # the driver of a submitted sweep, on the head
        where = ("on the cluster's head and workers: in the environment `ray start` runs with there, or in the file "
                 f"{FILE} of the user running Ray (a submitted job never carries them)")
    else:
        where = (f"in this environment, or in the file {FILE}; for `mixsweep submit`, on the cluster's head and "
                 "workers too (in the environment `ray start` runs with there: a job never carries them)")
    raise UserError(f"the MLflow tracking server {uri} answered {response.status_code} "
                    f"({'unauthorized' if response.status_code == 401 else 'forbidden'}): its credentials {given}. "
                    f"MLflow reads {VARIABLES}, set {where}")

"""`mixsweep submit / jobs / logs / stop`: a sweep's driver as a Ray job on the cluster's head.

The laptop validates the spec, checks the job server (reachable, token accepted) and the paths the
head will use, then submits `python -m orchestrator.job_driver` with the project as the job's
`working_dir` (so the driver and every trial worker of the job import the same, shipped code) and
the resolved spec, storage and tracking URI as environment variables. The driver then runs on the
head: the laptop can follow its logs, detach, come back (`logs`, `status`), or stop it.

Token auth (on by default in Ray 2.60): the token is read the way Ray reads it, `RAY_AUTH_TOKEN`,
else the file `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`, and sent as `Authorization: Bearer`.

`ray.job_submission` is imported lazily: `mixsweep --help` / `validate` import neither Ray nor torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import re
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from .errors import UserError

#: the job server's address: http(s)://HOST:PORT (the dashboard port, 8265 by default)
JOB_ADDRESS = re.compile(r"^https?://[A-Za-z0-9_.\-\[\]:]+(:\d{1,5})?/?$")
#: metadata keys of a mixsweep job (Ray keeps them with the job; `jobs` lists by them)
META_TOOL, META_SWEEP, META_SPEC_HASH, META_STORAGE, META_TRACKING, META_PYTHON = (
    "mixsweep", "sweep", "spec_hash", "storage", "tracking_uri", "python")
#: how long the head lets a stopped driver settle (SIGTERM, then SIGKILL); Ray's default is 3 s
STOP_WAIT_S = 120
#: the job's env vars the driver reads (`orchestrator.job_driver`)
ENV_SPEC, ENV_STORAGE, ENV_TRACKING, ENV_JOB_ID, ENV_COMMAND, ENV_NAME, ENV_ADDRESS = (
    "MIXSWEEP_SPEC_YAML", "MIXSWEEP_STORAGE", "MIXSWEEP_TRACKING_URI", "MIXSWEEP_JOB_ID", "MIXSWEEP_COMMAND",
    "MIXSWEEP_SWEEP", "MIXSWEEP_JOB_ADDRESS")
#: tag of the sweep run that names its Ray jobs, and the storage file that lists them
TAG_JOB_ID = "mixsweep.job_id"
JOBS_FILE = "jobs.json"
PROJECT = Path(__file__).resolve().parent.parent
#: the most one environment variable may hold on Linux (MAX_ARG_STRLEN): the job's driver gets the runtime_env
#: (the spec included) and the metadata as one variable, and a job whose variables exceed it never starts
ENV_LIMIT = 128 * 1024
#: MLflow's switch for its "🏃 View run ... at: ..." lines, which it writes to stdout when a run ends on a server
QUIET_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
#: how long `submit` / `logs` wait for a PENDING job to start before saying why it does not (MIXSWEEP_PENDING_S)
PENDING_S = 180


def _server_errors(command):
    """A command's failure to talk to the job server after it connected (the head went away, a proxy dropped the
    connection, the server answered 500) as a UserError naming the address, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:  # our stdout's reader left (`| head`): the CLI's to end quietly
            raise
        except (OSError, RuntimeError) as exc:
            address = kwargs.get("address", "the cluster")
            raise UserError(f"talking to the Ray job server at {address} failed: {type(exc).__name__}: "
                            f"{_first_line(exc)} (is the head still up? mixsweep jobs --address {address} shows "
                            "what runs there)") from None

    return wrapper


# -- the token ------------------------------------------------------------------------------------
def read_token() -> tuple[str | None, str]:
    """(token or None, where it was looked for / found), in Ray's order."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    where = f"{path}{' ($RAY_AUTH_TOKEN_PATH)' if os.environ.get('RAY_AUTH_TOKEN_PATH') else ''}"
    try:
        token = path.read_text().strip()
    except OSError:
        return None, where
    return token or None, where


def check_job_address(address: str) -> str:
    if not address or not JOB_ADDRESS.match(address):
        raise UserError(f"--address {address!r}: expected the job server of the cluster's head, http://HEAD:8265 "
                        "(its dashboard port)")
    return address.rstrip("/")


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def connect(address: str):
    """A `JobSubmissionClient` that reached the server and had its token accepted; UserError otherwise."""
    address = check_job_address(address)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    _quiet_client()
    token, where = read_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        client = JobSubmissionClient(address, headers=headers)
        client.list_jobs()  # the version check is not authenticated everywhere: make one request that is
    except AuthenticationError:
        if token is None:
            raise UserError(f"the Ray cluster at {address} requires a token and none was found (looked in "
                            f"$RAY_AUTH_TOKEN and {where}); copy the head's ~/.ray/auth_token here (on the head: "
                            "ray get-auth-token), or set RAY_AUTH_TOKEN") from None
        raise UserError(f"the Ray cluster at {address} rejected the token from {where}; it is not this cluster's "
                        "(on the head: ray get-auth-token)") from None
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray job server at {address} ({str(exc).splitlines()[0][:200]}); is the "
                        "head running, with `ray[default]` installed (its dashboard serves the jobs API), and is "
                        "this its dashboard port (8265 by default)?") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a head without the job server answers 404
        raise UserError(f"the Ray job server at {address} failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:300] if str(exc) else ''} (the head needs `ray[default]`: "
                        "pip install 'mixsweep[cluster]')") from None
    return client


# -- what gets submitted ---------------------------------------------------------------------------
def head_paths(address: str, storage: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """(storage, tracking URI) as the head will use them; UserError naming why when it could not."""
    if not storage:
        raise UserError("--storage is required: an absolute path on the cluster that the head and every worker see "
                        "(a shared mount), e.g. --storage /mnt/shared/mixsweep_runs")
    if not Path(storage).is_absolute() or storage.startswith("~"):
        raise UserError(f"--storage {storage}: must be an absolute path on the cluster (the job runs in a temporary "
                        "folder on the head, so a relative path would land there)")
    uri = tracking_uri or f"sqlite:///{Path(storage) / 'mlflow.db'}"
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        if _loopback(parsed.hostname) and not _loopback(urlparse(address).hostname):
            raise UserError(f"--tracking-uri {uri}: the driver runs on the head, where {parsed.hostname} is the head "
                            "itself, not this machine; give the tracking server's address as the cluster sees it")
        from . import tracking

        try:
            tracking.check_tracking_uri(uri)
        except UserError as exc:
            if _loopback(urlparse(address).hostname):
                raise
            # a server on the cluster's private network may be out of this machine's reach: the driver checks it
            # again on the head (before any trial starts), where it has to be reachable
            print(f"[mixsweep] warning: {exc}; submitting anyway (the job's driver checks it on the head)",
                  file=sys.stderr)
    elif uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not Path(path).is_absolute():
            raise UserError(f"--tracking-uri {uri}: a sqlite path must be absolute (sqlite:////abs/mlflow.db)")
        if not _loopback(urlparse(address).hostname) and not Path(path).is_relative_to(storage):
            raise UserError(f"--tracking-uri {uri}: a sqlite store outside --storage would live on the head's disk "
                            "(or this laptop's path, which the head cannot open); pass an MLflow server, "
                            "--tracking-uri http://HOST:5000")
    else:
        raise UserError(f"--tracking-uri {uri}: expected http(s)://HOST:PORT of an MLflow server, or sqlite:////abs "
                        "on the shared storage")
    return storage, uri


#: the head's Ray's own interpreter: `--python_worker_command=PYTHON ...` of the raylet, an ancestor of the job's
#: supervisor (the entrypoint's parent, whose own command line is Ray's process title, and whose executable is the
#: base interpreter of a venv, not the venv's)
_RAY_PYTHON = ("ray_python() { p=$PPID; while [ \"${p:-0}\" -gt 1 ]; do x=$(tr '\\0' '\\n' < /proc/$p/cmdline "
               "2>/dev/null | sed -n 's/^--python_worker_command=\\([^ ]*\\).*/\\1/p'); "
               "[ -n \"$x\" ] && { echo \"$x\"; return; }; p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status "
               "2>/dev/null); done; }")


def entrypoint(python: str | None, command: str) -> str:
    """The job's shell command: find the head's interpreter, then run the driver (exec: it gets the stop signal).

    `python` (--python) is used as given; without it, `python` on the head's PATH, else the interpreter the head's
    Ray runs with, when that one imports ray, mlflow and torch. The job's log says which one it used. Every user
    value is quoted (shlex.quote): none of it is ever run by the head's shell."""
    probe = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('ray', 'mlflow', 'torch')))"
    ok = f"ok() {{ \"$1\" -c {shlex.quote(probe)} 2>/dev/null; }}"
    missing = ("mixsweep: {} on the head cannot import ray, mlflow and torch; install mixsweep[cluster] there or pass "
               "--python PATH")
    if python:
        find = (f"PY={shlex.quote(python)}; ok \"$PY\" || {{ echo {shlex.quote(missing.format(python))} >&2; "
                "exit 2; }")
    else:
        neither = ("mixsweep: neither python on the head's PATH nor the interpreter of the head's Ray can import ray, "
                   "mlflow and torch; install mixsweep[cluster] there or pass --python PATH")
        fallback = "mixsweep: python on the head's PATH cannot import ray, mlflow and torch; using the head's Ray's: "
        find = (f"{_RAY_PYTHON}; PY=python; if ! ok \"$PY\"; then PY=$(ray_python); if [ -n \"$PY\" ] && ok \"$PY\"; "
                f"then echo {shlex.quote(fallback)}\"$PY\" >&2; else "
                f"echo {shlex.quote(neither)} >&2; exit 2; fi; fi")
    return (f"{ok}; {find}; echo \"mixsweep: the driver runs with $(command -v \"$PY\" || echo \"$PY\")\"; "
            f"exec \"$PY\" -m orchestrator.job_driver {shlex.quote(command)}")


def runtime_env(env_vars: dict[str, str]) -> dict[str, Any]:
    """The code (`shipped_code`) and the driver's environment."""
    from trainables.tracking import http_settings

    env = http_settings()
    env.update({"RAY_JOB_STOP_WAIT_TIME_S": str(STOP_WAIT_S), "PYTHONUNBUFFERED": "1",
                "RAY_USAGE_STATS_ENABLED": "0", QUIET_URLS: "true"}, **env_vars)
    return {**shipped_code(), "env_vars": env}


def shipped_code() -> dict[str, Any]:
    """How the job gets this code: a source checkout is its `working_dir` (its .gitignore honoured); an installed
    mixsweep (site-packages) ships its three packages as `py_modules` instead of all of site-packages."""
    if (PROJECT / "pyproject.toml").is_file() and os.environ.get("MIXSWEEP_SHIP") != "py_modules":
        return {"working_dir": str(PROJECT), "excludes": [".git", "*.pyc", "mixsweep_runs", "mlruns", "*.db"]}
    return {"py_modules": [str(PROJECT / package) for package in ("orchestrator", "trainables", "search_spaces")],
            "excludes": ["*.pyc", "__pycache__"]}


#: Ray's client-side loggers and the level they keep: the SDK's INFO lines ("Package ... already exists,
#: skipping upload", "WebSocket closed for job ...") and packaging's warning that .git is left out (it should be)
#: are not the user's concern
_CLIENT_LOGGERS = {"ray.dashboard.modules.dashboard_sdk": logging.WARNING, "ray.dashboard.modules.job.sdk":
                   logging.WARNING, "ray._private.runtime_env.working_dir": logging.ERROR,
                   "ray._private.runtime_env.packaging": logging.WARNING}


def _quiet_client() -> None:
    """Ray's SDK modules set their loggers to INFO when imported: after the import, ours."""
    for name, level in _CLIENT_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def mixsweep_jobs(client, sweep: str | None = None) -> list:
    """The cluster's mixsweep jobs (of `sweep`), oldest first."""
    jobs = [j for j in client.list_jobs() if (j.metadata or {}).get(META_TOOL) == "1"
            and (sweep is None or j.metadata.get(META_SWEEP) == sweep)]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def next_job_id(client, sweep: str, spec_hash: str) -> str:
    prefix = f"mixsweep-{sweep}-{spec_hash}-"
    used = [int(j.submission_id[len(prefix):]) for j in client.list_jobs()
            if (j.submission_id or "").startswith(prefix) and j.submission_id[len(prefix):].isdigit()]
    return f"{prefix}{max(used, default=0) + 1}"


#: a head that has just started may have no job agent yet: the server waits 10 s for one, then asks the client to
#: "try again later" (HTTP 500); how long submit keeps asking
AGENT_WAIT_S = 90


def _submit(client, name: str, digest: str, env: dict[str, str], metadata: dict[str, str], python: str | None,
            tries: int = 5, out: TextIO | None = None) -> str:
    """Submit under the next free id; the job id if it was accepted, UserError with the server's reason if not.

    Another submit that took the same id first (the server refuses a second job with an existing id) moves this
    one to the next number; a head whose job agent is not up yet is asked again for `AGENT_WAIT_S` seconds."""
    deadline, said = time.monotonic() + AGENT_WAIT_S, False
    taken = 0
    while True:
        job_id = next_job_id(client, name, digest)
        env[ENV_JOB_ID] = job_id
        _check_size(runtime_env(env), metadata)
        try:
            client.submit_job(entrypoint=entrypoint(python, env[ENV_COMMAND]), submission_id=job_id,
                              runtime_env=runtime_env(env), metadata=metadata)
            return job_id
        except RuntimeError as exc:
            reason = str(exc).strip()
            if "already exists" in reason and taken < tries:
                taken += 1
                continue
            if "No available agent" in reason and time.monotonic() < deadline:
                if not said:
                    print("[mixsweep] the head's job agent is not up yet (has the cluster just started?); waiting "
                          f"up to {AGENT_WAIT_S} s", file=out or sys.stderr, flush=True)
                    said = True
                time.sleep(2)
                continue
            raise UserError(f"the Ray job server refused the job: {reason[:500]}") from None


def _check_size(env: dict[str, Any], metadata: dict[str, str]) -> None:
    """Refuse a job whose driver could never start: Ray hands it the runtime_env (the spec in it) and the metadata as
    one environment variable, which Linux refuses over `ENV_LIMIT` (the job would stay PENDING)."""
    size = len(json.dumps({"runtime_env": env, "metadata": metadata}).encode()) + 1024  # + Ray's own keys
    if size > ENV_LIMIT:
        spec = len(env["env_vars"].get(ENV_SPEC, "").encode())
        raise UserError(f"the sweep is too large to submit: its job's environment would hold {size // 1024} KiB in one "
                        f"variable (the resolved spec is {spec // 1024} KiB), and Linux allows {ENV_LIMIT // 1024} KiB "
                        "(the job could never start); shorten the spec (its description), or run it on the cluster "
                        "with mixsweep run SPEC --address auto")


def _live(client, sweep: str) -> list:
    """The sweep's PENDING / RUNNING jobs, oldest first."""
    return [job for job in mixsweep_jobs(client, sweep) if not job.status.is_terminal()]


def _busy(sweep: str, job, address: str) -> UserError:
    return UserError(f"sweep {sweep!r} already runs on this head as job {job.submission_id} ({job.status.value}); "
                     f"follow it: mixsweep logs {job.submission_id} --address {address}   stop it: mixsweep stop "
                     f"{job.submission_id} --address {address}")


def _active(client, sweep: str, address: str) -> None:
    live = _live(client, sweep)
    if live:
        raise _busy(sweep, live[0], address)


def _first_or_withdraw(client, sweep: str, job_id: str, address: str) -> None:
    """After submitting: two submits of one sweep that both passed `_active` see each other's job; the job that
    started later (ties: the larger id) is stopped at once, and its submit refused, naming the other."""
    live = _live(client, sweep)
    first = min(live, key=lambda j: (j.start_time or 0, j.submission_id), default=None)
    if first is None or first.submission_id == job_id:
        return
    client.stop_job(job_id)
    if _wait_terminal(client, job_id).status.is_terminal():  # gone from `jobs`, `status`, `logs`
        with contextlib.suppress(Exception):
            client.delete_job(job_id)
    raise _busy(sweep, first, address)


@_server_errors
def submit(ref: str | None, *, address: str, storage: str | None, tracking_uri: str | None, overrides: dict,
           resume: str | None = None, python: str | None = None, wait: bool = True, stop_on_interrupt: bool = False,
           out: TextIO | None = None) -> int:
    """`mixsweep submit`: the exit code of the job's driver when followed, 0 when submitted with `--no-wait`.

    `python`: the head's interpreter (None: `python` on its PATH, else its Ray's); `--resume` reuses the one the
    sweep's last job was given."""
    out = out or sys.stderr
    if resume is not None:
        from .storage import NAME, NAME_RULE

        if not NAME.match(resume):
            raise UserError(f"--resume {resume!r}: not a sweep name; use {NAME_RULE}")
    if resume is None:  # 1. the spec, locally: a bad one is never submitted
        from .spec import load_spec
        from .sweep import spec_hash

        spec = load_spec(ref, overrides=overrides)
        name, digest, env = spec.name, spec_hash(spec), {ENV_SPEC: spec.to_yaml(), ENV_COMMAND: "run"}
    client = connect(address)  # 2. the server and the token, before anything is written
    if resume is not None:
        previous = mixsweep_jobs(client, resume)
        meta = previous[-1].metadata if previous else {}
        storage = storage or meta.get(META_STORAGE)
        tracking_uri = tracking_uri or meta.get(META_TRACKING)
        python = python or meta.get(META_PYTHON)
        name, digest, env = resume, meta.get(META_SPEC_HASH, "resume"), {ENV_COMMAND: "resume"}
    storage, uri = head_paths(address, storage, tracking_uri)
    _active(client, name, address)
    env.update({ENV_STORAGE: storage, ENV_TRACKING: uri, ENV_NAME: name, ENV_ADDRESS: address})
    metadata = {META_TOOL: "1", META_SWEEP: name, META_SPEC_HASH: digest, META_STORAGE: storage, META_TRACKING: uri,
                **({META_PYTHON: python} if python else {})}
    job_id = _submit(client, name, digest, env, metadata, python, out=out)
    _first_or_withdraw(client, name, job_id, address)
    print(f"[mixsweep] submitted {name} as job {job_id} to {address} (storage {storage}, tracking {uri})", file=out)
    hint = f"--address {address}"
    print(f"[mixsweep] follow: mixsweep logs {job_id} {hint}   stop: mixsweep stop {job_id} {hint}", file=out,
          flush=True)
    if not wait:
        return 0
    return follow(client, job_id, stop_on_interrupt=stop_on_interrupt, out=out, address=address)


# -- following, stopping ---------------------------------------------------------------------------
def exit_code(info) -> int:
    """The driver's exit code from the job's final status (STOPPED: 130, like Ctrl+C on a local driver)."""
    status = info.status.value
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return 130
    code = getattr(info, "driver_exit_code", None)
    return int(code) if code not in (None, 0) else 1


async def _tail(client, job_id: str, detached: threading.Event, printed: list[int]) -> None:
    """Stream the job's logs to stdout, from character `printed[0]` on (what an earlier stream showed)."""
    seen = 0
    async for lines in client.tail_job_logs(job_id):
        if detached.is_set():  # Ctrl+C: this stream is over (a new one follows a stopping job)
            return
        new = lines[max(0, printed[0] - seen):]
        seen += len(lines)
        if new:
            sys.stdout.write(new)
            sys.stdout.flush()
            printed[0] += len(new)


def _ask_stop() -> bool:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        answer = input("\n[mixsweep] stop the job on the cluster too? [y/N] (N: detach, it keeps running) ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


#: a log stream that breaks while the job runs (a proxy's timeout, a dashboard restart) is reopened this many times
REOPEN = 5


def _stream(client, job_id: str, detached: threading.Event, printed: list[int]) -> BaseException | None:
    """One log stream, in a thread of its own (Ctrl+C lands in this one, outside asyncio's own SIGINT handling,
    which, interrupted, leaves a KeyboardInterrupt pending for Ray's atexit hook); what broke it, if anything."""
    broke: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_tail(client, job_id, detached, printed))
        except Exception as exc:  # noqa: BLE001 - the follower decides (reopen, or say the job ended)
            broke.append(exc)

    tail = threading.Thread(target=run, daemon=True, name="mixsweep-logs")
    tail.start()
    while tail.is_alive():
        tail.join(0.2)
    return broke[0] if broke else None


def follow(client, job_id: str, *, stop_on_interrupt: bool = False, out: TextIO | None = None,
           address: str = "ADDRESS", printed: list[int] | None = None) -> int:
    """Print the job's logs until it ends; its exit code. Ctrl+C: stop the job or detach (asked on a terminal).
    A stream that ends while the job still runs is reopened where it stopped (`REOPEN` times in a row)."""
    out = out or sys.stderr
    detached, printed = threading.Event(), printed if printed is not None else [0]
    try:
        _wait_started(client, job_id, address)
        for attempt in range(REOPEN + 1):
            broke = _stream(client, job_id, detached, printed)
            info = _wait_terminal(client, job_id, timeout=10.0)  # the stream ends with the job; its state lags
            if info.status.is_terminal():
                break
            time.sleep(min(2.0 ** attempt, 10.0))
        else:
            why = f" ({type(broke).__name__}: {_first_line(broke)})" if broke else ""
            raise UserError(f"lost the log stream of job {job_id} at {address}{why}; the job still runs there: "
                            f"follow again with mixsweep logs {job_id} --address {address}")
    except KeyboardInterrupt:
        detached.set()
        if stop_on_interrupt or _ask_stop():
            print(f"[mixsweep] stopping job {job_id}; its driver settles (trials keep their checkpoints)", file=out,
                  flush=True)
            client.stop_job(job_id)
            return follow(client, job_id, out=out, address=address, printed=printed)
        print(f"[mixsweep] detached; job {job_id} keeps running on the cluster (mixsweep logs {job_id} "
              f"--address {address})", file=out)
        return 0
    print(f"[mixsweep] job {job_id}: {info.status.value}{_message(info)}", file=out)
    return exit_code(info)


def _wait_started(client, job_id: str, address: str) -> None:
    """Until the job has left PENDING; UserError saying why after `PENDING_S` (MIXSWEEP_PENDING_S) seconds."""
    limit = float(os.environ.get("MIXSWEEP_PENDING_S") or PENDING_S)
    deadline = time.monotonic() + limit
    info = client.get_job_info(job_id)
    while info.status.value == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.5)
        info = client.get_job_info(job_id)
    if info.status.value == "PENDING":
        raise UserError(f"job {job_id} is still PENDING after {limit:.0f} s: its driver has not started"
                        f"{_message(info)}; the head may lack the resources it asks for, or be unable to set up its "
                        f"environment (the head's logs: /tmp/ray/session_latest/logs/job-driver-{job_id}.log and "
                        f"dashboard_agent.log). Still queued there: mixsweep stop {job_id} --address {address}")


def _first_line(value: object) -> str:
    return (str(value or "").strip().splitlines() or [""])[0][:300]


def _message(job) -> str:
    """The first line of a job's message, as " (...)", or nothing."""
    line = _first_line(job.message)
    return f" ({line})" if line else ""


def _wait_terminal(client, job_id: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    info = client.get_job_info(job_id)
    while not info.status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
        info = client.get_job_info(job_id)
    return info


def find_job(client, name: str):
    """A job by submission id, or sweep `name`'s live job, else its newest."""
    jobs = mixsweep_jobs(client)
    for job in jobs:
        if job.submission_id == name:
            return job
    of_sweep = [j for j in jobs if j.metadata.get(META_SWEEP) == name]
    if not of_sweep:
        known = ", ".join(sorted({j.metadata.get(META_SWEEP, '?') for j in jobs})) or "none"
        raise UserError(f"no mixsweep job or sweep named {name!r} on this cluster (sweeps with jobs: {known})")
    live = [j for j in of_sweep if not j.status.is_terminal()]  # the one running, not a newer refused one
    return (live or of_sweep)[-1]


@_server_errors
def logs(name: str, *, address: str, follow_logs: bool = True, out: TextIO | None = None) -> int:
    client = connect(address)
    job = find_job(client, name)
    if not follow_logs or job.status.is_terminal():
        sys.stdout.write(client.get_job_logs(job.submission_id))
        return exit_code(job) if job.status.is_terminal() else 0
    return follow(client, job.submission_id, out=out, address=address)


@_server_errors
def stop(name: str, *, address: str, wait: bool = True, out: TextIO | None = None) -> int:
    """Stop a job gracefully: its driver gets SIGTERM (trials keep their checkpoints, runs KILLED)."""
    out = out or sys.stderr
    client = connect(address)
    job = find_job(client, name)
    if job.status.is_terminal():
        print(f"[mixsweep] job {job.submission_id} already ended: {job.status.value}", file=out)
        return 0
    client.stop_job(job.submission_id)
    print(f"[mixsweep] stopping job {job.submission_id} (its driver settles, up to {STOP_WAIT_S} s)", file=out,
          flush=True)
    if wait:
        info = _wait_terminal(client, job.submission_id, timeout=STOP_WAIT_S + 10)
        if not info.status.is_terminal():
            print(f"[mixsweep] job {job.submission_id} is still {info.status.value} after {STOP_WAIT_S + 10} s; see "
                  f"mixsweep logs {job.submission_id} --address {address}", file=out)
            return 1
        print(f"[mixsweep] job {job.submission_id}: {info.status.value}; continue it with: mixsweep submit --resume "
              f"{job.metadata.get(META_SWEEP)} --address {address}", file=out)
    return 0


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _duration(job) -> str:
    if not job.start_time:
        return "-"
    end = job.end_time or time.time() * 1000
    seconds = int((end - job.start_time) / 1000)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@_server_errors
def list_jobs(*, address: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    client = connect(address)
    jobs = mixsweep_jobs(client)
    print(f"{'job':44s} {'sweep':20s} {'status':10s} {'started':19s} {'duration':>9s}", file=out)
    for job in jobs:
        print(f"{job.submission_id[:44]:44s} {job.metadata.get(META_SWEEP, '?')[:20]:20s} {job.status.value:10s} "
              f"{_when(job.start_time):19s} {_duration(job):>9s}", file=out)
    if not jobs:
        print("(no mixsweep jobs on this cluster)", file=out)
    return 0


def job_line(name: str, address: str, *, required: bool = True) -> str:
    """`status NAME --address`: one line on the sweep's live or newest job (or why there is none: a UserError when
    `required`, i.e. when the storage has no such sweep either)."""
    try:
        client = connect(address)
        job = find_job(client, name)
    except UserError as exc:
        if required:
            raise
        return f"job: {exc}"
    line = (f"job {job.submission_id}: {job.status.value}, started {_when(job.start_time)}, {_duration(job)}"
            f"{_message(job) if job.status.is_terminal() else ''}")
    if job.status.value in ("STOPPED", "FAILED"):
        line += f"; to continue: mixsweep submit --resume {job.metadata.get(META_SWEEP)} --address {address}"
    return line


# -- on the head: the driver records its job ------------------------------------------------------
def resume_hint(name: str, storage) -> str | None:
    """Inside a job: how to continue the sweep from where it was submitted (None outside a job)."""
    address = os.environ.get(ENV_ADDRESS) if os.environ.get(ENV_JOB_ID) else None
    if not address:
        return None
    return (f"mixsweep submit --resume {name} --address {address} (on the head: mixsweep resume {name} "
            f"--storage {storage})")


def record_job(mlflow_client, sweep_run_id: str, paths) -> None:
    """Inside a job: its id as a tag of the sweep run and in `<sweep>/jobs.json` (no-op outside a job)."""
    job_id = os.environ.get(ENV_JOB_ID)
    if not job_id:
        return
    from trainables.files import atomic_write_text

    mlflow_client.set_tag(sweep_run_id, TAG_JOB_ID, job_id)
    file = paths.root / JOBS_FILE
    try:
        jobs = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        jobs = []
    if not any(j.get("job_id") == job_id for j in jobs):
        jobs.append({"job_id": job_id, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "command": os.environ.get(ENV_COMMAND, ""), "address": os.environ.get(ENV_ADDRESS, "")})
        atomic_write_text(file, json.dumps(jobs, indent=1) + "\n")


def last_job(paths) -> tuple[str, str] | None:
    """(id, job server address as submitted to) of the newest job in `<sweep>/jobs.json`; None when the sweep
    never ran as a job."""
    try:
        jobs = json.loads((paths.root / JOBS_FILE).read_text())
        return (str(jobs[-1]["job_id"]), str(jobs[-1].get("address") or "http://HEAD:8265")) if jobs else None
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None

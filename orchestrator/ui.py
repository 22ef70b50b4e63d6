"""`mixsweep ui NAME`: the MLflow UI on a sweep's store, and the links to the sweep's saved views.

The views are (re)written first (`mlflow_views.publish`: a sweep run before this feature existed gets
them too), then a UI already serving the store on `--host:--port` is reused (recognised by the sweep's own
run in it: another storage's sweep of the same name is refused), or `mlflow ui` is started there; the
links (table and charts of each view) are printed once it answers. `--open` also opens the first link in
a browser where one exists. A sweep tracked on a remote server prints links to that
server and starts nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from . import tracking
from .errors import UserError
from .mlflow_views import publish
from .spec import load_spec
from .storage import SweepState, sweep_paths
from .views import VIEW_TAG_PREFIX, View, ui_base, view_url, views_for_spec


def _get_json(url: str, timeout: float = 3.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback UI
            return json.loads(resp.read().decode() or "{}")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def answers(base: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serves_sweep(base: str, experiment_id: str, sweep_run_id: str, views: Sequence[View]) -> bool:
    """Whether the UI at `base` serves the store of this sweep (then it is ours to reuse): its sweep run (a
    random id, unique to one store) in its experiment, and the views. Another storage's sweep of the same name
    has views of the same names, and often the same experiment id, but not this run."""
    def get(what: str, **query: str) -> dict:
        q = urllib.parse.urlencode(query)
        return _get_json(f"{base}/ajax-api/2.0/mlflow/{what}?{q}") or _get_json(f"{base}/api/2.0/mlflow/{what}?{q}") \
            or {}

    run = (get("runs/get", run_id=sweep_run_id).get("run") or {}).get("info") or {}
    if run.get("experiment_id") != experiment_id:
        return False
    tags = {t.get("key") for t in (get("experiments/get", experiment_id=experiment_id).get("experiment") or {})
            .get("tags", [])}
    return bool(views) and all(VIEW_TAG_PREFIX + v.id in tags for v in views)


def print_links(base: str, experiment_id: str, views: Sequence[View], out: TextIO) -> None:
    for view in views:
        print(f"{view.name}", file=out)
        print(f"  table:  {view_url(base, experiment_id, view.id)}", file=out)
        print(f"  charts: {view_url(base, experiment_id, view.id, charts=True)}", file=out)


def wait_until_up(base: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI exited with code {proc.returncode} before answering on {base} "
                            "(is the port taken? pass --port)")
        if answers(base):
            return
        time.sleep(0.5)
    raise UserError(f"the MLflow UI did not answer on {base} within {timeout:.0f} s")


def serve_sweep(name: str, *, storage: Path, host: str = "127.0.0.1", port: int = 5000, open_browser: bool = False,
                out: TextIO | None = None) -> int:
    """Write the sweep's views, reuse or start the UI on host:port, print the links; wait for Ctrl+C when
    started here (exit 0), return at once when reused or remote."""
    out = out or sys.stdout
    paths = sweep_paths(storage, name)
    state = SweepState.load(paths)
    spec = load_spec(paths.spec)
    uri = state.tracking_uri
    tracking.check_tracking_uri(uri)
    try:
        client = tracking.client(uri)
        tracking.check_sweep_store(client, state, spec.experiment, storage)
        views = publish(client, state.experiment_id, spec, state.sweep_run_id)
    except tracking.store_errors() as exc:  # a store that answers but fails
        raise UserError(f"MLflow at {uri} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - a link, not a bind
    base = ui_base(uri, default=f"http://{local}:{port}")
    if tracking.is_server(uri):
        print(f"sweep {name} tracks to the server {base}; its views:", file=out)
    elif answers(base):
        if not serves_sweep(base, state.experiment_id, state.sweep_run_id, views):
            raise UserError(f"{base} serves another MLflow store; pass another --port, or stop that UI (it is not "
                            f"{uri}: it does not hold sweep {name}'s run {state.sweep_run_id})")
        print(f"the MLflow UI on {base} already serves this store; views of sweep {name}:", file=out)
    else:
        return _serve_here(name, uri, host, port, base, state.experiment_id, views, open_browser, out)
    _show(base, state.experiment_id, views, open_browser, out)
    return 0


def _show(base: str, experiment_id: str, views: Sequence[View], open_browser: bool, out: TextIO) -> None:
    print_links(base, experiment_id, views, out)
    out.flush()
    if open_browser and views and not webbrowser.open(view_url(base, experiment_id, views[0].id)):
        print("no browser found here: open the links above", file=out)


def _serve_here(name: str, uri: str, host: str, port: int, base: str, experiment_id: str, views: Sequence[View],
                open_browser: bool, out: TextIO) -> int:
    """Start the UI on `uri` and serve until Ctrl+C or SIGTERM, which stop it with its workers (exit 0)."""
    # one worker: a UI for one person; MLflow's default four import the server each, which takes minutes on a
    # busy two-core login node
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    # SIGTERM is caught before the UI starts: the UI runs in its own process group (its workers stop with
    # it), so a SIGTERM that killed this process during start-up would leave it behind
    previous = signal.signal(signal.SIGTERM, _interrupt)
    proc = None
    try:
        # its chatter on stderr, the links alone on stdout
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=2)
        wait_until_up(base, proc)
        print(f"MLflow UI on {base} (store {uri}); views of sweep {name}:", file=out)
        _show(base, experiment_id, views, open_browser, out)
        print("Ctrl+C stops the UI", file=sys.stderr)
        proc.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc is not None:
            _stop(proc)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen) -> None:
    """Stop the UI started here and its workers (its process group, led by `proc`)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def print_sweep_links(name: str, *, storage: Path, out: TextIO | None = None) -> None:
    """The links to the views a sweep has in MLflow (after run / report); nothing when it has none."""
    out = out or sys.stderr
    try:
        paths = sweep_paths(storage, name)
        state = SweepState.load(paths)
        spec = load_spec(paths.spec)
        views = views_for_spec(spec)
        client = tracking.client(state.tracking_uri)
        tracking.check_sweep_store(client, state, spec.experiment, storage)
        tags = client.get_experiment(state.experiment_id).tags
    except (UserError, *tracking.store_errors()) as exc:  # the links are extras: the command's result stands
        print(f"[mixsweep] warning: no MLflow view links: {type(exc).__name__}: {str(exc)[:200]}", file=out)
        return
    views = [v for v in views if VIEW_TAG_PREFIX + v.id in tags]
    if not views:
        return
    where = "" if tracking.is_server(state.tracking_uri) else f" (serve them: mixsweep ui {name} --storage {storage})"
    print(f"[mixsweep] MLflow views of {name}{where}:", file=out)
    print_links(ui_base(state.tracking_uri), state.experiment_id, views, out)

"""Small reliability fixes (issue 8): a shared new MLflow store, stale error tags, file modes, leftover agents.

Real processes, real files and a real sqlite store throughout; no mocks.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from .reliability_helpers import ENV

# -- 1. several drivers opening one brand-new sqlite store at once ---------------------------------------------------

#: what a driver does first with MLflow (`sweep._tracking`): open the store, get-or-create the experiment
DRIVER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path

    import alembic.command, mlflow.store.tracking.sqlalchemy_store  # imported before the barrier: race the store
    from orchestrator import tracking

    storage, name = Path(sys.argv[1]), sys.argv[2]
    (storage / f"{name}.ready").touch()
    while not (storage / "go").exists():
        time.sleep(0.001)
    client = tracking.client(f"sqlite:///{storage / 'mlflow.db'}")
    print("experiment", tracking.ensure_experiment(client, "mixsweep", storage / "mlartifacts"))
    """)


@pytest.mark.slow
def test_drivers_create_a_new_shared_store_together(tmp_path):
    """Four sweeps started at once on a fresh `<storage>/mlflow.db`: all start, the schema and experiment exist once.

    Creating the schema takes seconds, and a barrier starts the drivers within milliseconds of each other:
    without the store's lock they create tables at once ("table experiments already exists", "duplicate
    column name")."""
    names = [f"s{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), name], env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for name in names]
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"{n}.ready").exists() for n in names):
            assert time.time() < deadline and all(p.poll() is None for p in procs), "a driver did not start"
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        (exp_id,) = db.execute("select experiment_id from experiments where name = 'mixsweep'").fetchone()
        assert len(db.execute("select version_num from alembic_version").fetchall()) == 1
    assert [output.splitlines()[-1] for output in outputs] == [f"experiment {exp_id}"] * len(names)


# -- 2. a trial stopped (KILLED with a reason), resumed and finished ---------------------------------------------------


def test_finished_run_loses_the_error_tag_of_an_earlier_stop(tmp_path):
    from orchestrator import tracking
    from trainables.meta import TrialMeta
    from trainables.tracking import TAG_ERROR, TrialTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    exp = tracking.ensure_experiment(client, "mixsweep", tmp_path / "mlartifacts")
    meta = TrialMeta(sweep="s", run_hash="abc123", config_hash="c1", tracking_uri=uri, experiment_id=exp,
                     run_name="t")
    first = TrialTracker(meta, {"epochs": 2})
    first.log_epoch(1, {"test/top1_err": 60.0})
    reason = "sweep stopped; resume with: mixsweep resume s"  # what the driver's settle does after a stop
    assert tracking.mark_unfinished(client, tracking.trial_runs(client, exp, "s"), "KILLED", reason) == 1
    assert client.get_run(first.run_id).data.tags[TAG_ERROR] == reason

    resumed = TrialTracker(meta, {"epochs": 2})  # the resumed trial reopens its run and finishes
    assert (resumed.run_id, resumed.last_step) == (first.run_id, 1)
    resumed.log_epoch(2, {"test/top1_err": 40.0})
    resumed.finish("FINISHED")
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and TAG_ERROR not in run.data.tags, run.data.tags
    assert resumed.error is None

    again = TrialTracker(meta, {"epochs": 2})  # finishing a run without the tag (sync runs twice) is fine
    again.finish("FINISHED")
    assert again.error is None and client.get_run(first.run_id).info.status == "FINISHED"


def test_log_params_batches_and_cuts_long_values(tmp_path):
    """The one param logger (trial runs and the sweep run): more params than MLflow takes in one call, a long value."""
    from orchestrator import tracking
    from trainables.tracking import MAX_PARAM_CHARS, MAX_PARAMS_PER_BATCH, log_params

    client = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = tracking.ensure_experiment(client, "mixsweep", tmp_path / "mlartifacts")
    run_id = client.create_run(exp).info.run_id
    params = {f"p{i:03d}": i for i in range(2 * MAX_PARAMS_PER_BATCH + 5)} | {"long": "x" * (MAX_PARAM_CHARS + 50)}
    log_params(client, run_id, params)
    logged = client.get_run(run_id).data.params
    cut = "x" * (MAX_PARAM_CHARS - 3) + "..."
    assert logged == {k: str(v) for k, v in params.items() if k != "long"} | {"long": cut}


def test_http_defaults_are_set_by_entry_points_only(tmp_path, monkeypatch):
    """Opening a client leaves the environment alone; `apply_http_defaults` keeps what the user set; a job on
    an existing cluster carries the settings to workers that do not inherit the driver's environment."""
    from orchestrator.launch import _worker_env
    from trainables.tracking import HTTP_DEFAULTS, apply_http_defaults, mlflow_client

    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not any(key in os.environ for key in HTTP_DEFAULTS)
    assert _worker_env() == {"env_vars": HTTP_DEFAULTS}
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    apply_http_defaults()
    assert {key: os.environ[key] for key in HTTP_DEFAULTS} == {**HTTP_DEFAULTS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    assert _worker_env()["env_vars"]["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"
    # inside a Ray job (submit, KubeRay): what the job's runtime_env sets stays the job's (Ray refuses a repeat)
    job_sets = sorted(HTTP_DEFAULTS)[0]
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {job_sets: "9"}}}))
    assert set(_worker_env()["env_vars"]) == set(HTTP_DEFAULTS) - {job_sets}


# -- 4. atomic writes honour the umask ------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    from trainables.files import atomic_write_text

    target = tmp_path / "sweep.json"
    old = os.umask(umask)  # pytest runs tests in one thread: nothing else creates files meanwhile
    try:
        atomic_write_text(target, "{}\n")
        atomic_write_text(target, "{}\n")  # replacing a file gets the same mode
    finally:
        os.umask(old)
    assert oct(stat.S_IMODE(target.stat().st_mode)) == oct(mode)


# -- 5. leftover Ray processes that ignore SIGTERM ------------------------------------------------------------------

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(60)"
POLITE = "import time; print('ready', flush=True); time.sleep(60)"


@pytest.mark.slow
def test_cleanup_says_it_waits_for_leftovers_and_how_many_it_killed(tmp_path):
    """A dead driver's record names two leftover processes; one ignores SIGTERM and costs the full wait."""
    import psutil

    from orchestrator.storage import sweep_paths
    from orchestrator.sweep import _cleanup_leftovers

    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for code in (STUBBORN, POLITE)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        driver = subprocess.Popen([sys.executable, "-c", "pass"])
        driver.wait()
        paths = sweep_paths(tmp_path, "s")
        paths.root.mkdir()
        paths.driver.write_text(json.dumps({
            "pid": driver.pid, "created": 0.0, "started": "earlier", "address": "",
            "children": [{"pid": p.pid, "created": psutil.Process(p.pid).create_time()} for p in procs]}))
        out = io.StringIO()
        started = time.monotonic()
        _cleanup_leftovers(paths, out)
        waited = time.monotonic() - started
        alive = [p.pid for p in procs if psutil.pid_exists(p.pid)]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lines = out.getvalue().splitlines()
    assert any("found 2 leftover process(es)" in line and "waiting up to 10 s for them to exit"
               in line for line in lines), lines
    assert lines[-1] == "[mixsweep] 1 of them ignored SIGTERM and had to be killed (SIGKILL)", lines
    assert alive == [] and not paths.driver.exists()
    assert 9 < waited < 20  # the polite one exits at once; the stubborn one gets its 10 s


# -- 6. Ctrl+C after Ctrl+C: the stop signals' sequence ------------------------------------------------------------


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_stop_signals_graceful_then_now_then_acknowledged(sig):
    """During a Tune run (its SIGUSR1 handler installed): the first signal is handed to Tune, the second raises
    StopNow, any later one (and every one once the clean-up holds) is only acknowledged. Real signals, this process."""
    import signal as signals

    from orchestrator.launch import StopNow, StopSignals

    signum, out, heard = getattr(signals, sig), io.StringIO(), []
    with StopSignals(out) as stop:
        previous = signals.signal(signals.SIGUSR1, lambda *args: heard.append(args[0]))  # Tune's handler
        try:
            os.kill(os.getpid(), signum)
            assert heard == [signum] and f"{sig}: stopping; running trials keep their last checkpoint" in out.getvalue()
            with pytest.raises(StopNow):
                os.kill(os.getpid(), signum)
            assert out.getvalue().endswith(f"{sig}: stopping now\n")
            os.kill(os.getpid(), signum)  # during the clean-up that StopNow starts: no exception
            assert out.getvalue().endswith("(kill -9 would leave them open)\n") and heard == [signum]
        finally:
            signals.signal(signals.SIGUSR1, previous)
    assert signals.getsignal(signum) is not stop._on_signal  # the handlers are given back


def test_stop_signals_outside_a_tune_run_stop_at_once():
    """No Tune run under way (before fit, or after it returned and the clean-up holds)."""
    import signal as signals

    from orchestrator.launch import StopNow, StopSignals

    out = io.StringIO()
    with StopSignals(out), pytest.raises(StopNow):
        os.kill(os.getpid(), signals.SIGINT)
    with StopSignals(out) as stop:
        stop.hold()  # fit returned: Ray's shutdown and the MLflow settle run to their end
        os.kill(os.getpid(), signals.SIGINT)
    assert out.getvalue().splitlines()[-1].startswith("[mixsweep] already stopping")

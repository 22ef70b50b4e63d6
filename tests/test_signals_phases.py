"""Signals in every phase of a sweep, and a tracking server that never answers (issue 19, items 2 and 7).

Real processes throughout: `mixsweep` CLI subprocesses, a real local Ray, a real `mlflow server`, a real socket
that accepts and never answers. No mocks.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import threading
import time

import pytest

from .reliability_helpers import epochs_logged, run, start, wait_for, write_spec
from .test_reliability import mlflow_server, sqlite_uri  # noqa: F401 - a fixture, shared


def test_books_acknowledge_a_signal_then_keep_their_deadline():
    """The bookkeeping after a launch: a first signal is acknowledged (no interruption), a second one ("stop now")
    leaves it at most STOP_NOW_S, and the deadline interrupts even a blocking call. Real signals, this process."""
    import io

    from orchestrator.launch import STOP_NOW_S, OutOfTime, StopSignals

    out, alarm = io.StringIO(), signal.getsignal(signal.SIGALRM)
    with StopSignals(out) as stop:
        began = time.monotonic()
        with pytest.raises(OutOfTime), stop.books(seconds=0.5):
            os.kill(os.getpid(), signal.SIGTERM)
            assert "SIGTERM: the trials have ended; finishing up" in out.getvalue()
            time.sleep(30)  # a call that never returns (a hung server's socket read): the deadline ends it
        assert 0.5 <= time.monotonic() - began < 5
        os.kill(os.getpid(), signal.SIGINT)  # after the deadline: acknowledged only
        assert out.getvalue().splitlines()[-1].startswith("[mixsweep] already stopping")
        with pytest.raises(OutOfTime), stop.books(seconds=600):  # a stop-now was asked for: STOP_NOW_S at most
            assert stop.deadline - time.monotonic() <= STOP_NOW_S
            stop.deadline = time.monotonic() + 0.2  # (not to wait STOP_NOW_S here)
            stop._alarm()
            time.sleep(30)
    assert signal.getsignal(signal.SIGALRM) is alarm  # given back


def settled(log, name: str):
    """The driver's summary after the launch: Ray is shut down, MLflow settled; the report comes next."""
    return lambda: re.search(rf"\[mixsweep\] sweep {name}: \d+ finished, ", log.read_text())


def sweep_run(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mixsweep")
    return client.search_runs([exp.experiment_id], f"tags.`mixsweep.sweep` = '{name}' and "
                              "tags.`mixsweep.role` = 'sweep'")[0]


def kill_session(proc) -> None:
    """The driver and whatever it started (its own process session), whatever state the test left them in."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_sigterm_after_ray_shut_down_finishes_the_books(tmp_path):
    """SIGTERM once every trial ended (Ray already shut down, the report being written): acknowledged, the report
    is written, the sweep run is FINISHED, exit 0. Ray's shutdown had reset SIGTERM to SIG_DFL: killed, rc -15."""
    spec = write_spec(tmp_path / "s.yaml", "term", epochs=1, train_size=256, factors="mix.preset: [none]", seeds=1)
    storage, log = tmp_path / "runs", tmp_path / "run.log"
    proc = start("run", str(spec), "--storage", str(storage), log=log)
    try:
        wait_for(settled(log, "term"), timeout=300, what="the settle's summary", proc=proc, poll=0.02)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        kill_session(proc)
    out = log.read_text()
    assert rc == 0, out[-4000:]
    assert "SIGTERM: the trials have ended; finishing up: writing the report" in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert (storage / "term" / "report" / "report.md").exists() and "[mixsweep] report: " in out, out[-4000:]
    assert sweep_run(sqlite_uri(storage), "term").info.status == "FINISHED"


@pytest.mark.slow
def test_resume_writes_the_report_a_killed_driver_never_wrote(tmp_path):
    """The driver is killed (SIGKILL) while it writes the report: `resume` has nothing to run, and writes it."""
    spec = write_spec(tmp_path / "s.yaml", "unreported", epochs=1, train_size=256, factors="mix.preset: [none]",
                      seeds=1)
    storage, log = tmp_path / "runs", tmp_path / "run.log"
    proc = start("run", str(spec), "--storage", str(storage), log=log)
    try:
        wait_for(settled(log, "unreported"), timeout=300, what="the settle's summary", proc=proc, poll=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        kill_session(proc)
    report = storage / "unreported" / "report" / "report.md"
    assert not report.exists(), "the report was written before the kill: the attack missed its moment"
    resumed = run("resume", "unreported", "--storage", str(storage), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "nothing to run" in resumed.stderr and "the report is missing" in resumed.stderr, resumed.stderr[-4000:]
    assert report.exists() and "[mixsweep] report: " in resumed.stderr, resumed.stderr[-4000:]
    again = run("resume", "unreported", "--storage", str(storage), timeout=300)  # up to date: not written again
    assert again.returncode == 0 and "the report is missing" not in again.stderr, again.stderr[-4000:]


class HealthOnly(http.server.BaseHTTPRequestHandler):
    """Answers /health, then hangs on every other request (an MLflow server whose database hangs)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/health":
            self.server.hang.wait()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=["silent", "health-only"])
def hung_server(request):
    """A tracking server that accepts connections and never answers (silent: not a byte, not even /health)."""
    release = threading.Event()
    if request.param == "silent":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes the connections; nothing ever reads or writes them
        yield request.param, f"http://127.0.0.1:{sock.getsockname()[1]}"
        sock.close()
        return
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthOnly)
    server.daemon_threads, server.hang = True, release
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield request.param, f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_tracking_server_that_never_answers_is_refused_before_anything_runs(tmp_path, hung_server):
    kind, uri = hung_server
    spec = write_spec(tmp_path / "s.yaml", "silent", epochs=1, train_size=256, factors="mix.preset: [none]", seeds=1)
    storage = tmp_path / "runs"
    began = time.monotonic()
    result = run("run", str(spec), "--storage", str(storage), "--tracking-uri", uri, timeout=120)
    took = time.monotonic() - began
    assert result.returncode == 2, result.stderr[-4000:]
    asked = "/health" if kind == "silent" else "/api/2.0/mlflow/experiments/get-by-name"
    assert f"the MLflow tracking server at {uri} accepts connections but did not answer {asked} within" \
        in result.stderr, result.stderr[-4000:]
    assert "Traceback" not in result.stderr and not storage.exists()
    assert took < 30, took  # the CLI's start-up and one short timeout per request, not MLflow's retries


@pytest.mark.slow
def test_ctrl_c_twice_with_a_hung_tracking_server_stops_in_bounded_time(tmp_path, mlflow_server):  # noqa: F811
    """The server answers, then hangs (SIGSTOP) mid-sweep: Ctrl+C twice still stops the driver within 30 s, exit
    130, with the hint to resume (it used to spend minutes in MLflow timeouts, deaf to Ctrl+C)."""
    spec = write_spec(tmp_path / "s.yaml", "hung", epochs=3, train_size=1024, factors="mix.preset: [none]", seeds=1)
    storage, log = tmp_path / "runs", tmp_path / "run.log"
    server = mlflow_server["proc"]
    proc = start("run", str(spec), "--storage", str(storage), "--tracking-uri", mlflow_server["uri"], log=log)
    try:
        wait_for(lambda: epochs_logged(storage, "hung") >= 1, timeout=300, what="an epoch", proc=proc)
        os.killpg(server.pid, signal.SIGSTOP)  # the server and its workers: connections accepted, never answered
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "SIGINT: stopping;" in log.read_text(), timeout=60, what="the first Ctrl+C's answer",
                 proc=proc, poll=0.02)
        proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        rc = proc.wait(timeout=90)
        took = time.monotonic() - began
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        kill_session(proc)
    out = log.read_text()
    assert rc == 130, out[-4000:]
    assert took < 30, (took, out[-4000:])
    assert f"mixsweep resume hung --storage {storage}" in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]

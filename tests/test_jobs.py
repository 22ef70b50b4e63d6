"""`mixsweep submit / jobs / logs / stop / status --address` against a real `ray start --head` (no mocks).

One head for the module, with its own token file (RAY_AUTH_TOKEN_PATH) and its own temp folder; every
process it started is found by that folder and stopped by PID at the end (never `ray stop`, which would
stop other Ray instances on the machine). Needs the `[cluster]` extra (ray[default]): `make test` has it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .reliability_helpers import write_spec

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct ports nothing listens on now (all bound at once, then released): another Ray on this machine (a
    default one holds 6379, 8265, 52365, ...) or a head left by a cancelled run cannot collide with this head."""
    socks = [socket.socket() for _ in names]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in zip(names, socks)}
    finally:
        for sock in socks:
            sock.close()


#: every port the head opens, by its `ray start` option, and one that nothing listens on ("unreachable")
PORTS = _free_ports(("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
                     "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port", "node-manager-port",
                     "object-manager-port", "closed"))
CLOSED_PORT = PORTS.pop("closed")
ADDRESS = f"http://127.0.0.1:{PORTS['dashboard-port']}"

pytestmark = pytest.mark.slow


def _head_processes(temp_dir: str) -> list:
    """Every process of the head: those naming its temp folder or its GCS port (the Ray Client server names
    only that), and their descendants."""
    import psutil

    gcs = f":{PORTS['port']}"
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(temp_dir in part or part.endswith(gcs) for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except psutil.Error:
            continue
    return list(found.values())


def _running(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def head():
    """(env for the CLI, temp folder): a one-node cluster with a job server and token auth."""
    pytest.importorskip("ray.dashboard", reason="the head needs the [cluster] extra (ray[default])")
    import psutil

    temp_dir = tempfile.mkdtemp(prefix="mxh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = Path(temp_dir) / "token"
    token.write_text(secrets.token_hex(32))
    # `python` on the head's PATH lacks the project's dependencies (a job without --python falls back to the
    # interpreter of the head's Ray); MLflow credentials are never the head's here
    fake = Path(temp_dir) / "bin"
    fake.mkdir()
    (fake / "python").write_text("#!/bin/sh\necho 'this python has no packages' >&2\nexit 1\n")
    (fake / "python").chmod(0o755)
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN"):
        env.pop(key, None)
    ray = str(Path(sys.executable).parent / "ray")
    cmd = [ray, "start", "--head", "--num-cpus=2", "--dashboard-host=127.0.0.1", "--min-worker-port=20002",
           "--max-worker-port=20999", "--disable-usage-stats", f"--temp-dir={temp_dir}",
           *(f"--{option}={port}" for option, port in PORTS.items())]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield env, temp_dir
    finally:
        procs = _head_processes(temp_dir)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        # a process whose parent is gone stays a zombie where nothing reaps orphans (pid 1 of a container):
        # exited all the same, so it is not waited for
        deadline = time.monotonic() + 5  # the GCS and the autoscaler monitor ignore SIGTERM: SIGKILL follows
        while any(_running(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [p for p in procs if _running(p)]
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _failed_tests_leave_no_job_running(request):
    """A test that failed before its job ended: stop the job, so that it does not hold the head's two CPUs
    while the next tests wait for theirs."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed or "head" not in request.fixturenames:
        return
    env = request.getfixturevalue("head")[0]
    for line in mixsweep(env, "jobs", "--address", ADDRESS).stdout.splitlines():
        if line.startswith("mixsweep-") and line.split()[2] in ("PENDING", "RUNNING"):
            mixsweep(env, "stop", line.split()[0], "--address", ADDRESS)


def mixsweep(env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _spec(tmp_path: Path, name: str, epochs: int = 2, train: int = 128, factors: str = "mix.preset: [none, cutmix]"
          ) -> Path:
    return write_spec(tmp_path / f"{name}.yaml", name, epochs=epochs, train_size=train, factors=factors, seeds=1)


def _runs(storage: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mixsweep")
    return client.search_runs([exp.experiment_id])


def _job_count(env: dict) -> int:
    out = mixsweep(env, "jobs", "--address", ADDRESS)
    assert out.returncode == 0, out.stderr
    return sum(line.startswith("mixsweep-") for line in out.stdout.splitlines())


def test_submit_follows_to_the_end(head, tmp_path):
    env, _ = head
    storage = tmp_path / "runs"
    # no --python: `python` on the head's PATH has no packages, the head's Ray's interpreter has them
    done = mixsweep(env, "submit", str(_spec(tmp_path, "jobe2e")), "--address", ADDRESS, "--storage", str(storage))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "python on the head's PATH cannot import ray, mlflow and torch; using the head's Ray's: " \
        f"{sys.executable}" in done.stdout, done.stdout[-3000:]
    assert f"mixsweep: the driver runs with {sys.executable}" in done.stdout
    assert "SUCCEEDED" in done.stderr and "mixsweep-jobe2e-" in done.stderr
    assert " INFO " not in done.stderr, done.stderr  # Ray's SDK chatter (uploads, websockets): not on our stderr
    runs = _runs(storage)
    sweep = [r for r in runs if r.data.tags.get("mixsweep.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(sweep) == 1 and len(trials) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {sweep[0].info.run_id}
    job_id = sweep[0].data.tags["mixsweep.job_id"]
    assert job_id.startswith("mixsweep-jobe2e-") and job_id in (storage / "jobe2e" / "jobs.json").read_text()
    listed = mixsweep(env, "jobs", "--address", ADDRESS)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    status = mixsweep(env, "status", "jobe2e", "--storage", str(storage))  # the storage alone names the job
    assert f"last Ray job: {job_id} (its state: mixsweep status jobe2e --address {ADDRESS})" in status.stdout


def test_bad_spec_is_never_submitted(head, tmp_path):
    env, _ = head
    before = _job_count(env)
    bad = _spec(tmp_path, "jobbad", factors="mix.preset: [none, cutmx]")
    out = mixsweep(env, "submit", str(bad), "--address", ADDRESS, "--storage", str(tmp_path / "runs"))
    assert out.returncode == 2 and "cutmx" in out.stderr and "Traceback" not in out.stderr
    assert _job_count(env) == before


@pytest.mark.parametrize("token", ["wrong", None])
def test_a_wrong_or_missing_token_is_a_clear_error(head, tmp_path, token):
    env, _ = head
    env = {**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}
    if token:
        env["RAY_AUTH_TOKEN"] = token
    out = mixsweep(env, "submit", str(_spec(tmp_path, "jobtok")), "--address", ADDRESS, "--storage",
                   str(tmp_path / "runs"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("rejected the token" if token else "none was found") in out.stderr


def test_a_head_interpreter_without_the_project_is_named(head, tmp_path):
    """--python names no usable interpreter on the head (missing, or without ray/mlflow/torch): the job says so,
    quoting it (the head's shell never runs a `$(...)` in it)."""
    env, _ = head
    python = f"{tmp_path}/no/python$(touch {tmp_path}/PWNED)`touch {tmp_path}/PWNED2`"
    done = mixsweep(env, "submit", str(_spec(tmp_path, "jobpy")), "--address", ADDRESS, "--storage",
                    str(tmp_path / "runs"), "--python", python)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{python} on the head cannot import ray, mlflow and torch" in done.stdout, done.stdout[-3000:]
    assert "FAILED" in done.stderr and not (tmp_path / "runs" / "jobpy").exists()
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()


def test_relative_storage_and_unreachable_head_are_errors(head, tmp_path):
    env, _ = head
    spec = str(_spec(tmp_path, "jobpaths"))
    out = mixsweep(env, "submit", spec, "--address", ADDRESS, "--storage", "runs")
    assert out.returncode == 2 and "absolute" in out.stderr
    out = mixsweep(env, "submit", spec, "--address", f"http://127.0.0.1:{CLOSED_PORT}", "--storage", str(tmp_path))
    assert out.returncode == 2 and "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_detach_stop_and_resume(head, tmp_path):
    env, _ = head
    storage = tmp_path / "runs"
    spec = _spec(tmp_path, "jobstop", epochs=40, train=512)
    python = tmp_path / "headpy"  # --python, remembered by --resume (the head's Ray's interpreter is another path)
    python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    out = mixsweep(env, "submit", str(spec), "--address", ADDRESS, "--storage", str(storage), "--python",
                   str(python), "--no-wait")
    assert out.returncode == 0, out.stderr[-3000:]
    deadline = time.monotonic() + 180  # until a trial has checkpointed an epoch
    while time.monotonic() < deadline and not list((storage / "jobstop" / "ray").glob("launch-*/*/checkpoint_*")):
        time.sleep(1)
    status = mixsweep(env, "status", "jobstop", "--address", ADDRESS, "--storage", str(storage))
    assert status.returncode == 0 and "RUNNING" in status.stdout, status.stdout + status.stderr
    stopped = mixsweep(env, "stop", "jobstop", "--address", ADDRESS)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stderr, stopped.stderr
    runs = _runs(storage)
    assert {r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId")} == {"KILLED"}
    logs = mixsweep(env, "logs", "jobstop", "--address", ADDRESS, "--no-follow")
    assert logs.returncode == 130 and "SIGTERM: stopping" in logs.stdout
    # the stopped driver's own hint is the way back from where it was submitted, not a command for the head
    assert f"mixsweep submit --resume jobstop --address {ADDRESS}" in logs.stdout, logs.stdout[-3000:]
    resumed = mixsweep(env, "submit", "--resume", "jobstop", "--address", ADDRESS)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "SUCCEEDED" in resumed.stderr
    assert f"mixsweep: the driver runs with {python}\n" in resumed.stdout, resumed.stdout[:2000]
    runs = _runs(storage)
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(trials) == 2 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_killed_driver_is_resumed_by_submit_resume(head, tmp_path):
    """The driver SIGKILLed on the head: the job FAILED, trials keep their checkpoints, `submit --resume` ends it."""
    import psutil

    env, _ = head
    storage = tmp_path / "runs"
    out = mixsweep(env, "submit", str(_spec(tmp_path, "jobkill", epochs=30, train=512)), "--address", ADDRESS,
                   "--storage", str(storage), "--python", sys.executable, "--no-wait")
    assert out.returncode == 0, out.stderr[-3000:]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list((storage / "jobkill" / "ray").glob("launch-*/*/checkpoint_*")):
        time.sleep(1)
    drivers = [p for p in psutil.process_iter(["cmdline"]) if "orchestrator.job_driver" in " ".join(
        p.info["cmdline"] or []) and str(storage) in (p.environ().get("MIXSWEEP_STORAGE", ""))]
    assert len(drivers) == 1
    drivers[0].kill()
    deadline = time.monotonic() + 60  # until Ray's job supervisor noticed (this job's line, not an earlier test's)
    while time.monotonic() < deadline and not any(
            line.startswith("mixsweep-jobkill-") and "FAILED" in line
            for line in mixsweep(env, "jobs", "--address", ADDRESS).stdout.splitlines()):
        time.sleep(1)
    status = mixsweep(env, "status", "jobkill", "--address", ADDRESS, "--storage", str(storage))
    assert "FAILED" in status.stdout and "submit --resume jobkill" in status.stdout, status.stdout
    resumed = mixsweep(env, "submit", "--resume", "jobkill", "--address", ADDRESS, "--python", sys.executable)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "the previous driver" in resumed.stdout and "is gone" in resumed.stdout
    runs = _runs(storage)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}


class Terminal:
    """`mixsweep ARGS` on a pseudo-terminal (stdin and stderr are ttys: Ctrl+C asks what to do)."""

    def __init__(self, env: dict, *args: str) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.text = ""

    def wait_for(self, text: str, timeout: float) -> bool:
        import select

        deadline = time.monotonic() + timeout
        while text not in self.text and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the process ended
                    break
        return text in self.text

    def interrupt_and_answer(self, answer: str) -> None:
        import signal

        self.proc.send_signal(signal.SIGINT)
        assert self.wait_for("stop the job on the cluster too?", 30), self.text[-2000:]
        os.write(self.master, answer.encode() + b"\n")

    def close(self, timeout: float) -> int:
        """The exit code, reading the output meanwhile (a full pty buffer would block the process's writes)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.wait_for("\0", 0.2)
        self.wait_for("\0", 0.5)
        self.kill()
        return self.proc.wait(5)

    def kill(self) -> None:
        """Kill the process if it still runs, close the pty (idempotent; the test's clean-up)."""
        if self.proc.poll() is None:
            self.proc.kill()
        if self.master is not None:
            os.close(self.master)
            self.master = None


@pytest.fixture
def terminals():
    """The `Terminal`s a test opens, killed and closed when it ends (also when an assertion failed)."""
    opened: list[Terminal] = []
    yield lambda *args: opened.append(Terminal(*args)) or opened[-1]
    for term in opened:
        term.kill()


def test_ctrl_c_on_a_terminal_asks_detach_or_stop(head, tmp_path, terminals):
    env, _ = head
    storage = tmp_path / "runs"
    # never resumed: far more epochs than the test lasts, so the job is still running when it is stopped
    term = terminals(env, "submit", str(_spec(tmp_path, "jobtty", epochs=500, train=512)), "--address", ADDRESS,
                     "--storage", str(storage), "--python", sys.executable)
    assert term.wait_for("2 trials started", 120), term.text[-3000:]
    term.interrupt_and_answer("n")  # detach: the job keeps running
    assert term.close(60) == 0 and "detached" in term.text, term.text[-2000:]
    assert "RUNNING" in mixsweep(env, "status", "jobtty", "--address", ADDRESS, "--storage", str(storage)).stdout
    term = terminals(env, "logs", "jobtty", "--address", ADDRESS)  # come back, then stop it
    assert term.wait_for("epoch", 60), term.text[-3000:]
    term.interrupt_and_answer("y")
    assert term.close(180) == 130 and "STOPPED" in term.text, term.text[-2000:]
    assert {r.info.status for r in _runs(storage) if r.data.tags.get("mlflow.parentRunId")} == {"KILLED"}


# -- issue 19: round three ---------------------------------------------------------------------------
def _sdk(env: dict):
    """The Ray job SDK of the test, with the head's token (to look at what a job carries, or to queue one)."""
    from ray.job_submission import JobSubmissionClient

    token = Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    return JobSubmissionClient(ADDRESS, headers={"Authorization": f"Bearer {token}"})


def test_quick_refusals(head, tmp_path):
    """A bad --resume name, `status` of a sweep neither the head nor the storage knows, RAY_ADDRESS='' (unset, as Ray
    reads it), and a closed stdout (`mixsweep jobs | head -1`)."""
    env, _ = head
    bad = mixsweep(env, "submit", "--resume", "Bad Name", "--address", ADDRESS)
    assert bad.returncode == 2 and "'Bad Name'" in bad.stderr and "a-z, 0-9, '_' and '-'" in bad.stderr, bad.stderr
    unknown = mixsweep(env, "status", "nosuchsweep", "--address", ADDRESS, "--storage", str(tmp_path))
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr, unknown.stdout + unknown.stderr
    assert "no mixsweep job or sweep named 'nosuchsweep'" in unknown.stderr and "sweeps with jobs:" in unknown.stderr
    empty = mixsweep({**env, "RAY_ADDRESS": ""}, "run", str(_spec(tmp_path, "jobempty")), "--storage",
                     str(tmp_path / "runs"), "--tracking-uri", f"http://127.0.0.1:{CLOSED_PORT}")
    assert empty.returncode == 2 and "--address" not in empty.stderr, empty.stderr  # past the address check
    assert "cannot reach the MLflow tracking server" in empty.stderr, empty.stderr
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "jobs", "--address", ADDRESS], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and err == "", err


def test_an_oversized_spec_is_refused_and_a_job_that_never_starts_is_not_followed_forever(head, tmp_path):
    """A spec over Linux's 128 KiB for one variable would leave its job PENDING forever: refused before
    submitting. A job that stays PENDING (here: it asks for a resource the head lacks) is followed for
    MIXSWEEP_PENDING_S only, then named with why and how to stop it."""
    env, _ = head
    spec = _spec(tmp_path, "jobbig")
    spec.write_text(spec.read_text() + "description: " + "x" * 140_000 + "\n")
    before = _job_count(env)
    big = mixsweep(env, "submit", str(spec), "--address", ADDRESS, "--storage", str(tmp_path / "runs"), timeout=120)
    assert big.returncode == 2 and "too large to submit" in big.stderr and "128 KiB" in big.stderr, big.stderr
    assert _job_count(env) == before
    job = _sdk(env).submit_job(entrypoint="true", entrypoint_resources={"no_such_resource": 1},
                               metadata={"mixsweep": "1", "sweep": "jobpending"})
    try:
        out = mixsweep({**env, "MIXSWEEP_PENDING_S": "3"}, "logs", "jobpending", "--address", ADDRESS, timeout=120)
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
        assert f"job {job} is still PENDING after 3 s" in out.stderr and f"mixsweep stop {job}" in out.stderr
    finally:
        _sdk(env).stop_job(job)


def test_two_submits_of_one_sweep_run_one_job(head, tmp_path):
    """Two `submit`s of one sweep at once: one job runs, the other submit is refused (exit 2) naming it, and
    `status` / `logs` of the sweep show the job that runs, not a refused one."""
    env, _ = head
    storage, spec = tmp_path / "runs", _spec(tmp_path, "jobtwice", epochs=1, train=64, factors="mix.preset: [none]")
    args = [sys.executable, "-m", "orchestrator.cli", "submit", str(spec), "--address", ADDRESS, "--storage",
            str(storage), "--python", sys.executable, "--no-wait"]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(2)]
    outs = [(p.wait(120), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in outs) == [0, 2], outs
    accepted = next(err for rc, err in outs if rc == 0).split(" as job ")[1].split()[0]
    refused = next(err for rc, err in outs if rc == 2)
    assert f"already runs on this head as job {accepted}" in refused and f"mixsweep stop {accepted}" in refused, outs
    status = mixsweep(env, "status", "jobtwice", "--address", ADDRESS, "--storage", str(storage))
    assert f"job {accepted}: " in status.stdout and "submit --resume" not in status.stdout, status.stdout
    done = mixsweep(env, "logs", "jobtwice", "--address", ADDRESS)  # follows the running job to its end
    assert done.returncode == 0 and f"job {accepted}: SUCCEEDED" in done.stderr, done.stdout[-2000:] + done.stderr
    assert [line.split()[0] for line in mixsweep(env, "jobs", "--address", ADDRESS).stdout.splitlines()
            if line.startswith("mixsweep-jobtwice-")] == [accepted]


class _AuthServer:
    """A tracking server that wants credentials: /health answers, the API needs basic auth as alice."""

    def __init__(self, password: str) -> None:
        import base64
        import http.server
        import threading

        accepted = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                ok = self.path == "/health" or self.headers.get("Authorization") == accepted
                body = b'{"experiments": []}' if ok else b"You are not authenticated."
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_tracking_server_that_wants_credentials_names_mlflows_variables(head, tmp_path):
    """No credentials here: refused before submitting, naming MLflow's variables. Credentials here but not on the
    head: the job's driver says the same (where they go on the head); the secret never travels with the job."""
    env, _ = head
    secret = "s3cret-" + secrets.token_hex(8)
    server = _AuthServer(secret)
    try:
        spec, storage = str(_spec(tmp_path, "jobauth")), str(tmp_path / "runs")
        before = _job_count(env)
        out = mixsweep(env, "submit", spec, "--address", ADDRESS, "--storage", storage, "--tracking-uri", server.uri)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"{server.uri} answered 401" in out.stderr and "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" \
            in out.stderr and "MLFLOW_TRACKING_TOKEN" in out.stderr and "~/.mlflow/credentials" in out.stderr
        assert _job_count(env) == before
        creds = {**env, "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": secret}
        out = mixsweep(creds, "submit", spec, "--address", ADDRESS, "--storage", storage, "--tracking-uri", server.uri,
                       "--python", sys.executable)
        assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
        assert f"{server.uri} answered 401" in out.stdout and "MLFLOW_TRACKING_PASSWORD" in out.stdout \
            and "on the cluster's head and workers" in out.stdout and "Traceback" not in out.stdout, out.stdout[-3000:]
        job_id = out.stderr.split(" as job ")[1].split()[0]
        info = _sdk(env).get_job_info(job_id)
        carried = repr((info.runtime_env, info.metadata, info.entrypoint)) + _sdk(env).get_job_logs(job_id)
        assert secret not in carried and "MLFLOW_TRACKING_PASSWORD" not in repr(info.runtime_env)
    finally:
        server.close()

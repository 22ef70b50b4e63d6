"""Crash, kill, stop, lost node, tracking outage, divergence: nothing lost but the failed piece.

Real processes throughout: `mixsweep` CLI subprocesses, a real local Ray, a two-node Ray cluster,
a real `mlflow server`. No mocks.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from trainables.trialdir import TrialDir

from .reliability_helpers import (
    ENV,
    assert_complete,
    epochs_logged,
    finished,
    free_port,
    run,
    snapshot,
    start,
    trial_runs,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.slow


def sqlite_uri(storage) -> str:
    return f"sqlite:///{storage / 'mlflow.db'}"


@pytest.mark.parametrize("epochs", [3, 1])
def test_driver_sigkill_then_resume(tmp_path, epochs):
    """3 epochs: killed mid-sweep. 1 epoch: killed as the first final.json appears, before Ray has its result."""
    spec = write_spec(tmp_path / "s.yaml", "killed", epochs=epochs)
    storage = tmp_path / "runs"
    proc = start("run", str(spec), "--storage", str(storage), log=tmp_path / "run.log")
    wait_for(lambda: finished(storage, "killed") and epochs_logged(storage, "killed") >= min(5, epochs),
             what="a finished trial", proc=proc, poll=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Ray fate-shares its processes with the driver, but a busy worker can take seconds to notice and may
    # finish its trial meanwhile; stop what the killed driver left (as `resume` would first) before counting
    from orchestrator.launch import leftover_ray_processes, stop_processes
    from orchestrator.storage import sweep_paths

    stop_processes(leftover_ray_processes(json.loads(sweep_paths(storage, "killed").driver.read_text())))
    done_before = {wd: snapshot(wd) for wd in finished(storage, "killed")}
    assert len(done_before) < 6, "the sweep finished before the kill"
    # the killed driver left MLflow runs RUNNING; resume must settle everything
    resumed = run("resume", "killed", "--storage", str(storage))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    err = resumed.stderr
    assert "the previous driver (pid" in err and "is gone" in err
    assert "leftover process(es)" in err or "no leftover Ray processes" in err
    assert f"resuming killed: {len(done_before)} finished" in err
    assert f"- {len(done_before)} finished" in err and f"launching {6 - len(done_before)}" in err
    runs = assert_complete(sqlite_uri(storage), "killed", n_trials=6, epochs=epochs)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for workdir, before in done_before.items():  # finished trials were not retrained
        assert snapshot(workdir) == before


def trials_started(storage, name: str) -> int:
    """Trials whose process wrote its config.yaml: it is in its first epoch or later."""
    return len(list((storage / name / "trials").glob("*/config.yaml")))


@pytest.mark.parametrize("sig,when", [(signal.SIGINT, "first-epoch"), (signal.SIGTERM, "later")],
                         ids=["SIGINT-first-epoch", "SIGTERM-later"])
def test_graceful_stop_then_resume(tmp_path, sig, when):
    spec = write_spec(tmp_path / "s.yaml", "stopped", epochs=3, factors="mix.preset: [none, cutmix]",
                      train_size=1536 if when == "first-epoch" else 768)
    storage = tmp_path / "runs"
    log = tmp_path / "run.log"
    proc = start("run", str(spec), "--storage", str(storage), log=log)
    if when == "first-epoch":  # the trials have started and not one epoch has ended
        wait_for(lambda: trials_started(storage, "stopped") >= 1, what="a trial in its first epoch", proc=proc)
        assert epochs_logged(storage, "stopped") == 0
    else:
        wait_for(lambda: epochs_logged(storage, "stopped") >= 2, what="some epochs", proc=proc)
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    out = log.read_text()
    assert rc == 130, out[-4000:]
    assert f"{sig.name}: stopping; running trials keep their last checkpoint" in out, out[-4000:]  # ours, not Ray's
    assert "Traceback" not in out and "could not be updated" not in out, out[-4000:]
    assert "keep their last checkpoint and are marked KILLED" in out, out[-4000:]
    assert f"to continue: mixsweep resume stopped --storage {storage}" in out, out[-4000:]
    runs = trial_runs(sqlite_uri(storage), "stopped")
    assert runs and not [r for r in runs if r.info.status == "RUNNING"], [r.info.status for r in runs]
    assert any(r.info.status == "KILLED" for r in runs)
    synced = run("sync", "stopped", "--storage", str(storage))  # what the stop hint offers works too
    assert synced.returncode == 0, synced.stderr[-4000:]
    resumed = run("resume", "stopped", "--storage", str(storage))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    runs = assert_complete(sqlite_uri(storage), "stopped", n_trials=4, epochs=3)
    assert not [r.info.run_name for r in runs if "mixsweep.error" in r.data.tags]  # no stale reason of the stop


def session_processes(sid: int) -> list:
    """Live processes of process session `sid` (the driver's: Ray's processes are in it unless they escaped)."""
    import os

    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


def test_repeated_ctrl_c_stops_now_cleanly(tmp_path):
    """Ctrl+C three times: the second one means stop now; still no traceback, exit 130, runs KILLED, no orphans."""
    spec = write_spec(tmp_path / "s.yaml", "impatient", epochs=3, factors="mix.preset: [none, cutmix]")
    storage = tmp_path / "runs"
    log = tmp_path / "run.log"
    proc = start("run", str(spec), "--storage", str(storage), log=log)
    wait_for(lambda: epochs_logged(storage, "impatient") >= 1, what="an epoch", proc=proc)
    # each Ctrl+C only once the one before was answered (two pending SIGINTs are one signal to the kernel)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT: stopping;" in log.read_text(), timeout=60, what="the first Ctrl+C's answer",
             proc=proc, poll=0.02)

    def answers() -> list[str]:
        after_first = log.read_text().split("SIGINT: stopping;", 1)[1]
        return re.findall(r"SIGINT: stopping now|already stopping", after_first)

    # the second answers for the phase it lands in: Tune still stopping the trials -> "stopping now"; Tune
    # already done (it can take < 0.1 s) -> the clean-up is under way and runs to its end. (StopSignals' own
    # sequence, independent of Tune's timing: test_reliability_small.py)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: answers() or proc.poll() is not None, timeout=60, what="the second Ctrl+C's answer")
    assert answers(), log.read_text()[-4000:]
    if proc.poll() is None:  # a third, during the clean-up: acknowledged, never an interruption
        proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, log.read_text()[-4000:]
    out = log.read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    assert f"mixsweep resume impatient --storage {storage}" in out, out[-4000:]
    wait_for(lambda: not session_processes(proc.pid), timeout=30, what="the driver's processes to end")
    runs = trial_runs(sqlite_uri(storage), "impatient")
    assert runs and not [r for r in runs if r.info.status == "RUNNING"], [r.info.status for r in runs]
    resumed = run("resume", "impatient", "--storage", str(storage))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert_complete(sqlite_uri(storage), "impatient", n_trials=4, epochs=3)


def test_lost_worker_node(tmp_path):
    """Two Ray nodes on this machine; the worker node dies mid-trial; the trial continues on the head."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    try:
        spec = write_spec(tmp_path / "s.yaml", "cluster", epochs=6, train_size=2048,
                          factors="mix.preset: [none, cutmix]", seeds=2, max_failures=3)
        storage = tmp_path / "runs"
        log = tmp_path / "run.log"
        proc = start("run", str(spec), "--storage", str(storage), "--address", cluster.address, log=log)
        uri = sqlite_uri(storage)

        def worker_trial_has_an_epoch():
            # sweep.json is written after the driver created the MLflow schema (never race its creation)
            for r in trial_runs(uri, "cluster") if (storage / "cluster" / "sweep.json").exists() else []:
                if r.data.tags.get("mixsweep.node_id") == worker.node_id and r.info.status == "RUNNING":
                    wd = storage / "cluster" / "trials" / r.data.tags["mixsweep.run_hash"]
                    if 1 <= TrialDir(wd).epochs_done() <= 3:  # mid-trial, with epochs left to lose
                        return r.data.tags["mixsweep.run_hash"]
            return None

        found: list[str] = []
        wait_for(lambda: found.append(worker_trial_has_an_epoch()) or found[-1], timeout=600,
                 what="a trial mid-way on the worker node", proc=proc)
        victim = found[-1]
        cluster.remove_node(worker)  # the node and its processes are gone
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
        runs = assert_complete(uri, "cluster", n_trials=4, epochs=6)
        heads = {n.node_id for n in [cluster.head_node]}
        nodes = {n for r in runs for n in r.data.tags["mixsweep.node_history"].split(",")}
        assert worker.node_id in nodes and heads <= nodes  # trials ran on both nodes
        moved = next(r for r in runs if r.data.tags["mixsweep.run_hash"] == victim)
        assert moved.data.tags["mixsweep.node_history"].split(",") == [worker.node_id, cluster.head_node.node_id]
        assert moved.data.tags["mixsweep.node_id"] == cluster.head_node.node_id
        assert f"resuming {storage / 'cluster' / 'trials' / victim} after epoch" in log.read_text()
    finally:
        cluster.shutdown()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (random port, sqlite backend, proxied artifacts)."""
    port = free_port()
    db = tmp_path / "server.db"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(tmp_path / "server-artifacts"),
           "--workers", "1"]

    def launch():
        proc = subprocess.Popen(cmd, env=ENV, stdout=(tmp_path / "server.log").open("a"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return proc
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)

    def stop(proc):
        import os

        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    server = {"uri": f"http://127.0.0.1:{port}", "launch": launch, "stop": stop}
    server["proc"] = launch()
    yield server
    if server["proc"].poll() is None:
        stop(server["proc"])


def test_tracking_server_http_outage_and_sync(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri = mlflow_server["uri"]
    storage = tmp_path / "runs"
    # unreachable at start: a clear error before any trial, exit 2, nothing written
    dead = f"http://127.0.0.1:{free_port()}"
    bad = run("run", str(write_spec(tmp_path / "a.yaml", "unreach")), "--storage", str(storage),
              "--tracking-uri", dead)
    assert bad.returncode == 2 and "cannot reach the MLflow tracking server" in bad.stderr
    assert "Traceback" not in bad.stderr and not storage.exists()
    # logging through HTTP, artifacts included; then the server goes away mid-sweep
    spec = write_spec(tmp_path / "s.yaml", "served", epochs=3, factors="mix.preset: [none, cutmix]")
    log = tmp_path / "run.log"
    proc = start("run", str(spec), "--storage", str(storage), "--tracking-uri", uri, log=log)
    client = MlflowClient(uri)
    wait_for(lambda: epochs_logged(storage, "served") >= 2, what="epochs logged", proc=proc)
    mlflow_server["stop"](mlflow_server["proc"])
    rc = proc.wait(timeout=900)
    text = log.read_text()
    assert rc in (0, 1), text[-4000:]
    assert len(finished(storage, "served")) == 4, text[-4000:]  # trials kept training
    assert "MLflow tracking off for run" in text and "mixsweep sync" in text
    # the server comes back; sync back-fills, twice is the same as once
    mlflow_server["proc"] = mlflow_server["launch"]()
    for _ in range(2):
        synced = run("sync", "served", "--storage", str(storage))
        assert synced.returncode == 0, synced.stderr[-3000:]
        assert "View run" not in synced.stdout + synced.stderr  # MLflow's URL lines when it closes a run over HTTP
        runs = assert_complete(uri, "served", n_trials=4, epochs=3)
    for r in runs:
        assert "final/top1_err" in r.data.metrics and len(client.get_metric_history(r.info.run_id,
                                                                                     "final/top1_err")) == 1
    logged = [r for r in runs if "preview.png" in {a.path for a in client.list_artifacts(r.info.run_id)}]
    assert logged, "artifacts went through the server for the trials that finished while it was up"
    sweep = client.search_runs([client.get_experiment_by_name("mixsweep").experiment_id],
                               "tags.`mixsweep.role` = 'sweep'")[0]
    assert sweep.info.status == "FINISHED" and "spec.yaml" in {a.path for a in client.list_artifacts(sweep.info.run_id)}


def test_diverging_trial_fails_alone(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "diverge", epochs=2, factors="optim.lr: [0.05, 1.0e+30]", seeds=2)
    storage = tmp_path / "runs"
    result = run("run", str(spec), "--storage", str(storage))
    assert result.returncode == 1, result.stderr[-3000:]  # failed trials -> exit 1, the sweep itself completed
    assert "2 finished, 2 failed" in result.stderr
    runs = trial_runs(sqlite_uri(storage), "diverge")
    status = {(r.data.params["optim.lr"], r.data.params["seed"]): r for r in runs}
    assert len(status) == 4
    for (lr, _), r in status.items():
        if float(lr) > 1:
            assert r.info.status == "FAILED"
            assert "training diverged: non-finite loss at epoch 1, step" in r.data.tags["mixsweep.error"]
        else:
            assert r.info.status == "FINISHED"
    report = run("report", "diverge", "--storage", str(storage))
    assert report.returncode == 0
    assert "FAILED" in report.stdout and "training diverged" in report.stdout
    # a re-run does not retry the diverged trials unless asked
    again = run("run", str(spec), "--storage", str(storage))
    assert "2 failed earlier (use --retry-failed to run them again)" in again.stderr and "launching 0" in again.stderr


def test_retry_failed_starts_from_scratch(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "retry", epochs=1, factors="optim.lr: [1.0e+30]", seeds=1)
    storage = tmp_path / "runs"
    assert run("run", str(spec), "--storage", str(storage)).returncode == 1
    again = run("run", str(spec), "--storage", str(storage), "--retry-failed")
    assert "retrying 1 failed trial(s) from scratch" in again.stderr and "launching 1" in again.stderr
    assert again.returncode == 1  # it diverges again, as it must
    retired = list((storage / "retry" / "retired").iterdir())
    assert len(retired) == 1 and (retired[0] / "failed.json").exists()
    runs = trial_runs(sqlite_uri(storage), "retry")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"  # the new attempt's run; the old one is retired

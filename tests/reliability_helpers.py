"""Helpers for the reliability tests: real `mixsweep` processes, polling, MLflow checks."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def write_spec(path: Path, name: str, *, epochs: int = 3, train_size: int = 768, factors: str = "mix.preset: [none, "
               "cutmix, mixup]", seeds: int = 2, max_failures: int = 2) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        base:
          dataset: synthetic_salient
          data.train_size: {train_size}
          data.test_size: 64
          model: small_cnn
          model.width: 8
          epochs: {epochs}
          batch_size: 32
          eval.robust_size: 32
          workers: 0
          device: cpu
        factors:
          {factors}
        seeds: {seeds}
        resources: {{cpu: 1}}
        max_failures: {max_failures}
        """))
    return path


def start(*args: str, log: Path) -> subprocess.Popen:
    """`mixsweep ARGS` in its own session (signals reach the driver only), output to `log`."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], env=ENV, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def epochs_logged(storage: Path, name: str) -> int:
    return sum(len(Path(f).read_text().splitlines()) for f in glob.glob(str(storage / name / "trials/*/metrics.jsonl")))


def finished(storage: Path, name: str) -> list[Path]:
    return [Path(p).parent for p in glob.glob(str(storage / name / "trials/*/final.json"))]


def wait_for(predicate, timeout: float = 600, what: str = "condition", proc: subprocess.Popen | None = None,
             poll: float = 0.3) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def trial_runs(uri: str, sweep: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mixsweep")
    return client.search_runs([exp.experiment_id], f"tags.`mixsweep.sweep` = '{sweep}' and "
                              "tags.`mixsweep.role` = 'trial'")


def assert_complete(uri: str, sweep: str, n_trials: int, epochs: int) -> list:
    """Every trial FINISHED, one run per trial, every epoch exactly once in the history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = trial_runs(uri, sweep)
    assert len(runs) == n_trials, [r.info.run_name for r in runs]
    assert len({r.data.tags["mixsweep.run_hash"] for r in runs}) == n_trials
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status, r.data.tags.get("mixsweep.error"))
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "test/top1_err"))
        assert steps == list(range(1, epochs + 1)), (r.info.run_name, steps)
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(workdir: Path) -> tuple:
    """What must not change when a finished trial is not retrained."""
    final = workdir / "final.json"
    return final.stat().st_mtime_ns, json.loads(final.read_text()), (workdir / "metrics.jsonl").read_text()

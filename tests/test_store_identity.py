"""A store is recognised by the sweep it holds, never by names: real `mixsweep` processes.

- `mixsweep ui` reuses a UI on its port only when that UI serves this storage's store (another storage's
  sweep of the same name has views of the same names and often the same experiment id);
- a tracking store that was replaced by a fresh database (where another team's experiment took the sweep's
  experiment id) is neither written by `sync` nor read by `report` / `status`: a clear exit 2, and `resume`
  tracks the sweep there anew from its trials' folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pytest

from orchestrator.ui import answers
from tests.reliability_helpers import free_port, run, start, trial_runs, wait_for, write_spec

pytestmark = pytest.mark.slow


def _sweep(tmp_path, folder: str):
    storage = tmp_path / folder
    spec = write_spec(tmp_path / f"{folder}.yaml", "same", epochs=1, train_size=64, factors="mix.preset: [none]",
                      seeds=1)
    done = run("run", str(spec), "--storage", str(storage))
    assert done.returncode == 0, done.stderr[-3000:]
    return storage


def test_ui_and_sync_recognise_the_store_not_the_names(tmp_path):
    from mlflow.tracking import MlflowClient

    a, b = _sweep(tmp_path, "a"), _sweep(tmp_path, "b")
    port = free_port()
    ui = start("ui", "same", "--storage", str(a), "--port", str(port), log=tmp_path / "ui.log")
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}"), timeout=300, what="the UI of storage a", proc=ui)
        other = run("ui", "same", "--storage", str(b), "--port", str(port))
        assert other.returncode == 2, other.stdout + other.stderr
        assert "serves another MLflow store" in other.stderr and "Traceback" not in other.stderr
        same = run("ui", "same", "--storage", str(a), "--port", str(port))
        assert same.returncode == 0 and "already serves this store" in same.stdout, same.stdout + same.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)

    # the store of storage a is replaced by a fresh database, where another team's experiment takes its id
    state = json.loads((a / "same" / "sweep.json").read_text())
    (a / "mlflow.db").unlink()
    uri = state["tracking_uri"]
    team = MlflowClient(uri).create_experiment("team-x")
    assert team == state["experiment_id"]  # the attack as it happens: the stored id now names another experiment

    sync = run("sync", "same", "--storage", str(a))
    assert sync.returncode == 2, sync.stderr
    assert "does not hold sweep 'same' any more" in sync.stderr and "Traceback" not in sync.stderr, sync.stderr
    assert f"mixsweep resume same --storage {a}" in sync.stderr
    assert MlflowClient(uri).search_runs([team]) == []  # nothing written into team-x
    report = run("report", "same", "--storage", str(a))
    assert report.returncode == 2 and "does not hold sweep" in report.stderr, report.stderr
    status = run("status", "same", "--storage", str(a))
    assert status.returncode == 0 and "does not hold sweep" in status.stdout, status.stdout + status.stderr

    resume = run("resume", "same", "--storage", str(a))  # tracks it there anew, trains nothing
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "nothing to run" in resume.stderr
    runs = trial_runs(uri, "same")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "final/top1_err" in runs[0].data.metrics
    assert MlflowClient(uri).search_runs([team]) == []
    assert run("sync", "same", "--storage", str(a)).returncode == 0

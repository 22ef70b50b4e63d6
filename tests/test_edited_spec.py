"""An edited spec never pools two configurations: real `mixsweep` processes on one storage folder.

Run a spec, change a base key, run again: the report, the printed summary, `status`, the saved views'
runs and `sync` describe the new trials only; the old runs are retired visibly (tag + a line at `run`),
and come back when the edit is undone, without training anything twice.
"""

from __future__ import annotations

import csv

import pytest

from tests.reliability_helpers import run, trial_runs, write_spec

pytestmark = pytest.mark.slow

FACTORS = "mix.preset: [none, mixup]"


def _runs(uri: str, sweep: str, role: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mixsweep")
    return client.search_runs([exp.experiment_id], f"tags.`mixsweep.sweep` = '{sweep}' and "
                              f"tags.`mixsweep.role` = '{role}'")


def _report_rows(storage, name) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    with open(storage / name / "report" / "trials.csv") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["mix.preset"], []).append(row)
    return rows


def test_edited_spec_retires_old_runs_and_never_pools_them(tmp_path):
    storage, spec = tmp_path / "runs", tmp_path / "edit.yaml"
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    args = ("--storage", str(storage))

    write_spec(spec, "edit", epochs=1, train_size=128, factors=FACTORS, seeds=1)
    first = run("run", str(spec), *args)
    assert first.returncode == 0, first.stderr[-3000:]
    one_epoch = {r.data.tags["mixsweep.run_hash"]: r for r in trial_runs(uri, "edit")}
    assert len(one_epoch) == 2

    write_spec(spec, "edit", epochs=2, train_size=128, factors=FACTORS, seeds=1)  # a base key changes
    second = run("run", str(spec), *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 MLflow run(s) of configurations this spec no longer has are retired" in second.stderr, second.stderr
    assert "epochs=1 (spec: 2)" in second.stderr
    current = trial_runs(uri, "edit")
    assert len(current) == 2 and not {r.data.tags["mixsweep.run_hash"] for r in current} & set(one_epoch)
    retired = _runs(uri, "edit", "retired")
    assert {r.data.tags["mixsweep.run_hash"] for r in retired} == set(one_epoch)
    assert all(r.data.tags["mixsweep.retired"].startswith("not in spec ") for r in retired)
    assert all(r.data.params["epochs"] == "1" for r in retired)
    rows = _report_rows(storage, "edit")  # one seed per arm: n = 1, never the 1- and 2-epoch runs together
    assert sorted(rows) == ["mixup", "none"] and all(len(v) == 1 for v in rows.values()), rows
    assert "| **none (ref)** | 1 |" in second.stderr or "| none (ref) | 1 |" in second.stderr, second.stderr[-2000:]

    # a store written before runs were retired: a stale run tagged as a trial again is still not pooled
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).set_tag(retired[0].info.run_id, "mixsweep.role", "trial")
    report = run("report", "edit", *args)
    assert report.returncode == 0, report.stderr
    assert all(len(v) == 1 for v in _report_rows(storage, "edit").values())
    status = run("status", "edit", *args)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("finished") == 2, status.stdout
    sync = run("sync", "edit", *args)
    assert sync.returncode == 0, sync.stderr
    assert "synced 2 trial(s)" in sync.stderr, sync.stderr
    MlflowClient(uri).set_tag(retired[0].info.run_id, "mixsweep.role", "retired")

    # the edit undone: the 1-epoch runs come back, nothing is trained again, the 2-epoch runs are retired
    write_spec(spec, "edit", epochs=1, train_size=128, factors=FACTORS, seeds=1)
    third = run("run", str(spec), *args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "2 retired MLflow run(s) are back in the sweep" in third.stderr, third.stderr
    assert "epochs=2 (spec: 1)" in third.stderr
    assert "nothing to run" in third.stderr and "report: " in third.stderr
    assert {r.data.tags["mixsweep.run_hash"] for r in trial_runs(uri, "edit")} == set(one_epoch)
    status = run("status", "edit", *args)
    assert "2 MLflow run(s) of configurations the spec no longer has are retired" in status.stdout, status.stdout
    report = run("report", "edit", *args)
    assert report.returncode == 0, report.stderr
    rows = _report_rows(storage, "edit")
    assert all(len(v) == 1 and v[0]["run_hash"] in one_epoch for v in rows.values()), rows

"""End to end through the real CLI: a sweep on a local Ray, its MLflow structure, the report,
skipping finished trials, and extending a grid."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SPEC = textwrap.dedent("""\
    name: e2e
    description: end-to-end test sweep
    base:
      dataset: synthetic_salient
      data.train_size: 128
      data.test_size: 64
      model: small_cnn
      model.width: 8
      epochs: 2
      batch_size: 32
      eval.robust_size: 32
      workers: 0
      device: cpu
    factors:
      mix.preset: [none, cutmix{extra}]
    seeds: 2
    resources: {{cpu: 1}}
    """)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def mixsweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    spec = root / "e2e.yaml"
    spec.write_text(SPEC.format(extra=""))
    storage = root / "runs"
    first = mixsweep("run", str(spec), "--storage", str(storage))
    assert first.returncode == 0, first.stderr[-3000:]
    return root, spec, storage, first


def _client(storage: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")


@pytest.mark.slow
def test_mlflow_structure(sweep):
    _, _, storage, first = sweep
    assert "[mixsweep] 4 trials started" in first.stderr and "4 finished, 0 failed" in first.stderr
    client = _client(storage)
    exp = client.get_experiment_by_name("mixsweep")
    assert exp is not None and exp.artifact_location.startswith((storage / "mlartifacts").as_uri())
    sweeps = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'sweep'")
    assert len(sweeps) == 1
    parent = sweeps[0]
    assert parent.info.run_name == "e2e" and parent.data.tags["mixsweep.sweep"] == "e2e"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["factors.mix.preset"] == "['none', 'cutmix']" and parent.data.params["base.epochs"] == "2"
    assert "spec.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    trials = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'trial'")
    assert len(trials) == 4 and len({t.data.tags["mixsweep.run_hash"] for t in trials}) == 4
    by_preset: dict[str, set] = {}
    for t in trials:
        tags, params = t.data.tags, t.data.params
        assert t.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["mixsweep.sweep"] == "e2e"
        assert tags["ray.trial_id"] and tags["mixsweep.git_commit"] and tags["mixsweep.device"] == "cpu"
        assert {"mix.preset", "mix.prob", "seed", "optim.lr", "dataset", "model.width"} <= set(params)
        if params["mix.preset"] == "cutmix":
            assert params["mix.selection"] == "random" and params["mix.lam"] == "beta(1,1)"
        by_preset.setdefault(params["mix.preset"], set()).add(tags["mixsweep.config_hash"])
        history = client.get_metric_history(t.info.run_id, "test/top1_err")
        assert sorted(m.step for m in history) == [1, 2]  # every epoch exactly once
        assert {"final/top1_err", "best/top1_err", "robust/fgsm_top1_err", "robust/noise_top1_err",
                "cost/device_s", "train/loss", "lr", "time/epoch_s", "throughput/img_s"} <= set(t.data.metrics)
        assert {"preview.png", "config.yaml"} <= {a.path for a in client.list_artifacts(t.info.run_id)}
    assert set(by_preset) == {"none", "cutmix"} and all(len(h) == 1 for h in by_preset.values())


@pytest.mark.slow
def test_report_and_status(sweep):
    _, _, storage, _ = sweep
    report = mixsweep("report", "e2e", "--storage", str(storage))
    assert report.returncode == 0, report.stderr
    assert "## mix.preset" in report.stdout and "none (ref)" in report.stdout
    assert re.search(r"\| (\*\*)?cutmix(\*\*)? \| 2 \|", report.stdout)
    out = storage / "e2e" / "report"
    assert all((out / f).stat().st_size > 100 for f in ("report.md", "factors.png", "trials.csv", "summary.csv"))
    client = _client(storage)
    exp = client.get_experiment_by_name("mixsweep")
    parent = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'sweep'")[0]
    assert {"report/report.md", "report/factors.png", "report/trials.csv", "report/summary.csv"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    status = mixsweep("status", "e2e", "--storage", str(storage))
    assert status.returncode == 0 and status.stdout.count("finished") == 4 and status.stdout.count("FINISHED") == 4


@pytest.mark.slow
def test_rerun_skips_finished_and_extension_runs_only_new(sweep):
    root, spec, storage, _ = sweep
    again = mixsweep("run", str(spec), "--storage", str(storage))
    assert again.returncode == 0
    assert "4 finished, 0 failed earlier, 0 stopped by ASHA; launching 0" in again.stderr
    assert "nothing to run" in again.stderr and "trials started" not in again.stderr
    spec.write_text(SPEC.format(extra=", mixup"))
    extended = mixsweep("run", str(spec), "--storage", str(storage))
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "6 trials (3 arms x 2 seeds) - 4 finished" in extended.stderr and "launching 2" in extended.stderr
    assert "[mixsweep] 2 trials started" in extended.stderr
    client = _client(storage)
    exp = client.get_experiment_by_name("mixsweep")
    trials = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'trial'")
    assert len(trials) == 6 and all(t.info.status == "FINISHED" for t in trials)
    sweeps = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'sweep'")
    assert len(sweeps) == 1  # the same sweep run, with the new spec version as an artifact
    assert any(a.path.startswith("spec-") for a in client.list_artifacts(sweeps[0].info.run_id))


def test_dry_run_writes_nothing(tmp_path):
    spec = tmp_path / "e2e.yaml"
    spec.write_text(SPEC.format(extra=""))
    dry = mixsweep("run", str(spec), "--storage", str(tmp_path / "runs"), "--dry-run")
    assert dry.returncode == 0 and "4 trials = 2 arms x 2 seeds" in dry.stdout and "cutmix-s1" in dry.stdout
    assert not (tmp_path / "runs").exists()


BASE = """\
base:
  dataset: synthetic_salient
  data.train_size: 128
  data.test_size: 64
  model: small_cnn
  model.width: 8
  batch_size: 32
  eval.robust_size: 0
  workers: 0
  device: cpu
  mix.preset: cutmix
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_optuna_search_sweep(tmp_path):
    spec = tmp_path / "hpo.yaml"
    spec.write_text("name: tiny-hpo\n" + BASE.replace("  mix.preset: cutmix\n", "  mix.preset: cutmix\n  epochs: 2\n")
                    + "seeds: 1\nsearch: {algorithm: optuna, num_trials: 3, max_concurrent: 2, "
                      "space: {optim.lr: 'loguniform(0.001, 0.1)', mix.prob: 'uniform(0.2, 1.0)'}}\n")
    storage = tmp_path / "runs"
    result = mixsweep("run", str(spec), "--storage", str(storage))
    assert result.returncode == 0, result.stderr[-4000:]
    runs = _trial_runs(storage, "tiny-hpo")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.params["optim.lr"] for r in runs}) == 3  # sampled, not a grid
    status = mixsweep("status", "tiny-hpo", "--storage", str(storage))
    assert status.returncode == 0 and status.stdout.count("FINISHED") == 3
    report = mixsweep("report", "tiny-hpo", "--storage", str(storage))
    assert report.returncode == 0 and "# Search report" in report.stdout and "optim.lr" in report.stdout


@pytest.mark.slow
def test_asha_stops_weak_arms_early(tmp_path):
    spec = tmp_path / "asha.yaml"
    spec.write_text("name: tiny-asha\n" + BASE.replace("  mix.preset: cutmix\n", "  epochs: 4\n")
                    + "factors: {optim.lr: [0.3, 0.1, 0.03, 0.01]}\nseeds: 1\nscheduler: asha\n"
                      "asha: {grace_period: 1, reduction_factor: 2}\nmetric: best/top1_err\n")
    storage = tmp_path / "runs"
    result = mixsweep("run", str(spec), "--storage", str(storage))
    assert result.returncode == 0, result.stderr[-4000:]
    runs = _trial_runs(storage, "tiny-asha")
    assert len(runs) == 4 and not [r for r in runs if r.info.status == "RUNNING"]
    stopped = [r for r in runs if r.info.status == "KILLED"]
    assert all("stopped early by ASHA" in r.data.tags["mixsweep.error"] for r in stopped)
    assert any(r.info.status == "FINISHED" for r in runs)
    again = mixsweep("run", str(spec), "--storage", str(storage))
    assert f"{len(stopped)} stopped by ASHA; launching 0" in again.stderr


def _trial_runs(storage: Path, sweep: str) -> list:
    client = _client(storage)
    exp = client.get_experiment_by_name("mixsweep")
    return client.search_runs([exp.experiment_id], f"tags.`mixsweep.sweep` = '{sweep}' and "
                              "tags.`mixsweep.role` = 'trial'")

"""The Ray Tune trial under a real local Ray: reporting, checkpoints, MLflow, idempotence."""

from __future__ import annotations

import pytest

TINY = {
    "dataset": "synthetic_salient", "data.train_size": 128, "data.test_size": 64, "model": "small_cnn",
    "model.width": 8, "batch_size": 64, "epochs": 1, "eval.robust_size": 32, "workers": 0, "device": "cpu",
}


def _tune(trials, storage, name):
    from ray import tune

    from trainables.trainable import run_trial

    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": 1}),
        param_space={"trial": tune.grid_search(trials)},
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
        tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: t.trial_id),
    )
    return tuner.fit()


@pytest.mark.slow
def test_run_trial_under_local_ray(tmp_path):
    import mlflow
    import ray
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"mixsweep.role": "sweep"}).info.run_id
    trials = []
    for i, preset in enumerate(["cutmix", "mixup"]):
        meta = {"sweep": "t", "run_hash": f"h{i}", "config_hash": f"c{i}",
                "workdir": str(tmp_path / "trials" / f"h{i}"),
                "tracking_uri": uri, "experiment_id": exp, "sweep_run_id": parent, "git_commit": "abc"}
        trials.append({"config": {**TINY, "mix.preset": preset}, "meta": meta})
    # address="local": a new instance, never another Ray cluster running on this machine (ray.init() attaches to one)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = _tune(trials, tmp_path / "ray", "first")
        assert results.num_errors == 0
        for r in results:
            assert 0 <= r.metrics["final/top1_err"] <= 100 and r.metrics["epoch"] == 1
            assert r.checkpoint is not None
            assert "mix/label_tv" in r.metrics and "mix/empty_label_rate" in r.metrics  # label fidelity reaches Ray
            with r.checkpoint.as_directory() as d:
                assert {p.name for p in __import__("pathlib").Path(d).iterdir()} >= {"epoch_0001.pt", "final.json"}
        runs = client.search_runs([exp], filter_string="tags.`mixsweep.role` = 'trial'")
        assert len(runs) == 2
        for run in runs:
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == parent
            assert run.data.tags["ray.trial_id"] and run.data.tags["mixsweep.node_id"]
            assert run.data.params["mix.preset"] in ("cutmix", "mixup") and run.data.params["seed"] == "0"
            assert "final/top1_err" in run.data.metrics and "robust/fgsm_top1_err" in run.data.metrics
            assert [m.step for m in client.get_metric_history(run.info.run_id, "test/top1_err")] == [1]
            for key in ("mix/label_tv", "mix/empty_label_rate"):  # synthetic_salient has object masks
                assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1]
        # idempotent: a second launch of the same trials re-reports at once, no new runs, no duplicate epochs
        again = _tune(trials, tmp_path / "ray", "second")
        assert again.num_errors == 0
        finals = lambda rs: sorted(r.metrics["final/top1_err"] for r in rs)  # noqa: E731
        assert finals(again) == finals(results)
        runs = client.search_runs([exp], filter_string="tags.`mixsweep.role` = 'trial'")
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        for run in runs:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "test/top1_err")] == [1]
            assert len(client.get_metric_history(run.info.run_id, "final/top1_err")) == 1
    finally:
        ray.shutdown()
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_an_epoch_whose_metrics_line_was_cut_off_still_reaches_mlflow(tmp_path):
    """A full disk (or a kill) after epoch 2's checkpoint but before its metrics.jsonl line: the resumed trial
    rewrites metrics.jsonl from the checkpoint, and MLflow gets epochs 1, 2, 3 - each once."""
    import json

    import mlflow
    import ray
    from mlflow.tracking import MlflowClient

    from trainables.train import train
    from trainables.trialdir import TrialDir

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"mixsweep.role": "sweep"}).info.run_id
    workdir = tmp_path / "trials" / "h0"
    config = {**TINY, "epochs": 3, "mix.preset": "cutmix"}

    class Cut(Exception):
        pass

    def stop_after_two(metrics, path, finished):
        if metrics["epoch"] == 2:
            raise Cut

    with pytest.raises(Cut):  # the first run: epochs 1 and 2 done, no MLflow
        train(config, workdir=workdir, on_epoch=stop_after_two, verbose=False, owned=True)
    trial = TrialDir(workdir)
    assert [m["epoch"] for m in trial.read_metrics()] == [1, 2]
    trial.metrics.write_text(json.dumps(trial.read_metrics()[0]) + "\n")  # epoch 2's line lost
    meta = {"sweep": "t", "run_hash": "h0", "config_hash": "c0", "workdir": str(workdir), "tracking_uri": uri,
            "experiment_id": exp, "sweep_run_id": parent, "git_commit": "abc"}
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results = _tune([{"config": config, "meta": meta}], tmp_path / "ray", "resumed")
        assert results.num_errors == 0
    finally:
        ray.shutdown()
        mlflow.set_tracking_uri(None)
    (run,) = client.search_runs([exp], filter_string="tags.`mixsweep.role` = 'trial'")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/top1_err")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "final/top1_err")] == [3]  # with the last

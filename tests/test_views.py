"""Saved MLflow UI views: the tag contents (pure), and writing / updating / pruning them in a real store."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator import views as V
from orchestrator.mlflow_views import _sweep_of, description, publish, write_views
from orchestrator.report import write_report
from orchestrator.spec import load_spec
from trainables.tracking import TAG_NOTE, TAG_ROLE, TAG_SWEEP


def spec_like(name="smoke", factors=("mix.preset",), space=(), metric="final/top1_err", mode="min", desc="demo"):
    search = SimpleNamespace(algorithm="optuna" if space else "grid", space={k: None for k in space})
    return SimpleNamespace(name=name, factors={f: (1, 2) for f in factors}, search=search, metric=metric,
                           mode=mode, description=desc)


def test_smoke_spec_gets_one_view_grouped_by_its_factor():
    spec = load_spec("smoke")
    views = V.views_for_spec(spec)
    assert [v.id for v in views] == ["mixsweep-smoke-mix.preset"]
    state = views[0].state
    assert state["searchFilter"] == f"tags.`{TAG_SWEEP}` = 'smoke' and tags.`{TAG_ROLE}` = 'trial'"
    assert state["groupBy"] == {"aggregateFunction": "average",
                                "groupByKeys": [{"mode": "param", "groupByData": "mix.preset"}]}
    assert state["orderByKey"] == "metrics.`final/top1_err`" and state["orderByAsc"] is True
    assert state["selectedColumns"][:2] == ["params.`mix.preset`", "params.`seed`"]
    assert state["selectedColumns"][2] == "metrics.`final/top1_err`"
    for companion in ("best/top1_err", "robust/fgsm_top1_err", "robust/noise_top1_err", "cost/device_s"):
        assert f"metrics.`{companion}`" in state["selectedColumns"]
    assert state["useGroupedValuesInCharts"] is True
    charts = {c["uuid"]: c for c in state["compareRunCharts"]}
    assert charts["curve"]["type"] == "LINE" and charts["curve"]["metricKey"] == "test/top1_err"
    assert charts["curve"]["xAxisKey"] == "step"
    assert charts["final"]["type"] == "BAR" and charts["final"]["metricKey"] == "final/top1_err"
    sections = {s["uuid"] for s in state["compareRunSections"]}
    assert {c["metricSectionId"] for c in state["compareRunCharts"]} <= sections


def test_several_factors_get_an_all_factors_view_then_one_per_factor():
    views = V.views_for_spec(spec_like(name="fac", factors=("mix.preset", "mix.pairing"), mode="max"))
    assert [v.id for v in views] == ["mixsweep-fac-all-factors", "mixsweep-fac-mix.preset", "mixsweep-fac-mix.pairing"]
    assert [k["groupByData"] for k in views[0].state["groupBy"]["groupByKeys"]] == ["mix.preset", "mix.pairing"]
    assert [k["groupByData"] for k in views[2].state["groupBy"]["groupByKeys"]] == ["mix.pairing"]
    assert all(v.state["orderByAsc"] is False for v in views)  # mode max: best first
    assert all(v.state["selectedColumns"][:3] == ["params.`mix.preset`", "params.`mix.pairing`", "params.`seed`"]
               for v in views)


def test_optuna_view_has_parallel_coordinates_and_metric_scatter():
    views = V.views_for_spec(spec_like(name="hpo", factors=(), space=("optim.lr", "mix.prob")))
    assert [v.id for v in views] == ["mixsweep-hpo-search"]
    state = views[0].state
    assert state["groupBy"] is None
    charts = {c["type"]: c for c in state["compareRunCharts"]}
    assert charts["PARALLEL"]["selectedParams"] == ["optim.lr", "mix.prob"]
    assert charts["PARALLEL"]["selectedMetrics"] == ["final/top1_err"]
    scatters = [c for c in state["compareRunCharts"] if c["type"] == "SCATTER"]
    assert [c["xaxis"] for c in scatters] == [{"key": V.TRIAL_NUMBER, "type": "METRIC"},
                                              {"key": "optim.lr", "type": "PARAM"},
                                              {"key": "mix.prob", "type": "PARAM"}]
    assert all(c["yaxis"] == {"key": "final/top1_err", "type": "METRIC"} for c in scatters)


def test_envelope_is_what_the_ui_reads_and_fits_a_tag():
    view = V.views_for_spec(load_spec("smoke"))[0]
    value = V.envelope(view, created_ms=1, updated_ms=2)
    data = json.loads(value)
    assert set(data) == {"name", "createdAt", "updatedAt", "state"}
    assert (data["createdAt"], data["updatedAt"]) == (1, 2)
    assert V.decode_state(data["state"]) == view.state
    assert len(value) <= V.MAX_TAG_CHARS


def test_a_large_state_is_deflated_and_round_trips():
    state = {"selectedColumns": [f"params.`k{i}`" for i in range(2000)]}
    text = V.encode_state(state)
    assert text.startswith("deflate;") and len(text) < V.MAX_TAG_CHARS
    assert V.decode_state(text) == state


def test_urls_open_the_model_training_page():
    url = V.view_url("http://127.0.0.1:5000/", "3", "mixsweep-smoke-mix.preset")
    assert url == ("http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=mixsweep-smoke-mix.preset"
                   "&workflowType=machine_learning")
    assert V.view_url("http://h:1", "3", "x", charts=True).endswith("&compareRunsMode=CHART")
    assert V.ui_base("http://tracking:5000/") == "http://tracking:5000"
    assert V.ui_base("sqlite:////abs/mlflow.db") == "http://127.0.0.1:5000"


def test_fit_views_respects_the_ui_limit():
    views = V.views_for_spec(spec_like(factors=("a", "b", "c")))
    assert len(V.fit_views(views, others=0)) == 4
    assert [v.id for v in V.fit_views(views, others=38)] == [views[0].id, views[1].id]
    assert V.fit_views(views, others=45) == []


def test_description_has_links_and_stays_under_mlflows_limit():
    spec = spec_like()
    views = V.views_for_spec(spec)
    rows = "\n".join(["| f | l |", "|---|---|"] + [f"| x | {'y' * 100} |" for _ in range(200)])
    text = description(spec, "7", views, summary=rows)
    assert len(text) <= 8000
    assert "#/experiments/7/runs?viewStateShareKey=mixsweep-smoke-mix.preset&workflowType=machine_learning" in text
    assert text.startswith("## Compare in the MLflow UI") and text.endswith("demo")


@pytest.fixture
def store(tmp_path: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("mixsweep", artifact_location=(tmp_path / "art").as_uri())
    return client, exp


def _view_tags(client, exp):
    return {k: v for k, v in client.get_experiment(exp).tags.items() if k.startswith(V.VIEW_TAG_PREFIX)}


def test_write_views_updates_in_place_and_prunes_only_its_own_stale_views(store):
    client, exp = store
    other = V.views_for_spec(spec_like(name="smoke-2", factors=("mix.preset",)))[0]  # prefix-sharing sweep
    client.set_experiment_tag(exp, V.VIEW_TAG_PREFIX + other.id, V.envelope(other, created_ms=5, updated_ms=5))
    two = spec_like(factors=("mix.preset", "mix.pairing"))
    copy = V.View("users-own", "mine", V.views_for_spec(two)[0].state)  # a user saved one of ours as their own
    client.set_experiment_tag(exp, V.VIEW_TAG_PREFIX + copy.id, V.envelope(copy, created_ms=5, updated_ms=5))

    write_views(client, exp, two, now_ms=100)
    tags = _view_tags(client, exp)
    assert len(tags) == 2 + 3
    assert _sweep_of(tags[V.VIEW_TAG_PREFIX + "mixsweep-smoke-mix.pairing"]) == V.trials_filter("smoke")

    write_views(client, exp, two, now_ms=200)  # unchanged: nothing rewritten
    assert _view_tags(client, exp) == tags

    one = spec_like(factors=("mix.preset",), metric="best/top1_err")
    write_views(client, exp, one, now_ms=300)
    tags = _view_tags(client, exp)
    assert set(tags) == {V.VIEW_TAG_PREFIX + k for k in ("mixsweep-smoke-2-mix.preset", "users-own",
                                                          "mixsweep-smoke-mix.preset")}
    data = json.loads(tags[V.VIEW_TAG_PREFIX + "mixsweep-smoke-mix.preset"])
    assert (data["createdAt"], data["updatedAt"]) == (100, 300)  # overwritten, not duplicated
    assert V.decode_state(data["state"])["orderByKey"] == "metrics.`best/top1_err`"


def test_write_views_never_passes_the_ui_limit(store):
    client, exp = store
    for i in range(39):
        client.set_experiment_tag(exp, f"{V.VIEW_TAG_PREFIX}user-{i}", json.dumps({"name": str(i), "state": "{}"}))
    written = write_views(client, exp, spec_like(factors=("a", "b")))
    assert len(written) == 1 and len(_view_tags(client, exp)) == 40


def test_publish_sets_the_sweep_run_description(store, tmp_path):
    client, exp = store
    run = client.create_run(exp, tags={TAG_SWEEP: "smoke", TAG_ROLE: "sweep"}).info.run_id
    spec = spec_like()
    publish(client, exp, spec, run)
    note = client.get_run(run).data.tags[TAG_NOTE]
    assert note.endswith("demo") and "viewStateShareKey=mixsweep-smoke-mix.preset" in note
    trials = pd.DataFrame({"run_hash": list("abcd"), "mix.preset": ["none", "none", "mixup", "mixup"],
                           "seed": [0, 1, 0, 1], "final/top1_err": [12.0, 13.0, 20.0, 21.5], "status": ["FINISHED"] * 4,
                           })
    report = write_report(trials, {"mix.preset": ["none", "mixup"]}, "final/top1_err", "min", tmp_path, n_boot=200)
    summary = report["summary.md"].read_text()
    publish(client, exp, spec, run, summary=summary)
    note = client.get_run(run).data.tags[TAG_NOTE]
    assert summary.strip() in note and "### mix.preset" in note and "| **none (ref)** | 2 | **12.50 ± 0.71** |" in note
    publish(client, exp, spec, run)  # a later `run` keeps the report's table
    assert summary.strip() in client.get_run(run).data.tags[TAG_NOTE]


def test_search_trials_are_numbered_in_start_order_once(store):
    client, exp = store
    spec = spec_like(name="opt", factors=(), space=("optim.lr",))
    sweep = client.create_run(exp, tags={TAG_SWEEP: "opt", TAG_ROLE: "sweep"}).info.run_id
    runs = [client.create_run(exp, start_time=1000 + 10 * i, tags={TAG_SWEEP: "opt", TAG_ROLE: "trial"}).info.run_id
            for i in (2, 0, 1)]
    client.create_run(exp, start_time=999, tags={TAG_SWEEP: "other", TAG_ROLE: "trial"})  # another sweep's trial
    publish(client, exp, spec, sweep)
    publish(client, exp, spec, sweep)  # again: the numbers stay, nothing is logged twice
    numbers = [client.get_metric_history(r, V.TRIAL_NUMBER) for r in runs]
    assert [[m.value for m in h] for h in numbers] == [[3.0], [1.0], [2.0]]
    charts = {c["uuid"]: c for c in V.views_for_spec(spec)[0].state["compareRunCharts"]}
    assert charts["vs-trial"]["xaxis"] == {"key": V.TRIAL_NUMBER, "type": "METRIC"}
    assert charts["vs-trial"]["yaxis"] == {"key": "final/top1_err", "type": "METRIC"}

"""Saved MLflow UI views of a sweep: one ready-made comparison per question the sweep asks.

MLflow 3.17's experiment page opens a "shared view" from an experiment tag
`mlflow.sharedViewState.<id>` whose value is a JSON envelope `{"name", "createdAt", "updatedAt",
"state"}`, `state` being the page's own state as JSON text (or `"deflate;" + base64(zlib(json))`),
via `#/experiments/<exp>/runs?viewStateShareKey=<id>&workflowType=machine_learning`
(`&compareRunsMode=CHART` for the chart view). Without `workflowType=machine_learning` the UI
opens its GenAI pages. A tag holds at most 20,000 characters; the UI stops saving new views past
40 per experiment. State keys the UI honours (checked in headless Chromium, see
tests/test_views_browser.py): `searchFilter`, `orderByKey`, `orderByAsc`, `selectedColumns`,
`groupBy`, `useGroupedValuesInCharts`, `chartsSearchFilter`, `compareRunSections`,
`compareRunCharts`; `runsExpanded` and `columnWidths` are ignored.

Everything here is pure (no MLflow import): `sweep_views(spec)` builds the views, `envelope`
serialises one, `view_url` links to it. `orchestrator/mlflow_views.py` writes them.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from trainables.metrics import FINAL_METRICS, TEST_ERR, epoch_curve
from trainables.tracking import TAG_ROLE, TAG_SWEEP

from .tracking import is_server

#: experiment-tag prefix of the UI's saved views (MLflow's own constant)
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
#: our views' ids all start with this, so reruns overwrite them and stale ones can be pruned
OUR_PREFIX = "mixsweep-"
MAX_TAG_CHARS = 20_000
MAX_VIEWS_PER_EXPERIMENT = 40
#: the metric that numbers a search's trials in start order (1, 2, ...): the x axis of metric vs trial (the UI's
#: scatter reads only params and metrics); `mlflow_views.number_search_trials` logs it
TRIAL_NUMBER = "search/trial"
ALL_FACTORS = "all-factors"
SEARCH = "search"
SECTION_ID = "mixsweep"
#: the chart sections the UI makes from the trials' metric prefixes (trainables' metric names; `train/` has
#: only the loss, which is ours; an empty section would still show)
OTHER_SECTIONS = ("best", "cost", "final", "mix", "robust", "search", "test", "throughput", "time", "Model metrics")


@dataclass(frozen=True)
class View:
    """One saved view: its share key (`id`), the name the UI lists, and the page state."""

    id: str
    name: str
    state: dict[str, Any] = field(hash=False)


def slug(text: str) -> str:
    """A share key part: characters MLflow tag keys and URLs take as they are (`mix.preset` stays)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def view_id(sweep: str, question: str) -> str:
    """`mixsweep-<sweep>-<factor>`: stable, so a rerun overwrites the same tag."""
    return f"{OUR_PREFIX}{slug(sweep)}-{slug(question)}"


def has_our_id(tag_key: str, sweep: str) -> bool:
    """Whether an experiment tag's key is one we would give a view of `sweep` (`mixsweep-smoke-2-...` also
    matches for `smoke`: the view's filter tells the two apart, see `mlflow_views.write_views`)."""
    return tag_key.startswith(f"{VIEW_TAG_PREFIX}{OUR_PREFIX}{slug(sweep)}-")


def trials_filter(sweep: str) -> str:
    return f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_ROLE}` = 'trial'"


def param_column(key: str) -> str:
    return f"params.`{key}`"


def metric_column(key: str) -> str:
    return f"metrics.`{key}`"


def metric_columns(metric: str) -> list[str]:
    """The sweep metric first, then what every trial reports at its end (best/, robust/, cost/)."""
    return [metric_column(m) for m in dict.fromkeys([metric, *FINAL_METRICS])]


def group_by(keys: Sequence[str]) -> dict[str, Any] | None:
    """Group the table (and the charts) by the params `keys`, averaging over the rest (the seeds)."""
    if not keys:
        return None
    return {"aggregateFunction": "average", "groupByKeys": [{"mode": "param", "groupByData": k} for k in keys]}


def _section() -> list[dict[str, Any]]:
    """Our section first and open; the sections the UI generates for every other metric prefix after it,
    collapsed (with `isAccordionReordered` the UI keeps this order instead of sorting by name)."""
    ours = {"uuid": SECTION_ID, "name": "mixsweep", "display": True, "isReordered": True, "deleted": False,
            "isGenerated": False}
    return [ours] + [{"uuid": f"{SECTION_ID}-{slug(name)}", "name": name, "display": False, "isReordered": False,
                      "deleted": False, "isGenerated": True} for name in OTHER_SECTIONS]


def _chart(kind: str, uuid: str, **config: Any) -> dict[str, Any]:
    return {"uuid": uuid, "type": kind, "runsCountToCompare": 100, "metricSectionId": SECTION_ID,
            "deleted": False, "isGenerated": False, **config}


def line_chart(metric: str, uuid: str) -> dict[str, Any]:
    """Per-epoch curves of `metric` (x = step = epoch); grouped, the UI draws the mean with a min-max band."""
    return _chart("LINE", uuid, metricKey=metric, selectedMetricKeys=[metric], xAxisKey="step",
                  xAxisScaleType="linear", scaleType="linear", lineSmoothness=0, useGlobalXaxisKey=False,
                  useGlobalLineSmoothing=False, range={}, yAxisKey="metric", yAxisExpressions=[],
                  ignoreOutliers=False, selectedXAxisMetricKey="")


def bar_chart(metric: str, uuid: str) -> dict[str, Any]:
    return _chart("BAR", uuid, metricKey=metric, selectedMetricKeys=[metric])


def parallel_chart(params: Sequence[str], metric: str, uuid: str) -> dict[str, Any]:
    return _chart("PARALLEL", uuid, selectedParams=list(params), selectedMetrics=[metric], showAllRuns=True)


def scatter_chart(x: tuple[str, str], y: tuple[str, str], uuid: str) -> dict[str, Any]:
    """`x`, `y`: (key, "METRIC" | "PARAM"), the only axis kinds the UI's scatter reads."""
    return _chart("SCATTER", uuid, xaxis={"key": x[0], "type": x[1]}, yaxis={"key": y[0], "type": y[1]})


def _runs_page(sweep: str, params: Sequence[str], metric: str, mode: str, by: Sequence[str],
               charts: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs page over the sweep's trials: `params` + seed + the metrics as columns, sorted by the sweep
    metric in its mode, grouped by `by` (ungrouped when empty), `charts` in our chart section."""
    return {
        "searchFilter": trials_filter(sweep),
        "orderByKey": metric_column(metric),
        "orderByAsc": mode == "min",
        "lifecycleFilter": "Active",
        "selectedColumns": [param_column(p) for p in params] + [param_column("seed")] + metric_columns(metric),
        "groupBy": group_by(by),
        "groupsExpanded": {},
        "useGroupedValuesInCharts": bool(by),
        "hideEmptyCharts": True,
        "chartsSearchFilter": "",
        "isAccordionReordered": True,
        "compareRunSections": _section(),
        "compareRunCharts": charts,
    }


def _curve(metric: str) -> str:
    """The per-epoch curve to draw for `metric`; the test error for one known only at the end (robust/)."""
    return epoch_curve(metric) or TEST_ERR


def grid_state(sweep: str, factors: Sequence[str], metric: str, mode: str, by: Sequence[str]) -> dict[str, Any]:
    """The runs page for the trials of a grid, grouped by `by`, sorted by the sweep metric."""
    curve = _curve(metric)
    charts = [line_chart(curve, "curve")]
    if curve != "train/loss":
        charts.append(line_chart("train/loss", "train-loss"))
    charts.append(bar_chart(metric, "final"))
    return _runs_page(sweep, factors, metric, mode, by, charts)


def search_state(sweep: str, space: Sequence[str], metric: str, mode: str) -> dict[str, Any]:
    """The trials of a search, ungrouped: parallel coordinates over the searched params, the metric against
    the trial number (did the search improve?) and against each param (scatter), the per-epoch curves."""
    charts = [parallel_chart(space, metric, "parallel"),
              scatter_chart((TRIAL_NUMBER, "METRIC"), (metric, "METRIC"), "vs-trial"),
              line_chart(_curve(metric), "curve")]
    charts += [scatter_chart((p, "PARAM"), (metric, "METRIC"), f"vs-{slug(p)}") for p in space]
    return _runs_page(sweep, space, metric, mode, (), charts)


def sweep_views(sweep: str, *, factors: Sequence[str] = (), space: Sequence[str] = (), metric: str,
                mode: str) -> list[View]:
    """The views of one sweep, most useful first: a grid gets one view grouped by all its factors (the
    arms), then one per factor (only when there are several); a search gets one ungrouped view."""
    if space:
        return [View(view_id(sweep, SEARCH), f"{sweep}: search over {', '.join(space)}",
                     search_state(sweep, space, metric, mode))]
    factors = list(factors)
    views = [View(view_id(sweep, ALL_FACTORS if len(factors) != 1 else factors[0]),
                  f"{sweep}: by {' x '.join(factors) or 'trial'}", grid_state(sweep, factors, metric, mode, factors))]
    if len(factors) > 1:
        views += [View(view_id(sweep, f), f"{sweep}: by {f}", grid_state(sweep, factors, metric, mode, [f]))
                  for f in factors]
    return views


def views_for_spec(spec) -> list[View]:
    """`sweep_views` of a SweepSpec (a grid's factors, or an Optuna search's space)."""
    space = list(spec.search.space) if spec.search.algorithm != "grid" else []
    return sweep_views(spec.name, factors=list(spec.factors), space=space, metric=spec.metric, mode=spec.mode)


def encode_state(state: dict[str, Any], limit: int = MAX_TAG_CHARS - 500) -> str:
    """The state as JSON text, deflated (`deflate;` + base64 zlib) when too long for one tag."""
    text = json.dumps(state, separators=(",", ":"))
    if len(text) <= limit:
        return text
    packed = "deflate;" + base64.b64encode(zlib.compress(text.encode(), 9)).decode()
    if len(packed) > limit:
        raise ValueError(f"view state of {len(text)} characters does not fit an MLflow tag even deflated "
                         f"({len(packed)} > {limit})")
    return packed


def decode_state(value: str) -> dict[str, Any]:
    """Inverse of `encode_state` (for tests and for reading a view back)."""
    if value.startswith("deflate;"):
        value = zlib.decompress(base64.b64decode(value[len("deflate;"):])).decode()
    return json.loads(value)


def envelope(view: View, *, created_ms: int, updated_ms: int) -> str:
    """The experiment tag's value: `{"name", "createdAt", "updatedAt", "state"}` as JSON."""
    text = json.dumps({"name": view.name, "createdAt": created_ms, "updatedAt": updated_ms,
                       "state": encode_state(view.state)}, separators=(",", ":"))
    if len(text) > MAX_TAG_CHARS:
        raise ValueError(f"view {view.id}: {len(text)} characters, over MLflow's {MAX_TAG_CHARS} per tag")
    return text


def fit_views(views: Sequence[View], others: int, limit: int = MAX_VIEWS_PER_EXPERIMENT) -> list[View]:
    """The first views that fit next to `others` saved views of the experiment (the UI's limit)."""
    return list(views[: max(0, limit - others)])


def ui_base(tracking_uri: str, default: str = "http://127.0.0.1:5000") -> str:
    """Where the UI of a store is: the tracking server itself, or `default` (a local `mixsweep ui`)."""
    if is_server(tracking_uri):
        return tracking_uri.rstrip("/")
    return default.rstrip("/")


def view_url(base: str, experiment_id: str, view: str, *, charts: bool = False) -> str:
    """The link that opens saved view `view` on the model-training (not GenAI) runs page."""
    url = (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={quote(view, safe='.-_')}"
           "&workflowType=machine_learning")
    return url + "&compareRunsMode=CHART" if charts else url


def view_links(base: str, experiment_id: str, views: Iterable[View]) -> list[tuple[str, str, str]]:
    """(name, table URL, chart URL) per view."""
    return [(v.name, view_url(base, experiment_id, v.id), view_url(base, experiment_id, v.id, charts=True))
            for v in views]

"""Writes a sweep's saved UI views (`orchestrator/views.py`) and its run description into MLflow.

`publish(client, experiment_id, spec, sweep_run_id)` is idempotent: each view is one experiment tag
with a stable id, so `run`, `resume`, `report` and `ui` overwrite the same tags (keeping their
`createdAt`), delete this sweep's views that the spec no longer asks for, and never make the
experiment hold more saved views than the UI accepts. The sweep run's description
(`mlflow.note.content`, GitHub-flavoured Markdown in the UI) gets the spec's description, links to
the views and, after `mixsweep report`, the report's summary table.

Nothing here ever fails a sweep: `publish_quietly` reports a failing store as a warning.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from trainables.tracking import TAG_NOTE

from . import tracking
from .views import (
    TRIAL_NUMBER,
    VIEW_TAG_PREFIX,
    View,
    decode_state,
    envelope,
    fit_views,
    has_our_id,
    trials_filter,
    view_links,
    views_for_spec,
)

#: the report's summary table (Markdown) on the sweep run, kept for the descriptions later runs write
SUMMARY_TAG = "mixsweep.report_summary"
MAX_NOTE_CHARS = tracking.MAX_TAG_CHARS
ABOUT_KEPT = 1000  #: characters of the spec's description a long summary leaves in the run's description
LINKS_HEADING = "## Compare in the MLflow UI"
SUMMARY_HEADING = "## Summary"
ABOUT_HEADING = "## About this sweep"


def _sweep_of(value: str) -> str | None:
    """The sweep whose trials a saved view shows (from its searchFilter), None when it is not ours."""
    try:
        state = decode_state(json.loads(value)["state"])
        return state.get("searchFilter")
    except (ValueError, KeyError, TypeError):
        return None


def write_views(client, experiment_id: str, spec, *, now_ms: int | None = None) -> list[View]:
    """Write (create or overwrite) the sweep's views, prune its stale ones; the views written."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    tags = dict(client.get_experiment(experiment_id).tags)
    mine = trials_filter(spec.name)
    # ours: our id AND this sweep's filter (a user's copy of one of our views keeps the filter, not the id)
    ours = {k: v for k, v in tags.items() if has_our_id(k, spec.name) and _sweep_of(v) == mine}
    others = sum(k.startswith(VIEW_TAG_PREFIX) for k in tags) - len(ours)
    views = fit_views(views_for_spec(spec), others)
    for view in views:
        key = VIEW_TAG_PREFIX + view.id
        old = _read(tags.get(key))
        if old and old.get("name") == view.name and _same_state(old.get("state"), view.state):
            continue  # unchanged: keep updatedAt (no churn on every report)
        created = old.get("createdAt", now_ms) if old else now_ms
        client.set_experiment_tag(experiment_id, key, envelope(view, created_ms=created, updated_ms=now_ms))
    keep = {VIEW_TAG_PREFIX + v.id for v in views}
    for key in sorted(set(ours) - keep):
        client.delete_experiment_tag(experiment_id, key)
    return views


def _read(value: str | None) -> dict[str, Any] | None:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def _same_state(text: Any, state: dict[str, Any]) -> bool:
    try:
        return decode_state(text) == state
    except (ValueError, TypeError):
        return False


def links_markdown(experiment_id: str, views: Sequence[View]) -> str:
    """Relative links (`#/experiments/...`): they work on whatever host serves the UI."""
    lines = [LINKS_HEADING, ""]
    for name, table, chart in view_links("", experiment_id, views):
        lines.append(f"- {name}: [table]({table.lstrip('/')}) · [charts]({chart.lstrip('/')})")
    return "\n".join(lines)


def fit(text: str, room: int, marker: str) -> str:
    """`text`, or as much of it as fits in `room` characters with `marker` after it ("" when not even that)."""
    if len(text) <= room:
        return text
    keep = room - len(marker)
    return text[:keep].rstrip() + marker if keep > 0 else ""


def description(spec, experiment_id: str, views: Sequence[View], summary: str = "") -> str:
    """The sweep run's description, within MLflow's tag limit (`MAX_NOTE_CHARS`): the links first (the UI folds
    long descriptions), the report's summary (when there is one), then the spec's description. What does not
    fit is cut, with a marker: the spec's description first (down to `ABOUT_KEPT` characters), then the
    summary's last rows, then the rest of the spec's description."""
    sep, marker = "\n\n", f"\n\n… (cut to fit MLflow's {MAX_NOTE_CHARS:,}-character limit"
    links = links_markdown(experiment_id, views)
    about = spec.description.strip()
    about_frame = len(sep) + len(ABOUT_HEADING) + len(sep)
    room = MAX_NOTE_CHARS - len(links)
    parts = [links]
    if summary:
        tail = f"(`mixsweep report {spec.name}` refreshes it; details in the run's `report/` artifacts)"
        reserved = about_frame + min(len(about), ABOUT_KEPT) if about else 0
        frame = len(sep) + len(SUMMARY_HEADING) + 2 * len(sep) + len(tail)
        cut = fit(summary, room - reserved - frame, marker + ")")
        if cut:
            parts.append(f"{SUMMARY_HEADING}{sep}{cut}{sep}{tail}")
            room -= len(sep) + len(parts[-1])
    if about:
        cut = fit(about, room - about_frame, marker + ": the whole description is in the run's spec.yaml)")
        if cut:
            parts.append(f"{ABOUT_HEADING}{sep}{cut}")
    return sep.join(parts)[:MAX_NOTE_CHARS]


def _old_summary(client, run_id: str) -> str:
    """The summary table the last report left on the sweep run (a later `run` keeps it in the description)."""
    return client.get_run(run_id).data.tags.get(SUMMARY_TAG, "")


def number_search_trials(client, experiment_id: str, spec) -> None:
    """Log `search/trial` = 1, 2, ... (in the order the trial runs started) on the runs of a search that do not
    have their number yet: the x axis of its metric-vs-trial chart."""
    runs = sorted(tracking.trial_runs(client, experiment_id, spec.name),
                  key=lambda r: (r.info.start_time, r.info.run_id))
    for number, run in enumerate(runs, 1):
        if run.data.metrics.get(TRIAL_NUMBER) != number:
            client.log_metric(run.info.run_id, TRIAL_NUMBER, number)


def publish(client, experiment_id: str, spec, sweep_run_id: str, *, summary: str = "") -> list[View]:
    """The views, and the sweep run's description with their links (and `summary`, the report's Markdown
    tables, or the last report's when empty)."""
    views = write_views(client, experiment_id, spec)
    if spec.search.algorithm != "grid":
        number_search_trials(client, experiment_id, spec)
    if summary:
        summary = summary[:MAX_NOTE_CHARS]
        client.set_tag(sweep_run_id, SUMMARY_TAG, summary)
    else:
        summary = _old_summary(client, sweep_run_id)
    client.set_tag(sweep_run_id, TAG_NOTE, description(spec, experiment_id, views, summary))
    return views


def publish_quietly(client, experiment_id: str, spec, sweep_run_id: str, *, summary: str = "",
                    out: TextIO | None = None) -> list[View]:
    """`publish`; a failing store is a warning, never an error (the views are extras)."""
    out = out or sys.stderr
    try:
        views = publish(client, experiment_id, spec, sweep_run_id, summary=summary)
    except Exception as exc:  # noqa: BLE001 - the sweep's results matter, its UI views do not
        print(f"[mixsweep] warning: could not save the MLflow UI views: {type(exc).__name__}: {str(exc)[:200]}",
              file=out)
        return []
    return views

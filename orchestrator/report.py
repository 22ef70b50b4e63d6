"""The sweep report: markdown table, Figure-3-style bar chart and CSVs from the statistics.

`write_report(trials, factors, metric, mode, out_dir)` renders what `orchestrator.stats.summarize`
computes; `report_sweep(name, storage, out)` (the `mixsweep report` command) reads the trials from
MLflow and logs the files on the sweep run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.files import atomic_write_text

from . import tracking
from .errors import UserError
from .membership import current_hashes
from .mlflow_views import publish_quietly
from .spec import is_grid, load_spec
from .stats import COST_COLUMN, MAX_LISTED_EXCLUDED, FactorSummary, Report, normalize_level, summarize
from .storage import SweepState, sweep_paths

# ------------------------------------------------------------------------------------- rendering


def _fmt_num(x: float, digits: int = 2) -> str:
    return "—" if not np.isfinite(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    """p-value with 3 significant digits, '<0.001' below that, '—' when not computable."""
    if not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:#.3g}"


def _fmt_cost(by_device: Sequence[tuple[str, float]]) -> str:
    if not by_device:
        return "—"
    hours = " + ".join(f"{s / 3600:.2f} {lab}-h" for lab, s in by_device)
    secs = " + ".join(f"{s:,.0f} {lab}-s" for lab, s in by_device)
    return f"{hours} ({secs})"


def _md(value: Any) -> str:
    """A level or message as a markdown table cell: pipes escaped, one line."""
    text = "(missing)" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render_markdown(report: Report) -> str:
    """The report as markdown: a header, one section (table + excluded trials) per factor, notes."""
    better = "lower is better" if report.mode == "min" else "higher is better"
    n_excl = len(report.excluded)
    by_status = ", ".join(f"{c} {s}" for s, c in report.status_counts)
    counts = (f"{report.n_trials} trials: {report.n_finished} finished with a finite metric (in the "
              f"statistics), {n_excl} failed/incomplete" + (f" ({by_status})" if by_status else ""))
    if report.cost_by_device:
        cost = f"Cost: {_fmt_cost(report.cost_by_device)} in total"
        if report.excluded_cost_by_device:
            cost += f", of which {_fmt_cost(report.excluded_cost_by_device)} in failed/incomplete trials"
    else:
        cost = f"Cost: unknown (no finite `{COST_COLUMN}`)"
    lines = [
        f"# Ablation report: `{report.metric}`",
        "",
        f"Metric `{report.metric}`, mode `{report.mode}` ({better}). {counts}. {cost}.",
        "",
        "Δ = level − reference (the first listed level), paired over matching seeds: a pair has every other "
        f"factor and the seed equal. 95% CIs: percentile bootstrap ({report.n_boot} resamples, seed "
        f"{report.seed}). p (t): paired t-test; p (Wilcoxon): Wilcoxon signed-rank test; **p (Holm): "
        "Holm–Bonferroni correction of the paired t-test p-values** across the non-reference levels of each "
        f"factor. Best level ({'lowest' if report.mode == 'min' else 'highest'} mean) in bold. "
        "Cost includes failed trials.",
        "",
    ]
    if report.n_finished == 0:
        lines += [f"**No finished trials with a finite `{report.metric}`: nothing to compare.**", ""]
    else:
        for fs in report.factors:
            lines += _factor_section(fs)
    if report.excluded:
        lines += [f"## Failed / incomplete trials ({n_excl})", ""]
        for e in report.excluded[:MAX_LISTED_EXCLUDED]:
            where = ", ".join(f"{f}={v}" for f, v in e.levels)
            lines.append(f"- `{e.run_hash}` {e.status} — {where}, seed={e.seed}: {_one_line(e.reason)}")
        if n_excl > MAX_LISTED_EXCLUDED:
            lines.append(f"- … and {n_excl - MAX_LISTED_EXCLUDED} more (see trials.csv)")
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(lines)


def render_summary(report: Report) -> str:
    """The per-factor tables of `render_markdown` alone, each under a `### <factor>` heading (they sit under a
    `## Summary` heading in the sweep run's description)."""
    lines = []
    for fs in report.factors:
        section = _factor_section(fs)
        lines += ["#" + section[0], *section[1:]]
    return "\n".join(lines).strip() + "\n"


def _factor_section(fs: FactorSummary) -> list[str]:
    comp = {normalize_level(c.level): c for c in fs.comparisons}
    lines = [
        f"## {fs.name}",
        "",
        "| level | n | mean ± std | 95% CI | Δ vs ref [CI] | p (t) | p (Wilcoxon) | p (Holm) | cost |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for ls in fs.levels:
        name = _md(ls.level) + (" (ref)" if ls.is_reference else "") + ("" if ls.listed else " (not in spec)")
        mean = _fmt_num(ls.mean) + (f" ± {_fmt_num(ls.std)}" if np.isfinite(ls.std) else "")
        if ls.is_best:
            name, mean = f"**{name}**", f"**{mean}**"
        n = str(ls.n) + (f" (+{ls.n_excluded} excl.)" if ls.n_excluded else "")
        ci = f"[{_fmt_num(ls.ci_low)}, {_fmt_num(ls.ci_high)}]" if np.isfinite(ls.ci_low) else "—"
        c = comp.get(normalize_level(ls.level))
        if ls.is_reference:
            delta, p_t, p_w, p_h = "ref", "", "", ""
        elif c is None or c.n_pairs == 0:
            delta, p_t, p_w, p_h = "no pairs", "—", "—", "—"
        else:
            delta = f"{c.mean_diff:+.2f}"
            if np.isfinite(c.ci_low):
                delta += f" [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
            delta += f" ({c.n_pairs} pair{'s' if c.n_pairs != 1 else ''})"
            p_t, p_w, p_h = _fmt_p(c.p_t), _fmt_p(c.p_wilcoxon), _fmt_p(c.p_holm)
        lines.append(f"| {name} | {n} | {mean} | {ci} | {delta} | {p_t} | {p_w} | {p_h} | "
                     f"{_fmt_cost(ls.cost_by_device)} |")
    lines.append("")
    if len(fs.levels) == 1:
        lines += ["Single level: nothing to compare.", ""]
    n_of = {normalize_level(ls.level): ls.n for ls in fs.levels}  # levels without finished trials: the table says so
    unpaired = [c for c in fs.comparisons
                if (c.n_unpaired or c.n_unpaired_reference) and n_of[normalize_level(c.level)] > 0]
    for c in unpaired:
        parts = []
        if c.n_unpaired:
            parts.append(f"{c.n_unpaired} finished trial(s) without a finished reference partner")
        if c.n_unpaired_reference:
            parts.append(f"{c.n_unpaired_reference} reference trial(s) without a finished partner here")
        lines.append(f"- {_md(c.level)}: {c.n_pairs} pairs; unpaired: {'; '.join(parts)}.")
    excluded = [ls for ls in fs.levels if ls.n_excluded]
    if excluded:
        lines.append("- Failed/incomplete, by level: "
                     + ", ".join(f"{_md(ls.level)} ×{ls.n_excluded}" for ls in excluded)
                     + " (listed below).")
    if unpaired or excluded:
        lines.append("")
    return lines


def summary_frame(report: Report) -> pd.DataFrame:
    """One row per factor × level with every statistic (what summary.csv holds); levels as str."""
    labels = sorted({lab for fs in report.factors for ls in fs.levels for lab, _ in ls.cost_by_device})
    rows = []
    for fs in report.factors:
        comp = {normalize_level(c.level): c for c in fs.comparisons}
        for ls in fs.levels:
            c = comp.get(normalize_level(ls.level))
            costs = dict(ls.cost_by_device)
            rows.append({
                "metric": report.metric, "mode": report.mode,
                "factor": fs.name, "level": "(missing)" if ls.level is None else str(ls.level),
                "is_reference": ls.is_reference, "is_best": ls.is_best, "listed": ls.listed,
                "n": ls.n, "n_excluded": ls.n_excluded,
                "mean": ls.mean, "std": ls.std, "ci_low": ls.ci_low, "ci_high": ls.ci_high,
                "cost_s": ls.cost_s, "cost_h": ls.cost_s / 3600,
                **{f"cost_{lab}_s": costs.get(lab, 0.0) for lab in labels},
                "n_pairs": c.n_pairs if c else math.nan,
                "n_unpaired": c.n_unpaired if c else math.nan,
                "n_unpaired_reference": c.n_unpaired_reference if c else math.nan,
                "diff_mean": c.mean_diff if c else math.nan,
                "diff_ci_low": c.ci_low if c else math.nan,
                "diff_ci_high": c.ci_high if c else math.nan,
                "p_t": c.p_t if c else math.nan,
                "p_wilcoxon": c.p_wilcoxon if c else math.nan,
                "p_holm": c.p_holm if c else math.nan,
            })
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------- plotting

_REF_COLOR, _LEVEL_COLOR, _DOT_COLOR = "#bdbdbd", "#4c72b0", "#222222"


def plot_factors(report: Report, path: str | Path) -> Path:
    """One PNG, one panel per factor: level means as bars, 95% CI whiskers, trials as dots.

    The reference bar is grey and hatched, the best level's tick label bold, '*' marks Holm p < 0.05.
    The y-axis is zoomed to the data (bars do not start at 0: differences are fractions of a percent).
    Uses a bare `matplotlib.figure.Figure` (Agg canvas), never pyplot, so no global state or display.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(report.factors)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    widest = max(len(fs.levels) for fs in report.factors)
    width = max(7.0, max(4.0, 0.55 * widest + 2.0) * ncols)  # room for the title and the legend
    fig = Figure(figsize=(width, 3.6 * nrows + 0.8), layout="constrained")
    for i, fs in enumerate(report.factors):
        _plot_factor(fig.add_subplot(nrows, ncols, i + 1), fs, report)
    better = "lower" if report.mode == "min" else "higher"
    fig.suptitle(f"{report.metric} ({better} is better)\nmean over trials, {report.n_finished} finished",
                 fontsize=11)
    handles = [
        Patch(facecolor=_REF_COLOR, edgecolor="black", hatch="///", label="reference level"),
        Patch(facecolor=_LEVEL_COLOR, edgecolor="black", label="other levels"),
        Line2D([], [], color="black", marker="_", markersize=10, linewidth=1.2, label="95% bootstrap CI"),
        Line2D([], [], color=_DOT_COLOR, marker="o", markersize=3.5, linestyle="", label="trials (seeds)"),
        Line2D([], [], linestyle="", label="* Holm p < 0.05 vs reference; bold tick = best"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles) if width >= 11 else 3,
               frameon=False, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def _plot_factor(ax, fs: FactorSummary, report: Report) -> None:
    x = np.arange(len(fs.levels))
    sig = {normalize_level(c.level) for c in fs.comparisons if np.isfinite(c.p_holm) and c.p_holm < 0.05}
    ys: list[float] = []
    for xi, ls in zip(x, fs.levels):
        if ls.n == 0:
            continue
        ref = ls.is_reference
        ax.bar(xi, ls.mean, width=0.6, zorder=1, linewidth=0.8, edgecolor="black",
               color=_REF_COLOR if ref else _LEVEL_COLOR, hatch="///" if ref else None)
        ys += [ls.mean, *ls.values]
        if np.isfinite(ls.ci_low):
            yerr = [[max(0.0, ls.mean - ls.ci_low)], [max(0.0, ls.ci_high - ls.mean)]]
            ax.errorbar(xi, ls.mean, yerr=yerr, fmt="none", ecolor="black", elinewidth=1.2, capsize=4,
                        zorder=2)
            ys += [ls.ci_low, ls.ci_high]
        offsets = np.linspace(-0.17, 0.17, ls.n) if ls.n > 1 else np.zeros(1)
        ax.scatter(xi + offsets, ls.values, s=9, color=_DOT_COLOR, alpha=0.8, linewidths=0, zorder=3)
    if ys:
        lo, hi = min(ys), max(ys)
        span = hi - lo if hi > lo else max(abs(hi) * 0.05, 0.5)
        ax.set_ylim(lo - 0.25 * span, hi + 0.3 * span)
        for xi, ls in zip(x, fs.levels):
            if normalize_level(ls.level) in sig:
                top = max([ls.mean, *ls.values] + ([ls.ci_high] if np.isfinite(ls.ci_high) else []))
                ax.annotate("*", (xi, top + 0.05 * span), ha="center", va="bottom", fontsize=13)
            if ls.n == 0:
                ax.text(xi, 0.03, "no data", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        fontsize=7, color="0.4", rotation=90)
    else:
        ax.text(0.5, 0.5, "no finished trials", transform=ax.transAxes, ha="center", va="center", color="0.4")
    names = ["(missing)" if ls.level is None else str(ls.level) for ls in fs.levels]
    rotate = max(map(len, names)) > 8 or len(names) > 5
    ax.set_xticks(x, names, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor", fontsize=8)
    for tick, ls in zip(ax.get_xticklabels(), fs.levels):
        if ls.is_best:
            tick.set_fontweight("bold")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_title(fs.name, fontsize=10)
    ax.set_ylabel(report.metric, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5, zorder=0)
    ax.set_axisbelow(True)


# ----------------------------------------------------------------------------------------- files


def write_report(
    trials: pd.DataFrame,
    factors: Mapping[str, Sequence],
    metric: str,
    mode: str,
    out_dir: str | Path,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, Path]:
    """Summarize and write report.md, factors.png, trials.csv (all trials, all columns), summary.csv and
    summary.md (the per-factor tables alone: the sweep run's description shows them).

    out_dir is created if missing. Returns {file name: absolute path} for the five files.
    """
    report = summarize(trials, factors, metric, mode=mode, n_boot=n_boot, seed=seed)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.md", "factors.png", "trials.csv", "summary.csv", "summary.md")}
    paths["summary.md"].write_text(render_summary(report), encoding="utf-8")
    plot_factors(report, paths["factors.png"])
    trials.to_csv(paths["trials.csv"], index=False)
    summary_frame(report).to_csv(paths["summary.csv"], index=False)
    atomic_write_text(paths["report.md"], render_markdown(report))  # last, whole: it dates the report
    return paths


def write_search_report(trials: pd.DataFrame, space: Sequence[str], metric: str, mode: str,
                        out_dir: str | Path) -> dict[str, Path]:
    """Report of a search (Optuna) sweep: trials ranked by the metric, metric vs each parameter."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if metric not in trials:
        trials = trials.assign(**{metric: np.nan})
    done = trials[(trials["status"] == "FINISHED") & trials[metric].notna()]
    ranked = done.sort_values(metric, ascending=mode == "min")
    lines = [f"# Search report — {metric} ({mode})", "",
             f"{len(done)} finished of {len(trials)} trials.", "",
             "| rank | trial | " + " | ".join(space) + f" | {metric} |", "|---" * (len(space) + 3) + "|"]
    for rank, (_, row) in enumerate(ranked.head(20).iterrows(), 1):
        values = " | ".join(str(row.get(k, "")) for k in space)
        lines.append(f"| {rank} | {row.get('name', row['run_hash'])} | {values} | {row[metric]:.2f} |")
    failed = trials[trials["status"] != "FINISHED"]
    if len(failed):
        lines += ["", "Not finished: " + ", ".join(f"{r['name']} ({r['status']})" for _, r in failed.iterrows())]
    paths = {"report.md": out / "report.md", "trials.csv": out / "trials.csv", "factors.png": out / "factors.png"}
    trials.to_csv(paths["trials.csv"], index=False)
    fig = Figure(figsize=(4 * max(1, len(space)), 3.4), dpi=150, layout="constrained")
    for ax, key in zip(np.atleast_1d(fig.subplots(1, max(1, len(space)))), space):
        x = pd.to_numeric(done[key], errors="coerce") if key in done else pd.Series(dtype=float)
        ax.scatter(x, done[metric], s=14)
        if x.notna().any() and (x > 0).all() and x.max() / max(x.min(), 1e-300) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    fig.savefig(paths["factors.png"])
    atomic_write_text(paths["report.md"], "\n".join(lines) + "\n")  # last, whole: it dates the report
    return paths


def report_sweep(name: str, *, storage: Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """`mixsweep report NAME`: statistics of the sweep's trials from MLflow, written and logged."""
    paths = sweep_paths(storage, name)
    state = SweepState.load(paths)
    spec = load_spec(paths.spec)
    uri = state.tracking_uri
    tracking.check_tracking_uri(uri)
    client = tracking.client(uri)
    tracking.check_sweep_store(client, state, spec.experiment, storage)
    out = Path(out_dir).resolve() if out_dir else paths.report
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out} cannot be created: {exc.strerror or exc}") from None
    try:
        runs = tracking.trial_runs(client, state.experiment_id, name)
    except Exception as exc:  # noqa: BLE001 - the store answered /health but fails
        raise UserError(f"MLflow at {uri} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    current = current_hashes(spec, paths, state.stopped)  # never pool the runs of an earlier version of the spec
    runs = [r for r in runs if r.data.tags.get(tracking.TAG_RUN_HASH) in current]
    if is_grid(spec):
        factors = spec.factor_levels() or {"sweep": [name]}
        frame = tracking.runs_frame(runs, factors)
        levels = {t.run_hash: {**t.levels, "sweep": name} for t in state.trials}
        seen = set(frame["run_hash"]) if len(frame) else set()
        missing = [{"run_hash": t.run_hash, "config_hash": t.config_hash, "name": t.name, "seed": t.seed,
                    "status": "NOT_STARTED", "error": "no MLflow run yet"} for t in state.trials
                   if t.run_hash not in seen]
        frame = pd.concat([frame, pd.DataFrame(missing)], ignore_index=True) if missing else frame
        if not len(frame):
            raise UserError(f"sweep {name!r} has no trials to report")
        for factor in factors:  # the spec's own values, not MLflow's string params
            frame[factor] = [levels.get(h, {}).get(factor, v) for h, v in zip(frame["run_hash"], frame.get(factor))]
        files = write_report(frame, factors, spec.metric, spec.mode, out)
    else:
        frame = tracking.runs_frame(runs, list(spec.search.space))
        if not len(frame):
            raise UserError(f"sweep {name!r} has no trial runs in MLflow yet")
        files = write_search_report(frame, list(spec.search.space), spec.metric, spec.mode, out)
    try:
        for path in files.values():
            client.log_artifact(state.sweep_run_id, str(path), artifact_path="report")
    except Exception as exc:  # noqa: BLE001 - the files are written; say what failed
        raise UserError(f"the report is in {out}, but logging it to MLflow at {uri} failed: "
                        f"{type(exc).__name__}: {str(exc)[:300]}") from None
    summary = files["summary.md"].read_text(encoding="utf-8") if "summary.md" in files else ""
    publish_quietly(client, state.experiment_id, spec, state.sweep_run_id, summary=summary)
    return files

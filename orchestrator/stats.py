"""Seed-aggregated statistics for factorial ablation sweeps: "does factor X matter, which level wins?".

Input is one row per trial (a pandas DataFrame that the MLflow reader builds); this module is pure
pandas/numpy/scipy and imports neither MLflow nor Ray. Rendering (markdown, figure, files) is in
`orchestrator.report`.

Method
------
* Only trials with ``status == "FINISHED"`` and a finite metric enter the statistics. Every other
  trial (FAILED, KILLED, RUNNING, or FINISHED without the metric) is listed as excluded, with its
  factor levels and ``error``.
* Per factor level: n, mean, sample std (ddof=1) and a 95 % percentile bootstrap CI of the mean,
  resampling trials.
* Paired comparison of every level against the reference level (the first level the spec lists):
  trial A (level L) is paired with trial B (reference) when every *other* factor and the seed are
  equal, i.e. seeds and the other factors are blocks. Δ = L − reference, in metric units, with a
  percentile bootstrap CI over the pairs, a paired t-test and a Wilcoxon signed-rank test.
* Holm–Bonferroni correction of the paired t-test p-values across the non-reference levels of each
  factor (each factor is its own family).
* The estimators (bootstrap, tests, Holm; references and edge cases) are in `orchestrator.estimators`.
* Plot in the style of SaliencyMix (Uddin et al., ICLR 2021) Figure 3: bars of level means with CI
  whiskers, one panel per factor, individual trials as dots.

Choices and deviations
----------------------
* Each interval gets its own generator, ``numpy.random.default_rng([seed, crc32(factor/level/kind)])``,
  so an interval does not change when levels or factors are added, removed or reordered, and the row
  order of ``trials`` is irrelevant (values are sorted by seed and blocking key before resampling).
* n < 2 (trials or pairs): std, CIs and p-values are NaN. Percentile bootstrap CIs are too narrow
  for few trials; the tests are the better guide there, and the markdown notes it below n = 10.
  With n pairs the two-sided Wilcoxon p cannot go below 2 / 2**n (0.0625 for 5 pairs); the markdown
  says so when it applies.
* Several finished trials in the same cell (same factors and seed, e.g. a re-run) are averaged
  before pairing, and a note says so. Level statistics count every trial.
* Levels are matched after normalisation: numbers and numeric strings compare as floats (MLflow
  params are strings: "0.1" matches 0.1), everything else as ``str``. A level present in the trials
  but not in the spec is appended after the listed ones (``listed=False``) and noted.
* Cost sums ``cost/device_s`` over *all* trials at a level (failed ones burned device time too),
  split by the ``device`` column ("cuda*" → GPU, "cpu" → CPU) when present.
* No finished trials is not an error: ``summarize`` returns a report with ``n_finished == 0``, the
  markdown says "No finished trials" and still lists the excluded ones (that is when their errors
  matter most). Malformed input (missing columns, unknown mode, duplicate levels) raises ValueError.
"""

from __future__ import annotations

import math
import numbers
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .estimators import bootstrap_mean_ci, holm, paired_tests

__all__ = [
    "ExcludedTrial",
    "FactorSummary",
    "LevelStats",
    "PairedComparison",
    "Report",
    "summarize",
]

FINISHED = "FINISHED"
COST_COLUMN = "cost/device_s"
DEVICE_COLUMN = "device"
ERROR_COLUMN = "error"
REQUIRED_COLUMNS = ("run_hash", "seed", "status")
_MISSING = ("missing",)
MAX_LISTED_EXCLUDED = 50


# --------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LevelStats:
    """Statistics of one level of one factor over its finished trials."""

    level: Any  # the level as the spec lists it (or as found in the trials when not listed)
    n: int  # finished trials with a finite metric at this level
    mean: float  # mean of the metric (NaN when n == 0)
    std: float  # sample standard deviation, ddof=1 (NaN when n < 2)
    ci_low: float  # lower end of the 95 % percentile bootstrap CI of the mean (NaN when n < 2)
    ci_high: float  # upper end of that CI (NaN when n < 2)
    values: tuple[float, ...]  # the metric of each finished trial, ordered by seed
    seeds: tuple[Any, ...]  # the seed of each of those trials, same order as `values`
    n_excluded: int  # failed / killed / running / metric-less trials at this level
    cost_s: float  # summed cost/device_s over all trials at this level (NaN without a cost column)
    cost_by_device: tuple[tuple[str, float], ...]  # the same sum split by device label ("GPU", "CPU")
    is_reference: bool  # the first level listed in the spec
    is_best: bool  # lowest (mode="min") or highest (mode="max") mean among levels with n > 0
    listed: bool  # False for a level found in the trials but missing from the spec


@dataclass(frozen=True)
class PairedComparison:
    """One non-reference level against the reference, paired over matching seeds and other factors."""

    level: Any  # the compared level
    reference: Any  # the reference level (first listed)
    n_pairs: int  # cells (other factors + seed) where both have a finished trial
    n_unpaired: int  # cells of `level` whose reference partner is missing or failed
    n_unpaired_reference: int  # cells of the reference whose `level` partner is missing or failed
    diffs: tuple[float, ...]  # level − reference for each pair, ordered by cell
    mean_diff: float  # mean of `diffs`, in metric units (NaN without pairs)
    ci_low: float  # lower end of the 95 % percentile bootstrap CI of mean_diff (NaN when n_pairs < 2)
    ci_high: float  # upper end of that CI
    p_t: float  # two-sided paired t-test p-value (NaN when n_pairs < 2)
    p_wilcoxon: float  # two-sided Wilcoxon signed-rank p-value (NaN when n_pairs < 2)
    p_holm: float  # p_t after Holm–Bonferroni across the factor's non-reference levels


@dataclass(frozen=True)
class FactorSummary:
    """Everything computed for one factor."""

    name: str  # the factor's column name, e.g. "mix.selection"
    reference: Any  # the reference level (first listed in the spec)
    levels: tuple[LevelStats, ...]  # listed levels in spec order, then unlisted ones
    comparisons: tuple[PairedComparison, ...]  # one per non-reference level; empty for one level
    best: Any  # the best level by mode, None when no level has finished trials

    def level(self, level: Any) -> LevelStats:
        """The LevelStats of `level` (matched like trial values: "0.1" finds 0.1)."""
        for ls in self.levels:
            if normalize_level(ls.level) == normalize_level(level):
                return ls
        known = [x.level for x in self.levels]
        raise KeyError(f"factor {self.name!r} has no level {level!r}; levels: {known}")

    def comparison(self, level: Any) -> PairedComparison:
        """The PairedComparison of `level` against the reference."""
        for c in self.comparisons:
            if normalize_level(c.level) == normalize_level(level):
                return c
        raise KeyError(
            f"factor {self.name!r} has no comparison for {level!r}; "
            f"compared: {[c.level for c in self.comparisons]} (the reference {self.reference!r} has none)"
        )


@dataclass(frozen=True)
class ExcludedTrial:
    """A trial that did not enter the statistics, and why."""

    run_hash: str  # the trial's run_hash
    status: str  # its status (FAILED, KILLED, RUNNING, or FINISHED without the metric)
    seed: Any  # its seed
    levels: tuple[tuple[str, Any], ...]  # (factor, level) for every factor
    reason: str  # the `error` column when given, else what is missing
    cost_s: float  # its cost/device_s (NaN when unknown)


@dataclass(frozen=True)
class Report:
    """The result of `summarize`: per-factor summaries plus bookkeeping for the header."""

    metric: str  # the metric column, e.g. "final/top1_err"
    mode: str  # "min" or "max": which direction is better
    factors: tuple[FactorSummary, ...]  # one per factor, in the order of the `factors` argument
    n_trials: int  # all rows of `trials`
    n_finished: int  # rows that entered the statistics
    excluded: tuple[ExcludedTrial, ...]  # every other row, in input order
    status_counts: tuple[tuple[str, int], ...]  # excluded trials per status, most frequent first
    cost_by_device: tuple[tuple[str, float], ...]  # summed cost/device_s over all trials per device
    excluded_cost_by_device: tuple[tuple[str, float], ...]  # the part spent in excluded trials
    n_boot: int  # bootstrap resamples per interval
    seed: int  # base seed of the bootstrap generators
    notes: tuple[str, ...]  # caveats worth reading (duplicates, unlisted levels, Wilcoxon floor)


# ---------------------------------------------------------------------------------- helpers


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and pd.isna(value))


def normalize_level(value: Any) -> tuple:
    """Comparable key of a level / seed: numbers and numeric strings as float, else str; NaN/None missing."""
    if _is_missing(value):
        return _MISSING
    if isinstance(value, bool | np.bool_):
        return ("str", str(bool(value)))
    if isinstance(value, numbers.Number):
        return ("num", float(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return ("str", text)
    return _MISSING if math.isnan(number) else ("num", number)


def _device_label(value: Any) -> str:
    if _is_missing(value):
        return "device"
    text = str(value).strip().lower()
    if text.startswith(("cuda", "gpu")):
        return "GPU"
    if text.startswith("cpu"):
        return "CPU"
    return text.upper() or "device"


def _rng(seed: int, *key: Any) -> np.random.Generator:
    tag = zlib.crc32("\x1f".join(map(str, key)).encode())
    return np.random.default_rng([seed, tag])


def _sum_by_device(costs: np.ndarray, labels: Sequence[str]) -> tuple[tuple[str, float], ...]:
    totals: dict[str, float] = {}
    for c, lab in zip(costs, labels):
        if np.isfinite(c):
            totals[lab] = totals.get(lab, 0.0) + float(c)
    return tuple(sorted(totals.items()))


# ------------------------------------------------------------------------------------- summarize


def _validate(trials: pd.DataFrame, factors: Mapping[str, Sequence], metric: str, mode: str,
              n_boot: int, seed: int) -> None:
    if not isinstance(trials, pd.DataFrame):
        raise TypeError(f"trials must be a pandas DataFrame, got {type(trials).__name__}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not factors:
        raise ValueError("factors is empty: pass {factor column: [levels, reference first]}")
    if not (isinstance(n_boot, numbers.Integral) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (isinstance(seed, numbers.Integral) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, levels in factors.items():
        if isinstance(levels, str) or not isinstance(levels, Sequence) or len(levels) == 0:
            raise ValueError(f"factor {name!r}: levels must be a non-empty list, got {levels!r}")
        seen: dict[tuple, Any] = {}
        for lv in levels:
            key = normalize_level(lv)
            if key in seen:
                raise ValueError(
                    f"factor {name!r} lists level {lv!r} twice (also as {seen[key]!r}): {levels!r}"
                )
            seen[key] = lv
    if len(trials) == 0:
        return  # an empty frame (no runs yet) need not carry the columns
    needed = [*REQUIRED_COLUMNS, metric, *factors]
    missing = [c for c in needed if c not in trials.columns]
    if missing:
        raise ValueError(
            f"trials lacks column(s) {missing}; it has {list(trials.columns)}. Factor columns must be named "
            "exactly as the sweep spec names the factor (dotted keys such as 'mix.selection')."
        )
    dup = trials["run_hash"][trials["run_hash"].duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"run_hash must be unique, duplicated: {dup[:10]} (were runs concatenated twice?)")


def summarize(
    trials: pd.DataFrame,
    factors: Mapping[str, Sequence],
    metric: str,
    mode: str = "min",
    n_boot: int = 10_000,
    seed: int = 0,
) -> Report:
    """Per-factor level statistics and paired comparisons against the reference level.

    Args:
        trials: one row per trial with columns run_hash, config_hash, seed, status, optionally error,
            one column per factor, the metric, optionally cost/device_s and device.
        factors: factor column → its levels in spec order; the first level is the reference.
        metric: the metric column to analyse, e.g. "final/top1_err".
        mode: "min" if lower is better (errors), "max" if higher is better.
        n_boot: bootstrap resamples per confidence interval.
        seed: base seed of the bootstrap generators (non-negative).

    Raises:
        ValueError: malformed input (missing columns, bad mode, duplicate levels, duplicate run_hash).
            No finished trials is not an error (see the module docstring).
    """
    _validate(trials, factors, metric, mode, n_boot, seed)
    names = list(factors)
    df = trials.reset_index(drop=True)
    for col in (*REQUIRED_COLUMNS, metric, *names):
        if col not in df.columns:  # only possible for an empty frame
            df[col] = pd.Series(dtype=object)
    n = len(df)

    values = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    status = [str(s).strip().upper() if not _is_missing(s) else "UNKNOWN" for s in df["status"].tolist()]
    finished = np.array([s == FINISHED for s in status], dtype=bool) & np.isfinite(values)
    keys_raw = {f: df[f].tolist() for f in names}
    keys = {f: [normalize_level(v) for v in keys_raw[f]] for f in names}
    seed_keys = [normalize_level(v) for v in df["seed"].tolist()]
    seeds = df["seed"].tolist()
    has_cost = COST_COLUMN in df.columns
    costs = (pd.to_numeric(df[COST_COLUMN], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
             if has_cost else np.full(n, np.nan))
    labels = ([_device_label(v) for v in df[DEVICE_COLUMN].tolist()] if DEVICE_COLUMN in df.columns
              else ["device"] * n)
    errors = df[ERROR_COLUMN].tolist() if ERROR_COLUMN in df.columns else [None] * n

    data = _Columns(raw=keys_raw, keys=keys, seed_keys=seed_keys, seeds=seeds, values=values,
                    finished=finished, costs=costs, labels=labels, has_cost=has_cost)
    notes: list[str] = []
    summaries = [_summarize_factor(name, list(factors[name]), names, data, mode, n_boot, seed, notes)
                 for name in names]

    excluded = []
    for i in np.flatnonzero(~finished):
        if not _is_missing(errors[i]) and str(errors[i]).strip():
            reason = str(errors[i]).strip()
        elif status[i] == FINISHED:
            reason = f"{metric} missing" if math.isnan(values[i]) else f"{metric} not finite ({values[i]})"
        else:
            reason = f"status {status[i]}"
        excluded.append(ExcludedTrial(
            run_hash=str(df["run_hash"].iloc[i]),
            status=status[i] if status[i] != FINISHED else f"{FINISHED} (no {metric})",
            seed=seeds[i],
            levels=tuple((f, df[f].iloc[i]) for f in names),
            reason=reason,
            cost_s=float(costs[i]),
        ))
    counts: dict[str, int] = {}
    for e in excluded:
        counts[e.status] = counts.get(e.status, 0) + 1

    sizes = [ls.n for fs in summaries for ls in fs.levels]
    sizes += [c.n_pairs for fs in summaries for c in fs.comparisons]
    few = min((x for x in sizes if x >= 2), default=None)
    if few is not None and few < 10:
        notes.append(f"Some CIs rest on as few as {few} trials or pairs: percentile bootstrap intervals are "
                     "too narrow there (for normal data about 85 % coverage at n = 5, 90 % at n = 10).")
    small = sorted({c.n_pairs for fs in summaries for c in fs.comparisons if 2 <= c.n_pairs <= 5})
    if small:
        notes.append(
            "With n pairs the two-sided Wilcoxon p-value cannot go below 2/2^n "
            f"({', '.join(f'{k} pairs: {2 / 2**k:.3g}' for k in small)}): with 5 or fewer pairs it never "
            "reaches 0.05, whatever the effect."
        )
    return Report(
        metric=metric,
        mode=mode,
        factors=tuple(summaries),
        n_trials=n,
        n_finished=int(finished.sum()),
        excluded=tuple(excluded),
        status_counts=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        cost_by_device=_sum_by_device(costs, labels),
        excluded_cost_by_device=_sum_by_device(
            costs[~finished], [labels[i] for i in np.flatnonzero(~finished)]
        ),
        n_boot=int(n_boot),
        seed=int(seed),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class _Columns:
    """Per-row columns of `trials`, already normalised (internal)."""

    raw: dict[str, list]  # factor → level as found in each row
    keys: dict[str, list[tuple]]  # factor → normalised level of each row
    seed_keys: list[tuple]  # normalised seed of each row
    seeds: list  # seed of each row as given
    values: np.ndarray  # metric of each row (NaN when missing)
    finished: np.ndarray  # bool: row enters the statistics
    costs: np.ndarray  # cost/device_s of each row (NaN when unknown)
    labels: list[str]  # device label of each row
    has_cost: bool  # whether trials has a cost column


def _summarize_factor(name: str, spec_levels: list, names: list[str], data: _Columns, mode: str,
                      n_boot: int, seed: int, notes: list[str]) -> FactorSummary:
    level_keys = data.keys[name]
    others = [g for g in names if g != name]
    # the blocking cell of each row: every other factor plus the seed
    cell = [tuple(data.keys[g][i] for g in others) + (data.seed_keys[i],) for i in range(len(level_keys))]

    # levels: listed ones in spec order, then unlisted ones in order of first appearance
    order: list[tuple[tuple, Any, bool]] = [(normalize_level(lv), lv, True) for lv in spec_levels]
    known = {k for k, _, _ in order}
    for i, k in enumerate(level_keys):
        if k not in known:
            known.add(k)
            order.append((k, None if k == _MISSING else data.raw[name][i], False))
    unlisted = [lv for _, lv, listed in order if not listed]
    if unlisted:
        notes.append(f"{name}: level(s) {unlisted} appear in the trials but not in the spec {spec_levels}; "
                     "reported after the listed levels.")

    rows_of: dict[tuple, list[int]] = {k: [] for k, _, _ in order}
    for i, k in enumerate(level_keys):
        rows_of[k].append(i)

    raw_stats = []
    for j, (k, lv, listed) in enumerate(order):
        rows = rows_of[k]
        fin = sorted((i for i in rows if data.finished[i]), key=lambda i: (data.seed_keys[i], cell[i]))
        x = data.values[fin]
        lo, hi = bootstrap_mean_ci(x, n_boot=n_boot, rng=_rng(seed, name, k, "level"))
        raw_stats.append(dict(
            level=lv, n=int(x.size),
            mean=float(np.mean(x)) if x.size else math.nan,
            std=float(np.std(x, ddof=1)) if x.size >= 2 else math.nan,
            ci_low=lo, ci_high=hi,
            values=tuple(float(v) for v in x), seeds=tuple(data.seeds[i] for i in fin),
            n_excluded=len(rows) - len(fin),
            cost_s=float(np.nansum(data.costs[rows])) if data.has_cost else math.nan,
            cost_by_device=_sum_by_device(data.costs[rows], [data.labels[i] for i in rows]),
            is_reference=j == 0, listed=listed,
        ))
    with_data = [j for j, s in enumerate(raw_stats) if s["n"] > 0]
    best_j = None
    if with_data:  # ties: the first listed wins
        pick = min if mode == "min" else max
        best_j = pick(with_data, key=lambda j: raw_stats[j]["mean"])
    levels = tuple(LevelStats(**s, is_best=j == best_j) for j, s in enumerate(raw_stats))

    cells = {k: _cells(rows_of[k], data.finished, cell, data.values) for k, _, _ in order}
    for (k, lv, _), ls in zip(order, levels):
        dups = ls.n - len(cells[k])
        if dups and len(order) > 1:
            notes.append(f"{name}={lv!r}: {dups} extra finished trial(s) share every factor and the seed "
                         "with another; averaged per cell before pairing.")
    ref_key, ref_level = order[0][0], order[0][1]
    ref_cells = cells[ref_key]
    comparisons = []
    for k, lv, _ in order[1:]:
        lv_cells = cells[k]
        common = sorted(set(lv_cells) & set(ref_cells))
        d = np.array([np.mean(lv_cells[c]) - np.mean(ref_cells[c]) for c in common], dtype=float)
        lo, hi = bootstrap_mean_ci(d, n_boot=n_boot, rng=_rng(seed, name, k, "diff"))
        p_t, p_w = paired_tests(d)
        comparisons.append(dict(
            level=lv, reference=ref_level, n_pairs=len(common),
            n_unpaired=len(set(lv_cells) - set(ref_cells)),
            n_unpaired_reference=len(set(ref_cells) - set(lv_cells)),
            diffs=tuple(float(v) for v in d), mean_diff=float(d.mean()) if d.size else math.nan,
            ci_low=lo, ci_high=hi, p_t=p_t, p_wilcoxon=p_w,
        ))
    adjusted = holm([c["p_t"] for c in comparisons])
    return FactorSummary(
        name=name,
        reference=ref_level,
        levels=levels,
        comparisons=tuple(PairedComparison(**c, p_holm=float(a)) for c, a in zip(comparisons, adjusted)),
        best=levels[best_j].level if best_j is not None else None,
    )


def _cells(
    rows: list[int], finished: np.ndarray, cell: list[tuple], values: np.ndarray
) -> dict[tuple, list[float]]:
    """Finished metric values of `rows` grouped by blocking cell."""
    out: dict[tuple, list[float]] = {}
    for i in rows:
        if finished[i]:
            out.setdefault(cell[i], []).append(float(values[i]))
    return out

"""orchestrator.estimators, .stats and .report: known answers, pairing, Holm, bootstrap, degenerate inputs, files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import report as rp
from orchestrator.estimators import bootstrap_mean_ci, holm, paired_tests
from orchestrator.report import plot_factors, render_markdown, summary_frame, write_report
from orchestrator.stats import Report, summarize

METRIC = "final/top1_err"
SELECTION = ["max_saliency", "random_patch", "same_as_ref"]
SALIENCY = ["spectral_residual", "fine_grained"]
FACTORS = {"mix.selection": SELECTION, "mix.saliency": SALIENCY}
SHIFT = {"max_saliency": 0.0, "random_patch": 1.0, "same_as_ref": 0.0}
N_BOOT = 2000


def make_trials(n_seeds: int = 5, noise: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Crossed 3 × 2 design. random_patch = reference + 1.0 (+ noise) in every cell; same_as_ref is
    bit-identical to the reference; fine_grained = spectral_residual + 0.5. Seeds shift everything
    by a large common amount, so only correct pairing recovers the effects with small CIs."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_seeds):
        seed_effect = 20.0 + 2.0 * rng.normal()
        for j, sal in enumerate(SALIENCY):
            for sel in SELECTION:
                eps = noise * rng.normal() if sel == "random_patch" else 0.0
                rows.append({
                    "run_hash": f"{sel}-{sal}-{s}", "config_hash": f"{sel}-{sal}", "seed": s,
                    "status": "FINISHED", "error": None,
                    "mix.selection": sel, "mix.saliency": sal, "optim.lr": "0.1",
                    METRIC: seed_effect + 0.5 * j + SHIFT[sel] + eps,
                    "cost/device_s": 900.0, "device": "cuda",
                })
    df = pd.DataFrame(rows)
    df["error"] = df["error"].astype("str")  # what a reader of MLflow tags yields: str with NaN
    return df


def fail(df: pd.DataFrame, run_hash: str, status: str = "FAILED", error: str | None = "CUDA out of memory",
         value: float = np.nan) -> pd.DataFrame:
    df = df.copy()
    row = df.index[df["run_hash"] == run_hash]
    assert len(row) == 1
    df.loc[row, "status"] = status
    df.loc[row, "error"] = error
    df.loc[row, METRIC] = value
    return df


def reference_diffs(df: pd.DataFrame, factor: str, level, ref) -> np.ndarray:
    """Paired differences computed independently with a pandas merge."""
    ok = df[(df["status"] == "FINISHED") & np.isfinite(df[METRIC])]
    on = [f for f in FACTORS if f != factor] + ["seed"]
    a = ok[ok[factor] == level][on + [METRIC]]
    b = ok[ok[factor] == ref][on + [METRIC]]
    m = a.merge(b, on=on, suffixes=("_l", "_r")).sort_values(on)
    return (m[f"{METRIC}_l"] - m[f"{METRIC}_r"]).to_numpy()


# ------------------------------------------------------------------------------------- known answer


def test_known_answer_effects_level_stats_and_tests():
    df = make_trials()
    rep = summarize(df, FACTORS, METRIC, mode="min", n_boot=N_BOOT, seed=0)
    sel = rep.factors[0]
    assert sel.name == "mix.selection" and sel.reference == "max_saliency"
    assert [ls.level for ls in sel.levels] == SELECTION
    assert [c.level for c in sel.comparisons] == SELECTION[1:]

    worse = sel.comparison("random_patch")
    assert worse.n_pairs == 10 and worse.n_unpaired == 0
    assert worse.mean_diff == pytest.approx(1.0, abs=0.05)
    assert 0 < worse.ci_low < worse.mean_diff < worse.ci_high
    assert worse.p_t < 1e-6
    assert worse.p_wilcoxon == pytest.approx(2 / 2**10)  # all 10 differences positive, exact test
    assert worse.p_holm >= worse.p_t
    expected = reference_diffs(df, "mix.selection", "random_patch", "max_saliency")
    np.testing.assert_allclose(worse.diffs, expected)

    same = sel.comparison("same_as_ref")
    assert same.mean_diff == 0.0 and same.p_t == 1.0 and same.p_wilcoxon == 1.0 and same.p_holm == 1.0

    for ls in sel.levels:
        x = df.loc[df["mix.selection"] == ls.level, METRIC].to_numpy()
        assert ls.n == 10 and ls.n_excluded == 0
        assert ls.mean == pytest.approx(np.mean(x), rel=1e-12)
        assert ls.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
        assert ls.ci_low <= ls.mean <= ls.ci_high
        assert sorted(ls.values) == pytest.approx(sorted(x))
        assert ls.cost_s == 10 * 900.0 and ls.cost_by_device == (("GPU", 9000.0),)
    # ties between the reference and the bit-identical level: the first listed wins
    assert sel.best == "max_saliency" and sel.levels[0].is_best and sel.levels[0].is_reference

    sal = rep.factors[1]
    c = sal.comparison("fine_grained")
    assert c.n_pairs == 15 and c.mean_diff == pytest.approx(0.5, abs=0.05) and c.ci_low > 0
    assert sal.best == "spectral_residual"


def test_mode_max_picks_highest_mean():
    rep = summarize(make_trials(), FACTORS, METRIC, mode="max", n_boot=N_BOOT)
    assert rep.factors[0].best == "random_patch"
    assert rep.factors[1].best == "fine_grained"


def test_row_order_and_extra_levels_do_not_change_the_numbers():
    df = make_trials()
    base = summary_frame(summarize(df, FACTORS, METRIC, n_boot=N_BOOT))
    shuffled = summary_frame(summarize(df.sample(frac=1.0, random_state=3), FACTORS, METRIC, n_boot=N_BOOT))
    pd.testing.assert_frame_equal(base, shuffled)
    # intervals are seeded per (factor, level): dropping a level leaves the others' CIs unchanged
    fewer = {"mix.selection": SELECTION[:2], "mix.saliency": SALIENCY}
    df2 = df[df["mix.selection"] != "same_as_ref"]
    a = summarize(df, FACTORS, METRIC, n_boot=N_BOOT).factors[0].comparison("random_patch")
    b = summarize(df2, fewer, METRIC, n_boot=N_BOOT).factors[0].comparison("random_patch")
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


def test_numeric_levels_match_string_params():
    df = make_trials()
    rep = summarize(df, {**FACTORS, "optim.lr": [0.1]}, METRIC, n_boot=N_BOOT)
    lr = rep.factors[2]
    assert lr.levels[0].n == len(df) and lr.levels[0].listed and lr.comparisons == ()


# ------------------------------------------------------------------------------------------ pairing


def test_pairing_excludes_trial_whose_partner_failed():
    df = fail(make_trials(), "max_saliency-spectral_residual-2")
    rep = summarize(df, FACTORS, METRIC, n_boot=N_BOOT)
    sel, sal = rep.factors
    assert sel.level("max_saliency").n == 9 and sel.level("max_saliency").n_excluded == 1
    for level in SELECTION[1:]:
        c = sel.comparison(level)
        assert (c.n_pairs, c.n_unpaired, c.n_unpaired_reference) == (9, 1, 0)
        np.testing.assert_allclose(c.diffs, reference_diffs(df, "mix.selection", level, "max_saliency"))
    # for the saliency factor, the failed trial is the reference partner of (max_saliency, fine_grained, 2)
    c = sal.comparison("fine_grained")
    assert (c.n_pairs, c.n_unpaired, c.n_unpaired_reference) == (14, 1, 0)
    expected = reference_diffs(df, "mix.saliency", "fine_grained", "spectral_residual")
    np.testing.assert_allclose(c.diffs, expected)
    # a failed level trial leaves its reference partner unpaired
    df = fail(make_trials(), "random_patch-fine_grained-4")
    c = summarize(df, FACTORS, METRIC, n_boot=N_BOOT).factors[0].comparison("random_patch")
    assert (c.n_pairs, c.n_unpaired, c.n_unpaired_reference) == (9, 0, 1)


def test_pairing_respects_other_factors_not_just_seed():
    df = make_trials(noise=0.0)
    c = summarize(df, FACTORS, METRIC, n_boot=N_BOOT).factors[0].comparison("random_patch")
    # pairing across saliency levels would mix in the ±0.5 saliency effect
    np.testing.assert_allclose(c.diffs, 1.0, atol=1e-9)


def test_duplicate_cells_are_averaged_and_noted():
    df = make_trials()
    extra = df[df["run_hash"] == "random_patch-spectral_residual-0"].assign(run_hash="rerun")
    extra[METRIC] += 0.2
    df = pd.concat([df, extra], ignore_index=True)
    rep = summarize(df, FACTORS, METRIC, n_boot=N_BOOT)
    c = rep.factors[0].comparison("random_patch")
    assert c.n_pairs == 10 and rep.factors[0].level("random_patch").n == 11
    assert any("averaged" in note for note in rep.notes)


# --------------------------------------------------------------------------------------------- holm


def test_holm_hand_computed():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    out = holm([0.02, np.nan, 0.01])  # NaN: no test, does not count in m
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert np.isnan(out[1])
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12))
def test_holm_monotone_and_bounded(ps):
    p = np.array(ps)
    adj = holm(p)
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)
    m = len(p)  # definition: adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j))
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    np.testing.assert_allclose(adj[order], np.maximum.accumulate(steps))


# ---------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic_and_contains_mean():
    x = np.random.default_rng(1).normal(10.0, 1.0, size=7)
    a = bootstrap_mean_ci(x, n_boot=N_BOOT, rng=123)
    b = bootstrap_mean_ci(x, n_boot=N_BOOT, rng=np.random.default_rng(123))
    assert a == b
    assert a[0] < x.mean() < a[1]
    assert bootstrap_mean_ci(x, n_boot=N_BOOT, rng=124) != a
    assert all(np.isnan(bootstrap_mean_ci([1.0], n_boot=N_BOOT)))
    # large n goes through the chunked path and agrees with the normal approximation
    y = np.random.default_rng(2).normal(0.0, 1.0, size=5000)
    lo, hi = bootstrap_mean_ci(y, n_boot=1000, rng=0)
    se = y.std(ddof=1) / np.sqrt(y.size)
    assert lo == pytest.approx(y.mean() - 1.96 * se, abs=0.3 * se)
    assert hi == pytest.approx(y.mean() + 1.96 * se, abs=0.3 * se)


def test_summarize_deterministic_per_seed():
    df = make_trials()
    a = summary_frame(summarize(df, FACTORS, METRIC, n_boot=N_BOOT, seed=7))
    b = summary_frame(summarize(df, FACTORS, METRIC, n_boot=N_BOOT, seed=7))
    c = summary_frame(summarize(df, FACTORS, METRIC, n_boot=N_BOOT, seed=8))
    pd.testing.assert_frame_equal(a, b)
    assert not a["ci_low"].equals(c["ci_low"])


def test_paired_tests_degenerate_inputs_are_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(np.isnan(paired_tests([])))
        assert all(np.isnan(paired_tests([0.3])))
        assert paired_tests([0.0, 0.0, 0.0]) == (1.0, 1.0)
        p_t, p_w = paired_tests([1.0, 1.0, 1.0, 1.0, 1.0])
        assert p_t == 0.0 and p_w == pytest.approx(0.0625)
        p_t, p_w = paired_tests([1.0 + 1e-15, 1.0, 1.0 - 1e-15, 1.0, 1.0])  # catastrophic cancellation
        assert p_t < 0.001
        p_t, p_w = paired_tests([0.0, 0.0, 0.0, 0.2])
        assert 0 < p_t <= 1 and 0 < p_w <= 1


# ------------------------------------------------------------------------------- degenerate reports


def test_failed_and_nan_trials_excluded_and_listed():
    df = make_trials()
    clean = summarize(df, FACTORS, METRIC, n_boot=N_BOOT)
    df = fail(df, "random_patch-fine_grained-1", error="RuntimeError: CUDA out of memory", value=99.0)
    df = fail(df, "same_as_ref-spectral_residual-3", status="FINISHED", error=None)  # finished, no metric
    df = fail(df, "max_saliency-fine_grained-4", status="RUNNING", error=None)
    rep = summarize(df, FACTORS, METRIC, n_boot=N_BOOT)
    assert rep.n_trials == 30 and rep.n_finished == 27 and len(rep.excluded) == 3
    assert dict(rep.status_counts) == {"FAILED": 1, "RUNNING": 1, f"FINISHED (no {METRIC})": 1}
    rnd = rep.factors[0].level("random_patch")
    assert rnd.n == 9 and rnd.n_excluded == 1 and 99.0 not in rnd.values  # a FAILED metric never counts
    assert rnd.cost_s == 10 * 900.0  # failed trials burned device time too
    assert rep.factors[0].level("random_patch").mean != clean.factors[0].level("random_patch").mean

    md = render_markdown(rep)
    assert "27 finished" in md and "3 failed/incomplete" in md
    for e in rep.excluded:
        assert f"`{e.run_hash}`" in md
    assert "RuntimeError: CUDA out of memory" in md
    assert f"{METRIC} missing" in md and "status RUNNING" in md


def test_single_level_factor():
    df = make_trials()
    rep = summarize(df, {"mix.saliency": ["spectral_residual"], "mix.selection": SELECTION}, METRIC,
                    n_boot=N_BOOT)
    sal = rep.factors[0]
    # fine_grained is not in the spec: reported after the listed level, flagged, and compared
    assert [ls.level for ls in sal.levels] == ["spectral_residual", "fine_grained"]
    assert [ls.listed for ls in sal.levels] == [True, False]
    assert any("not in the spec" in note for note in rep.notes)
    spec = {"mix.saliency": ["spectral_residual"], "mix.selection": SELECTION}
    only = summarize(df[df["mix.saliency"] == "spectral_residual"], spec, METRIC, n_boot=N_BOOT)
    f = only.factors[0]
    assert len(f.levels) == 1 and f.comparisons == () and f.best == "spectral_residual"
    assert "Single level: nothing to compare." in render_markdown(only)


def test_no_finished_trials_is_a_report_not_an_error(tmp_path):
    df = make_trials(n_seeds=2)
    df["status"] = "FAILED"
    df["error"] = "ImportError: no module named cv2"
    rep = summarize(df, FACTORS, METRIC, n_boot=N_BOOT)
    assert rep.n_finished == 0 and len(rep.excluded) == len(df)
    assert all(fs.best is None for fs in rep.factors)
    md = render_markdown(rep)
    assert "No finished trials" in md and "ImportError: no module named cv2" in md
    paths = write_report(df, FACTORS, METRIC, "min", tmp_path)
    assert all(p.is_file() for p in paths.values())
    # an empty frame (no runs logged yet) need not even carry the columns
    empty = summarize(pd.DataFrame(), FACTORS, METRIC, n_boot=N_BOOT)
    assert empty.n_trials == 0 and "No finished trials" in render_markdown(empty)


def test_singletons_and_zero_differences_do_not_warn():
    df = make_trials(n_seeds=1)  # with one saliency level only: one trial per level, one pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = summarize(df[df["mix.saliency"] == "spectral_residual"], FACTORS, METRIC, n_boot=N_BOOT)
        md = render_markdown(rep)
    sel = rep.factors[0]
    assert all(ls.n == 1 and np.isnan(ls.std) and np.isnan(ls.ci_low) for ls in sel.levels)
    c = sel.comparison("random_patch")
    assert c.n_pairs == 1 and np.isnan(c.p_t) and np.isnan(c.p_holm)
    assert rep.factors[1].comparison("fine_grained").n_pairs == 0
    assert "no pairs" in md


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "lowest"}, "mode must be"),
        ({"factors": {"mix.selection": ["a", "b", "a"]}}, "twice"),
        ({"factors": {"mix.selection": [0.1, "0.1"]}}, "twice"),
        ({"factors": {"mix.preset": ["mixup"]}}, r"lacks column\(s\) \['mix.preset'\]"),
        ({"factors": {}}, "factors is empty"),
        ({"factors": {"mix.selection": []}}, "non-empty list"),
        ({"metric": "best/top1_err"}, "best/top1_err"),
    ],
)
def test_malformed_input_raises_actionable_errors(kwargs, match):
    args = {"trials": make_trials(n_seeds=2), "factors": FACTORS, "metric": METRIC, "mode": "min", **kwargs}
    with pytest.raises(ValueError, match=match):
        summarize(**args)


def test_duplicate_run_hash_raises():
    df = make_trials(n_seeds=2)
    with pytest.raises(ValueError, match="run_hash must be unique"):
        summarize(pd.concat([df, df.iloc[:1]]), FACTORS, METRIC)


# ----------------------------------------------------------------------------------------- rendering


def test_markdown_layout_and_number_formats():
    rep = summarize(fail(make_trials(), "random_patch-fine_grained-1"), FACTORS, METRIC, n_boot=N_BOOT)
    md = render_markdown(rep)
    assert f"Metric `{METRIC}`, mode `min`" in md
    assert "Holm–Bonferroni correction of the paired t-test p-values" in md
    header = "| level | n | mean ± std | 95% CI | Δ vs ref [CI] | p (t) | p (Wilcoxon) | p (Holm) | cost |"
    assert md.count(header) == 2
    assert "## mix.selection" in md and "## mix.saliency" in md
    assert "| **max_saliency (ref)** |" in md
    row = next(line for line in md.splitlines() if line.startswith("| random_patch |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "9 (+1 excl.)"
    assert float(cells[4].split()[0]) == pytest.approx(1.0, abs=0.05) and cells[4].endswith("(9 pairs)")
    assert cells[5] == "<0.001" and cells[7] == "<0.001"
    same = next(line for line in md.splitlines() if line.startswith("| same_as_ref |"))
    assert "| 1.00 | 1.00 | 1.00 |" in same
    assert "GPU-h" in row and "GPU-s" in row
    assert (rp._fmt_p(0.0004), rp._fmt_p(0.012345), rp._fmt_p(0.5), rp._fmt_p(np.nan)) == (
        "<0.001", "0.0123", "0.500", "—")


def test_cost_labels_follow_device_column():
    df = make_trials(n_seeds=2)
    df.loc[df["mix.saliency"] == "fine_grained", "device"] = "cpu"
    rep = summarize(df, FACTORS, METRIC, n_boot=N_BOOT)
    assert rep.factors[0].levels[0].cost_by_device == (("CPU", 1800.0), ("GPU", 1800.0))
    assert "CPU-h" in render_markdown(rep)
    no_device = summarize(df.drop(columns=["device"]), FACTORS, METRIC, n_boot=N_BOOT)
    assert no_device.cost_by_device == (("device", 12 * 900.0),)


# ------------------------------------------------------------------------------------------- files


def test_write_report_writes_four_files_that_round_trip(tmp_path):
    df = fail(make_trials(), "random_patch-fine_grained-1")
    paths = write_report(df, FACTORS, METRIC, "min", tmp_path / "new" / "dir", n_boot=N_BOOT)
    assert set(paths) == {"report.md", "factors.png", "trials.csv", "summary.csv", "summary.md"}
    assert all(p.is_file() and p.is_absolute() for p in paths.values())

    img = mpimg.imread(paths["factors.png"])
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert 400 <= img.shape[0] <= 3000 and 600 <= img.shape[1] <= 4000
    assert img[..., :3].std() > 0.05  # not a blank canvas

    # CSV carries no types: string params that look numeric ("0.1") need their dtype back
    text_columns = {c: "str" for c in df.columns if pd.api.types.is_string_dtype(df[c])}
    pd.testing.assert_frame_equal(pd.read_csv(paths["trials.csv"], dtype=text_columns), df)
    expected = summary_frame(summarize(df, FACTORS, METRIC, n_boot=N_BOOT))
    got = pd.read_csv(paths["summary.csv"], dtype={"level": str})
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert len(got) == len(SELECTION) + len(SALIENCY)
    assert "Failed / incomplete trials (1)" in paths["report.md"].read_text(encoding="utf-8")


def test_plot_uses_no_pyplot_and_handles_empty_panels(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import pandas as pd
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from orchestrator.report import plot_factors
        from orchestrator.stats import summarize
        df = pd.DataFrame({{"run_hash": ["a", "b"], "seed": [0, 0], "status": ["FINISHED", "FAILED"],
                           "mix.selection": ["x" * 20, "y"], "m": [1.0, float("nan")]}})
        rep = summarize(df, {{"mix.selection": ["x" * 20, "y", "z"]}}, "m", n_boot=10)
        plot_factors(rep, {str(tmp_path / "p.png")!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND", "WAYLAND_DISPLAY")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=60)
    assert mpimg.imread(tmp_path / "p.png").shape[0] > 100


def test_plot_returns_path_and_report_is_frozen(tmp_path):
    rep = summarize(make_trials(n_seeds=3), FACTORS, METRIC, n_boot=N_BOOT)
    assert isinstance(rep, Report)
    out = plot_factors(rep, str(tmp_path / "sub" / "f.png"))
    assert out == tmp_path / "sub" / "f.png" and out.is_file()
    with pytest.raises(AttributeError):
        rep.metric = "x"  # type: ignore[misc]


def test_sync_backfills_trial_metrics_not_ray_bookkeeping(tmp_path):
    """Results replayed from Ray's result.json carry Ray's own keys (pid, timestamp, ...): not metrics."""
    import json

    from orchestrator.storage import sweep_paths
    from orchestrator.sync import collect

    paths = sweep_paths(tmp_path, "s")
    folder = paths.ray / "launch-001" / "t1"
    folder.mkdir(parents=True)
    line = {"epoch": 1, "test/top1_err": 50.0, "lr": 0.1, "pid": 123, "timestamp": 1.0, "training_iteration": 1,
            "time_total_s": 2.0, "run_hash": "abc", "config": {"trial": {"config": {"model": "small_cnn"},
                                                                           "meta": {"run_hash": "abc"}}}}
    (folder / "result.json").write_text(json.dumps(line) + "\n")
    epoch = collect(paths)["abc"].epochs[1]
    assert epoch["test/top1_err"] == 50.0 and epoch["lr"] == 0.1
    assert not {"pid", "timestamp", "training_iteration", "time_total_s", "config"} & set(epoch)

"""`mixsweep fidelity`: label fidelity of each preset (or factor value), measured without training.

    mixsweep fidelity [--presets cutmix,saliencymix] [--set mix.selection=random,salient_to_corresponding]
                      [--set data.clutter=0,1] [--pairs 4096] [--batch-size 128] [--seed 0] [--out DIR | --png PATH]

For every preset, and every combination of the values of the multi-valued `--set` keys, the first
`--pairs` images of the dataset's train split (un-augmented, with their object masks, see
`DatasetBundle.object_masks`) are mixed in consecutive batches of `--batch-size` and measured with
`trainables.mixing.fidelity` (MIXING.md, "Label fidelity"). `mix.prob` is forced to 1.0: every batch
is mixed, so the numbers describe the mixing, not how often it happens. Every row draws from a
generator seeded with `--seed`, so rows that draw the same way (random pairing, the same lam
distribution) get the same pairs and lams: common random numbers make rows comparable.

Statistics: mean label TV (over samples with a visible object; samples without one are counted in
"no obj"), empty-label rate, mean source share; 95 % CIs by a percentile bootstrap that resamples
whole BATCHES (cluster bootstrap, 2000 resamples, ratio of sums): a `per_batch` preset draws one lam
and one box per batch, so its samples are not independent, and `orchestrator.estimators.bootstrap_mean_ci`,
which resamples single values, would make its interval too narrow. With a single batch it falls back
to that per-sample bootstrap.

Gradient saliency (`guided_ap`, `grafting`, any `mix.saliency=gradient`) needs the model being
trained. The default preset list leaves those presets out, with a note; named in `--presets` they
are measured with a freshly initialised `small_cnn` (seeded, train mode, as in the first step of
training) and the row says "untrained small_cnn": what a random network's gradients pick, not what
a trained one's do (per-epoch training metrics `mix/label_tv` measure the real thing).
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trainables.config import ConfigError, parse_set, parse_value
from trainables.data import DATASETS, build_dataset, object_sample
from trainables.data.base import dataset_options
from trainables.mixing import FACTOR_KEYS, build_mixer, factor_values, list_presets, parse_lam
from trainables.mixing.fidelity import always_mixing, measure_fidelity
from trainables.mixing.registry import did_you_mean
from trainables.models import build_model
from trainables.yamlio import load_yaml

from .errors import UserError
from .estimators import bootstrap_mean_ci
from .spec.distributions import split_args

DEFAULT_PAIRS = 4096
DEFAULT_BATCH = 128
N_BOOT = 2000
UNTRAINED_NOTE = "untrained small_cnn"
FORCED_KEYS = {"mix.prob": "mix.prob is forced to 1.0 (fidelity measures mixed batches)",
               "mix.preset": "use --presets to choose presets"}


@dataclass(frozen=True)
class Row:
    """One measured preset / factor combination."""

    preset: str
    factors: tuple[tuple[str, Any], ...]  #: the multi-valued --set keys and this row's values
    n: int  #: mixed samples measured
    tv: float  #: mean label TV over samples with a visible object
    tv_ci: tuple[float, float]
    empty: float  #: empty-label rate
    empty_ci: tuple[float, float]
    source_share: float  #: mean share of the image taken from the source
    no_object: float  #: share of samples without any visible object pixel (not in the TV mean)
    note: str = ""

    @property
    def label(self) -> str:
        return " / ".join([self.preset, *(f"{k}={_show(v)}" for k, v in self.factors)])


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- flags ------------------------------------------------------------------------------------------


def split_values(text: str) -> list[Any]:
    """The values of one `--set KEY=...`: a YAML flow list `[a, b]`, or `a,b` split at the top-level commas
    (parentheses, brackets and quotes nest: `beta(1,1),uniform(0,1)`, `'a,b'`). Every value is read by
    `trainables.config.parse_value`, the one `--set` value reader (`"123"` stays a string)."""
    value = parse_value(text)
    if isinstance(value, list):
        return value
    if text.strip().startswith("["):  # meant as a list, but not valid YAML: say where it breaks
        try:
            load_yaml(text)
        except yaml.MarkedYAMLError as exc:
            where = f" (column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
            raise UserError(f"--set value {text!r} is not a valid list: {exc.problem}{where}") from None
        except yaml.YAMLError:  # a reader error (a character YAML does not take): no problem/mark
            raise UserError(f"--set value {text!r} is not a valid list; give [v1, v2] or v1,v2") from None
    parts = split_args(text)
    if not parts or not all(parts):
        raise UserError(f"--set value {text!r} has an empty item; give values as v1,v2,...")
    return [parse_value(part) for part in parts]


def parse_sets(items: Sequence[str]) -> dict[str, list[Any]]:
    """`--set KEY=V1,V2` flags -> {key: [values]}: each flag read by `trainables.config.parse_set`, its value
    split by `split_values`; a key given twice is an error."""
    out: dict[str, list[Any]] = {}
    for item in items:
        try:
            (key,) = parse_set([item])
        except ConfigError as exc:
            if item.partition("=")[0].strip() and "=" in item:  # a value over the YAML bounds
                raise UserError(str(exc)) from None
            raise UserError(f"--set {item!r}: expected KEY=VALUE or KEY=V1,V2,..., e.g. --set mix.selection=random"
                            ) from None
        if key in out:
            raise UserError(f"--set {key}: given twice; list its values once, comma-separated")
        text = item.partition("=")[2]  # as typed: quotes in the comma form (`'a,b',c`) keep their commas
        values = split_values(text)
        if len({repr(v) for v in values}) != len(values):
            raise UserError(f"--set {key}: duplicate values in {text!r}")
        out[key] = values
    return out


def _check_keys(sets: Mapping[str, list[Any]], dataset: str) -> None:
    known_mix = [f"mix.{k}" for k in FACTOR_KEYS if f"mix.{k}" not in FORCED_KEYS]
    known_data = [f"data.{k}" for k in dataset_options(dataset)]
    categorical = factor_values()
    for key, values in sets.items():
        if key in FORCED_KEYS:
            raise UserError(f"--set {key}: {FORCED_KEYS[key]}")
        if key.startswith("mix."):
            if key not in known_mix:
                raise UserError(f"--set {key}: unknown mixing key{did_you_mean(key, known_mix)}; "
                                f"allowed: {', '.join(known_mix)}")
            name = key[4:]
            for v in values:
                if name == "lam":
                    try:
                        parse_lam(v)
                    except ValueError as exc:
                        raise UserError(f"--set {key}: {exc}") from None
                elif name in categorical and (not isinstance(v, str) or v not in categorical[name]):
                    raise UserError(f"--set {key}: unknown value {v!r}{did_you_mean(str(v), categorical[name])}; "
                                    f"allowed: {', '.join(categorical[name])}")
        elif key.startswith("data."):
            if key not in known_data:
                raise UserError(f"--set {key}: unknown option of dataset {dataset!r}{did_you_mean(key, known_data)}; "
                                f"allowed: {', '.join(known_data)}")
        else:
            raise UserError(f"--set {key}: fidelity takes mix.* and data.* keys (and --presets, --dataset); "
                            f"allowed: {', '.join(known_mix + known_data)}")


# -- statistics --------------------------------------------------------------------------------------


def cluster_mean_ci(values: np.ndarray, clusters: np.ndarray, *, seed: int, n_boot: int = N_BOOT,
                    confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of the finite `values`, resampling whole clusters.

    Each resample draws as many clusters as there are, with replacement, and takes the ratio of the
    summed values to the summed counts. One cluster only: per-value bootstrap (`bootstrap_mean_ci`).
    """
    ok = np.isfinite(values)
    ids, inverse = np.unique(clusters[ok], return_inverse=True)
    if ids.size < 2:
        return bootstrap_mean_ci(values[ok], n_boot=n_boot, rng=seed, confidence=confidence)
    sums = np.bincount(inverse, weights=values[ok], minlength=ids.size)
    counts = np.bincount(inverse, minlength=ids.size).astype(float)
    draws = np.random.default_rng(seed).integers(0, ids.size, size=(n_boot, ids.size))
    means = sums[draws].sum(1) / np.maximum(counts[draws].sum(1), 1e-12)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _row(preset: str, factors: tuple, fid, seed: int, note: str) -> Row:
    summary = fid.summary()
    tv, empty = fid.tv.double().cpu().numpy(), fid.empty.double().cpu().numpy()
    batch = fid.batch.cpu().numpy()
    key = zlib.crc32(repr((preset, factors)).encode())
    return Row(preset, factors, len(fid), summary["label_tv"], cluster_mean_ci(tv, batch, seed=key ^ seed),
               summary["empty_label_rate"], cluster_mean_ci(empty, batch, seed=key ^ seed ^ 1),
               summary["source_share"], summary["no_object_rate"], note)


# -- the measurement --------------------------------------------------------------------------------


def _plan(presets: Sequence[str] | None, sets: Mapping[str, list[Any]]):
    """[(preset, factors, mix config, data options)] and the notes on what was left out."""
    known = list_presets()
    explicit = presets is not None
    if explicit:
        for p in presets:
            if p not in known:
                raise UserError(f"--presets: unknown preset {p!r}{did_you_mean(p, known)}; allowed: {', '.join(known)}")
        if len(set(presets)) != len(presets):
            raise UserError("--presets: a preset is listed twice")
    else:
        presets = [p for p in known if p != "none"]
    multi = [k for k, v in sets.items() if len(v) > 1]
    fixed = {k: v[0] for k, v in sets.items() if len(v) == 1}
    plan, notes, failures, gradient_skipped = [], [], [], []
    for preset in presets:
        rows = []
        try:
            for combo in itertools.product(*(sets[k] for k in multi)):
                chosen = {**fixed, **dict(zip(multi, combo))}
                mix = {"preset": preset, **{k[4:]: v for k, v in chosen.items() if k.startswith("mix.")}}
                mixer = build_mixer(mix)  # validates the combination (raises ValueError)
                data = {k[5:]: v for k, v in chosen.items() if k.startswith("data.")}
                rows.append((preset, tuple(zip(multi, combo)), mix, data, mixer.needs_model))
        except ValueError as exc:
            if explicit:
                raise UserError(f"preset {preset}: {exc}") from None
            failures.append((preset, str(exc)))
            continue
        if not explicit and "mix.saliency" not in sets and any(r[4] for r in rows):  # the preset's own gradient
            gradient_skipped.append(preset)
            continue
        plan += [r[:4] + (UNTRAINED_NOTE if r[4] else "",) for r in rows]
    if gradient_skipped:
        notes.append(f"left out {', '.join(gradient_skipped)}: gradient saliency needs the trained model; name them "
                     f"in --presets to measure them with an {UNTRAINED_NOTE}")
    if failures:
        notes.append("left out " + "; ".join(f"{p} ({msg})" for p, msg in failures))
    if not plan:
        if failures:  # a value no preset accepts: the most specific reason first
            failures.sort(key=lambda f: "does not apply" in f[1])
            raise UserError(f"no preset accepts these settings: {failures[0][0]}: {failures[0][1]}")
        raise UserError("nothing to measure")
    return plan, notes


def measure(*, presets: Sequence[str] | None = None, sets: Mapping[str, list[Any]] | None = None,
            dataset: str = "synthetic_salient", pairs: int = DEFAULT_PAIRS, batch_size: int = DEFAULT_BATCH,
            seed: int = 0) -> tuple[list[Row], list[str], str]:
    """Measure every preset x factor combination; returns (rows, notes, a header line)."""
    sets = dict(sets or {})
    if dataset not in DATASETS:
        raise UserError(f"--dataset: unknown dataset {dataset!r}{did_you_mean(dataset, DATASETS.names())}; "
                        f"known: {', '.join(DATASETS.names())}")
    if pairs < 2:
        raise UserError(f"--pairs must be at least 2, got {pairs}")
    if batch_size < 2:
        raise UserError(f"--batch-size must be at least 2 (mixing pairs images within a batch), got {batch_size}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    _check_keys(sets, dataset)
    plan, notes = _plan(presets, sets)

    # only the train sample is read: render `pairs` train images and a token test split, unless set
    sizing = {k: v for k, v in (("train_size", pairs), ("test_size", 1)) if k in dataset_options(dataset)}
    samples: dict[str, tuple] = {}
    rows = []
    for preset, factors, mix, data, note in plan:
        data_key = repr(sorted(data.items()))
        if data_key not in samples:
            try:
                bundle = build_dataset(dataset, **{**sizing, **data})
                samples[data_key] = (bundle, *object_sample(bundle, pairs))
            except (ValueError, FileNotFoundError) as exc:  # bad data.* value, missing files, no masks
                raise UserError(str(exc)) from None
        bundle, images, labels, masks = samples[data_key]
        model = None
        if note:
            torch.manual_seed(seed)
            model = build_model("small_cnn", num_classes=bundle.num_classes, image_size=bundle.image_size,
                                mean=bundle.mean, std=bundle.std).train()
        mixer = always_mixing(mix, normalization=(bundle.mean, bundle.std))
        fid = measure_fidelity(mixer, images, labels, masks, num_classes=bundle.num_classes, batch_size=batch_size,
                               generator=torch.Generator().manual_seed(seed), model=model)
        rows.append(_row(preset, factors, fid, seed, note))
    first = next(iter(samples.values()))[0]
    opts = ", ".join(f"{k}={_show(v)}" for k, v in sorted(first.options.items())
                     if k not in ("train_size", "test_size") and f"data.{k}" not in sets)
    fixed = ", ".join(f"{k}={_show(v[0])}" for k, v in sets.items() if len(v) == 1)
    n_images = max(len(sample[2]) for sample in samples.values())
    header = (f"label fidelity on {dataset} ({opts}){'; ' + fixed if fixed else ''}: first {n_images} train images, "
              f"batches of {batch_size}, seed {seed}; mix.prob forced to 1.0 (every batch mixed)")
    return rows, notes, header


# -- output ------------------------------------------------------------------------------------------


def _ci(lo: float, hi: float, scale: float = 1.0, digits: int = 3) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "[n/a]"
    return f"[{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def format_table(rows: Sequence[Row], header: str, notes: Sequence[str]) -> str:
    """A plain-text table (markdown pipes), the header line first and the notes after."""
    cols = ["preset / factor", "label TV [95% CI]", "empty-label % [95% CI]", "source share", "no obj %", "n",
            "note"]
    body = [[r.label, f"{r.tv:.3f} {_ci(*r.tv_ci)}", f"{100 * r.empty:.1f} {_ci(*r.empty_ci, 100, 1)}",
             f"{r.source_share:.3f}", f"{100 * r.no_object:.1f}", str(r.n), r.note] for r in rows]
    if not any(r.note for r in rows):
        cols, body = cols[:-1], [b[:-1] for b in body]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [header, "", line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body), ""]
    out.append("label TV = 1/2 |soft label - visible object evidence|_1 (0: the label says what is visible); "
               "empty label = label weight > 0.1 on a class with no visible pixel; 95% CIs: bootstrap over batches.")
    out += [f"note: {n}" for n in notes]
    return "\n".join(out)


def plot(rows: Sequence[Row], path: str | Path, title: str) -> Path:
    """Two panels of horizontal bars (label TV, empty-label rate) with 95% CI whiskers."""
    from matplotlib.figure import Figure

    labels = [r.label + (f"\n({r.note})" if r.note else "") for r in rows]
    y = np.arange(len(rows))
    fig = Figure(figsize=(11, 1.2 + 0.42 * len(rows)), layout="constrained")
    panels = ((r.tv, r.tv_ci, 1.0) for r in rows), ((r.empty, r.empty_ci, 100.0) for r in rows)
    names = ("label TV (lower is better)", "empty-label rate, % (lower is better)")
    for i, (data, name) in enumerate(zip(panels, names)):
        ax = fig.add_subplot(1, 2, i + 1)
        data = list(data)
        means = np.array([m * s for m, _, s in data])
        lo = np.array([(m - c[0]) * s if math.isfinite(c[0]) else 0.0 for m, c, s in data])
        hi = np.array([(c[1] - m) * s if math.isfinite(c[1]) else 0.0 for m, c, s in data])
        colors = ["#dd8452" if r.note else "#4c72b0" for r in rows]
        ax.barh(y, np.nan_to_num(means), xerr=[np.maximum(lo, 0), np.maximum(hi, 0)], color=colors,
                edgecolor="black", linewidth=0.6, capsize=3, error_kw={"elinewidth": 1.0})
        for yi, m, h in zip(y, means, hi):
            if math.isfinite(m):
                ax.annotate(f"{m:.3f}" if i == 0 else f"{m:.1f}", (m + max(h, 0), yi), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=7)
        ax.set_yticks(y, labels if i == 0 else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        ax.set_xlim(0, max([1e-3, *(np.nan_to_num(means) + np.maximum(hi, 0))]) * 1.15)
    fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def write_csv(rows: Sequence[Row], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["preset", "factors", "n", "label_tv", "label_tv_ci_low", "label_tv_ci_high", "empty_label_rate",
                    "empty_ci_low", "empty_ci_high", "source_share", "no_object_rate", "note"])
        for r in rows:
            w.writerow([r.preset, ";".join(f"{k}={_show(v)}" for k, v in r.factors), r.n, r.tv, *r.tv_ci, r.empty,
                        *r.empty_ci, r.source_share, r.no_object, r.note])
    return path


def run_fidelity(*, presets: Sequence[str] | None, sets: Mapping[str, list[Any]], dataset: str, pairs: int,
                 batch_size: int, seed: int, out: str | None, png: str | None) -> tuple[str, list[Path]]:
    """Measure, then write the PNG (and, with `out`, a CSV); returns (the table text, written files)."""
    if out and png:
        raise UserError("give --out DIR or --png PATH, not both")
    if out:
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out {folder} is a file; give a folder")
        png_path, csv_path = folder / "fidelity.png", folder / "fidelity.csv"
    else:
        png_path, csv_path = Path(png or "mixsweep_fidelity.png"), None
        if png_path.is_dir():
            raise UserError(f"--png {png_path} is a directory; give a .png file path")
    rows, notes, header = measure(presets=presets, sets=sets, dataset=dataset, pairs=pairs, batch_size=batch_size,
                                  seed=seed)
    table = format_table(rows, header, notes)
    title = re.sub(r"(.{1,150})(?:\s+|$)", r"\1\n", header).strip()
    try:
        files = [plot(rows, png_path, title)]
        if csv_path is not None:
            files.append(write_csv(rows, csv_path))
    except OSError as exc:
        raise UserError(f"cannot write {png_path.parent}: {exc.strerror or exc}") from None
    return table, files

"""Train one classifier with the mixing core: resumable, reproducible, without Ray.

    train(config, workdir=DIR) -> final metrics
    python -m trainables.train --config FILE.yaml --workdir DIR [--set key=value ...]

This module is the run around the training loop (`trainables.loop`): the workdir's files, resuming,
the per-epoch callback, the command line. Writes into DIR (`trainables.trialdir.TrialDir`):
`config.yaml` (the resolved config), `metrics.jsonl` (one line per epoch), `checkpoints/epoch_NNNN.pt`
(the last two), `preview.png` (the first mixed batch) and, at the end, `final.json`. Re-running on
the same DIR resumes from the newest checkpoint; a finished DIR returns its final metrics at once.
On CPU, a run killed (even with SIGKILL) after any epoch and re-run ends bit-identical to an
uninterrupted one: the data order and the mixing parameters of epoch e come from generators seeded
by (seed, e), and every other RNG state is checkpointed.

Metric names (MLflow and the report use them): train/loss, test/loss, test/top1_err,
test/top5_err, lr, time/epoch_s, time/mix_s, throughput/img_s; final: final/top1_err,
final/top5_err, best/top1_err, robust/fgsm_top1_err, robust/noise_top1_err, cost/device_s.
Errors are in percent. On a dataset with object masks (`DatasetBundle.object_masks`, e.g.
synthetic_salient) every epoch also logs the label fidelity of the trial's mixing
(`trainables.mixing.fidelity`): mix/label_tv (mean total variation between soft label and visible
object evidence) and mix/empty_label_rate, measured after the epoch on a fixed sample of
`trainables.loop.FIDELITY_IMAGES` un-augmented train images mixed by the trial's mixer with `prob` forced to 1 and
the current model (gradient saliency), with its own generator seeded by (seed, epoch): the training
RNG streams, the model and the checkpoints are untouched, so resumed runs stay bit-identical.
Datasets without masks log neither key.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from .checkpoint import ForeignCheckpoint, load_latest, save_checkpoint
from .config import ConfigError, TrainConfig, flatten, identity, parse_set, trial_hashes, validate_config
from .loop import TrainingDiverged, TrainState, TrialSetup, build_trial, run_epoch
from .mixing import MixOutput
from .render import render_rows, rows_from_output
from .runtime import keep_freed_memory
from .tracking import apply_http_defaults
from .trialdir import TrialDir, read_config, write_config
from .yamlio import YamlLimitError, describe, load_yaml, read_bounded

EpochCallback = Callable[[dict[str, float], Path, bool], None]


class SetupError(RuntimeError):
    """The trial cannot start: a bad config value, missing data files, a model that does not build, a
    workdir that belongs to another run. Deterministic: running it again fails the same way."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Preview:
    """Renders the trial's first mixed batch (its first batch, for `none`) into preview.png, once per trial.

    A `MixObserver` for `train_one_epoch`; a folder that already has its preview gets none.
    """

    def __init__(self, path: Path, setup: TrialSetup) -> None:
        self.path, self.setup, self.done = path, setup, path.exists()

    def __call__(self, images: Tensor, out: MixOutput, epoch: int) -> None:
        if self.done or not (out.info.applied or not self.setup.mixer.config.mixes):
            return
        data = self.setup.data
        names = data.class_names or tuple(str(i) for i in range(data.num_classes))
        idx = list(range(min(6, images.shape[0])))
        rows = rows_from_output(images, out, names, idx, [f"sample {i}" for i in idx])
        what = "first mixed batch" if out.info.applied else "first batch (no mixing)"
        render_rows(rows, self.path, title=f"{self.setup.cfg.mix.preset or 'custom'}: {what} of epoch {epoch + 1}")
        self.done = True


def _restore(state: TrainState, trial_dir: TrialDir, setup: TrialSetup, verbose: bool) -> None:
    """Continue from the newest checkpoint that loads, if there is one (ForeignCheckpoint: not this run's)."""
    ckpt = load_latest(trial_dir.checkpoints, map_location=setup.device, run_hash=_run_hash(setup.cfg))
    if ckpt is None:
        return
    state.load(ckpt)
    if verbose:
        _log(f"resuming {trial_dir.folder} after epoch {state.epoch}/{setup.cfg.epochs}")


def _run(setup: TrialSetup, state: TrainState, trial_dir: TrialDir, on_epoch: EpochCallback | None,
         verbose: bool) -> dict[str, float]:
    """The epochs left, each saved (checkpoint, metrics.jsonl) before it is reported; then final.json.

    final.json is written here and nowhere else: after the last checkpoint (which holds the same final
    metrics, so a kill in between loses nothing) and before the last epoch is reported (the report's
    checkpoint carries it to Ray).
    """
    cfg = setup.cfg
    trial_dir.write_metrics(state.history)
    preview = Preview(trial_dir.preview, setup)
    last: tuple[dict[str, float], Path] | None = None
    while state.epoch < cfg.epochs:
        metrics = run_epoch(setup, state, on_mixed=preview)
        path = save_checkpoint(trial_dir.checkpoints, state.epoch, state.checkpoint(), run_hash=_run_hash(cfg))
        trial_dir.write_metrics(state.history)
        if verbose:
            _log(f"epoch {state.epoch}/{cfg.epochs}  train/loss {metrics['train/loss']:.4f}  "
                 f"test/top1_err {metrics['test/top1_err']:.2f}  lr {metrics['lr']:.4g}  "
                 f"{metrics['time/epoch_s']:.1f}s (mix {metrics['time/mix_s']:.2f}s)  "
                 f"{metrics['throughput/img_s']:.0f} img/s")
        if state.final is not None:
            last = metrics, path
        elif on_epoch is not None:
            on_epoch(metrics, path, False)
    if state.final is None:  # resumed a checkpoint written before epochs were raised: nothing to do
        raise RuntimeError(f"{trial_dir.folder}: checkpoint at epoch {state.epoch} has no final metrics")
    trial_dir.write_final(state.final)
    if last is not None and on_epoch is not None:
        on_epoch({**last[0], **state.final}, last[1], True)
    return state.final


def _run_hash(cfg: TrainConfig) -> str:
    """The run a checkpoint belongs to: written into each one, checked when one is resumed."""
    return trial_hashes(cfg)[1]


def _check_workdir_config(workdir: Path, cfg: TrainConfig, *, owned: bool) -> None:
    """A workdir belongs to one config: resuming it with another one is a user error.

    `owned`: the folder is named after this config's hash (a sweep trial's workdir), so an unreadable
    `config.yaml` there is rewritten instead of refused.
    """
    path = TrialDir(workdir).config
    mine = identity(cfg.flat())
    if not path.exists():
        write_config(workdir, cfg)
        return
    try:
        theirs = identity(read_config(path))
    except ConfigError as exc:
        if not owned:
            raise ConfigError((), f"{exc}; it records which config {workdir} belongs to: delete it if the folder is "
                              "this run's, or use another --workdir") from None
        _log(f"mixsweep: {exc}; rewriting it (this trial's folder is named after its config)")
        write_config(workdir, cfg)
        return
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise ConfigError((), f"{workdir} holds a run with a different config (differs in: {', '.join(diff)}); "
                          "use another --workdir")


def _read_final(path: Path) -> dict[str, float] | None:
    """final.json, or None when it cannot be read (the last checkpoint holds the same metrics)."""
    try:
        final = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _log(f"mixsweep: {path} cannot be read ({type(exc).__name__}); restoring it from the last checkpoint")
        return None
    return final if isinstance(final, dict) else None


def train(config: Mapping[str, Any] | TrainConfig, *, workdir: str | Path, on_epoch: EpochCallback | None = None,
          verbose: bool = True, owned: bool = False) -> dict[str, float]:
    """Train (or resume, or return the result of) the run described by `config` in `workdir`.

    Args:
        config: dotted or nested keys (see `trainables.config`), or a validated TrainConfig.
        workdir: the run's folder; created if missing.
        on_epoch: called after every epoch with (metrics, checkpoint path, finished); the final
            epoch's metrics include the final/* ones.
        verbose: one progress line per epoch on stderr.
        owned: `workdir` is named after this config (a sweep trial): a damaged config.yaml is rewritten.

    Raises:
        ConfigError: bad config, or a workdir that belongs to another config.
        SetupError: the trial cannot start (data files missing, a value its dataset or model refuses, a newest
            checkpoint that another run wrote).
        TrainingDiverged: the loss became NaN/inf (names the epoch and step).
    """
    cfg = validate_config(config)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    trial_dir = TrialDir(workdir)
    _check_workdir_config(workdir, cfg, owned=owned)
    try:
        if trial_dir.final.exists() and (final := _read_final(trial_dir.final)) is not None:
            if trial_dir.epochs_done() != final.get("epochs"):  # a damaged metrics.jsonl: the checkpoint has them
                ckpt = load_latest(trial_dir.checkpoints, run_hash=_run_hash(cfg))
                if ckpt is not None:
                    trial_dir.write_metrics(ckpt["history"])
            return final
        try:
            setup, state = build_trial(cfg)
        except (ValueError, TypeError, FileNotFoundError) as exc:  # ConfigError, DatasetNotFoundError included
            raise SetupError(f"{type(exc).__name__}: {exc}") from exc
        _restore(state, trial_dir, setup, verbose)
    except ForeignCheckpoint as exc:
        raise SetupError(str(exc)) from None
    return _run(setup, state, trial_dir, on_epoch, verbose)  # at once when killed between checkpoint and final


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError((), f"config file {path} does not exist")
    try:
        data = load_yaml(read_bounded(path).decode("utf-8"))
    except YamlLimitError as exc:
        raise ConfigError((), f"{path}: refused: {describe(exc)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError((), f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError((), f"{path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables.train", description="Train one trial without Ray.")
    parser.add_argument("--config", help="YAML file of config keys (nested maps or dotted keys)")
    parser.add_argument("--workdir", required=True, help="run folder (resumed if it holds a checkpoint)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    args = parser.parse_args(argv)
    keep_freed_memory()
    apply_http_defaults()
    try:
        raw = load_yaml_config(args.config) if args.config else {}
        raw = {**flatten(raw), **parse_set(args.set)}
        result = train(raw, workdir=args.workdir, verbose=not args.quiet)
    except (ConfigError, SetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

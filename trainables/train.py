"""Train one classifier with the mixing core: resumable, reproducible, without Ray.

    train(config, workdir=DIR) -> final metrics
    python -m trainables.train --config FILE.yaml --workdir DIR [--set key=value ...]

Writes into DIR: `config.yaml` (the resolved config), `metrics.jsonl` (one line per epoch),
`checkpoints/epoch_NNNN.pt` (the last two), `preview.png` (the first mixed batch) and, at the
end, `final.json`. Re-running on the same DIR resumes from the newest checkpoint; a finished DIR
returns its final metrics at once. On CPU, a run killed (even with SIGKILL) after any epoch and
re-run ends bit-identical to an uninterrupted one: the data order and the mixing parameters of
epoch e come from generators seeded by (seed, e), and every other RNG state is checkpointed.

Metric names (MLflow and the report use them): train/loss, test/loss, test/top1_err,
test/top5_err, lr, time/epoch_s, time/mix_s, throughput/img_s; final: final/top1_err,
final/top5_err, best/top1_err, robust/fgsm_top1_err, robust/noise_top1_err, cost/device_s.
Errors are in percent. On a dataset with object masks (`DatasetBundle.object_masks`, e.g.
synthetic_salient) every epoch also logs the label fidelity of the trial's mixing
(`trainables.mixing.fidelity`): mix/label_tv (mean total variation between soft label and visible
object evidence) and mix/empty_label_rate, measured after the epoch on a fixed sample of
`FIDELITY_IMAGES` un-augmented train images mixed by the trial's mixer with `prob` forced to 1 and
the current model (gradient saliency), with its own generator seeded by (seed, epoch): the training
RNG streams, the model and the checkpoints are untouched, so resumed runs stay bit-identical.
Datasets without masks log neither key.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .checkpoint import (
    CONFIG_FILE,
    atomic_write_text,
    load_latest,
    read_metrics,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig, flatten, identity, parse_set, validate_config
from .evaluate import evaluate, robustness
from .optim import LOSSES, build_optimizer, build_scheduler

EpochCallback = Callable[[dict[str, float], Path, bool], None]
#: streams of per-epoch seeds: SeedSequence([seed, epoch, stream])
DATA_STREAM, MIX_STREAM, EVAL_STREAM, FIDELITY_STREAM = 1, 2, 3, 4
#: train images (the first ones, un-augmented) whose mixing is measured for label fidelity each epoch
FIDELITY_IMAGES = 256
#: on an accelerator, the divergence flag is read back every this many steps (and at epoch end)
CHECK_EVERY = 25


class SetupError(RuntimeError):
    """The trial cannot start: a bad config value, missing data files, a model that does not build, a
    workdir that belongs to another run. Deterministic: running it again fails the same way."""


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the message names the epoch and the step."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"training diverged: non-finite loss at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' was requested but no CUDA device is available here (use auto or cpu)")
    return torch.device(name)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Trial:
    """The state of one training run; `run()` does the epochs."""

    def __init__(self, cfg: TrainConfig, workdir: Path, on_epoch: EpochCallback | None, verbose: bool) -> None:
        from .data import build_dataset, make_loader
        from .mixing import build_mixer
        from .models import build_model

        self.cfg, self.workdir, self.on_epoch, self.verbose = cfg, workdir, on_epoch, verbose
        self.device = pick_device(cfg.device)
        self.amp_dtype = torch.bfloat16 if cfg.amp and self.device.type == "cuda" else None
        torch.manual_seed(cfg.seed)
        self.data = build_dataset(cfg.dataset, **cfg.data)
        self.model = build_model(cfg.model, num_classes=self.data.num_classes, image_size=self.data.image_size,
                                 mean=self.data.mean, std=self.data.std, **cfg.model_opts).to(self.device)
        self.data_gen, self.mix_gen = torch.Generator(), torch.Generator()
        self.train_loader = make_loader(self.data.train, cfg.batch_size, train=True, generator=self.data_gen,
                                        device=self.device, num_workers=cfg.workers)
        self.test_loader = make_loader(self.data.test, cfg.eval.batch_size or 2 * cfg.batch_size, train=False,
                                       device=self.device, num_workers=cfg.workers)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, cfg.epochs, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)  # bf16 autocast needs no scaling
        self.mixer = build_mixer(cfg.mix, label_smoothing=cfg.label_smoothing,
                                 normalization=(self.data.mean, self.data.std))
        self.fidelity = self._fidelity_sample()
        self.loss_fn = LOSSES[cfg.loss]
        self.epoch, self.best, self.cost_s, self.history = 0, float("inf"), 0.0, []
        self.final: dict[str, float] | None = None
        self.previewed = (workdir / "preview.png").exists()

    def _fidelity_sample(self) -> tuple | None:
        """(mixer with prob 1, images, labels, masks on the device) or None: the dataset has no masks."""
        from .data import object_sample
        from .mixing.fidelity import always_mixing

        if self.data.object_masks is None:
            return None
        images, labels, masks = object_sample(self.data, FIDELITY_IMAGES)
        mixer = always_mixing(self.cfg.mix, normalization=(self.data.mean, self.data.std))
        return mixer, images.to(self.device), labels.to(self.device), masks.to(self.device)

    def measure_fidelity(self) -> dict[str, float]:
        """mix/label_tv and mix/empty_label_rate of this epoch's model and mixer ({} without masks).

        Nothing of the training state moves: own generator, the global RNG forked (dropout in the
        gradient-saliency pass), the model's mode restored (its buffers are restored by the saliency).
        """
        if self.fidelity is None:
            return {}
        from .mixing.fidelity import measure_fidelity

        mixer, images, labels, masks = self.fidelity
        g = torch.Generator().manual_seed(stream_seed(self.cfg.seed, self.epoch, FIDELITY_STREAM))
        was_training = self.model.training
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.model.train()  # the saliency pass sees the model as the training step does
            try:
                fid = measure_fidelity(mixer, images, labels, masks, num_classes=self.data.num_classes,
                                       batch_size=max(2, min(self.cfg.batch_size, images.shape[0])), generator=g,
                                       model=self.model)
            finally:
                self.model.train(was_training)
        summary = fid.summary()
        out = {"mix/empty_label_rate": summary["empty_label_rate"]}
        if summary["label_tv"] == summary["label_tv"]:  # NaN: no sample showed any object
            out["mix/label_tv"] = summary["label_tv"]
        return out

    # -- state ------------------------------------------------------------------------------
    def restore(self) -> None:
        state = load_latest(self.workdir / "checkpoints", map_location=self.device)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], {"data": self.data_gen, "mix": self.mix_gen})
        self.epoch, self.best, self.cost_s = state["epoch"], state["best"], state["cost_s"]
        self.history, self.final = list(state["history"]), state.get("final")
        if self.verbose:
            _log(f"resuming {self.workdir} after epoch {self.epoch}/{self.cfg.epochs}")

    def save(self) -> Path:
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state({"data": self.data_gen, "mix": self.mix_gen}),
            "best": self.best, "cost_s": self.cost_s, "history": self.history, "final": self.final,
        }
        return save_checkpoint(self.workdir / "checkpoints", self.epoch, state)

    def write_metrics(self) -> None:
        write_metrics(self.workdir, self.history)

    # -- one epoch --------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        self.model.train()
        self.data_gen.manual_seed(stream_seed(cfg.seed, self.epoch, DATA_STREAM))
        self.mix_gen.manual_seed(stream_seed(cfg.seed, self.epoch, MIX_STREAM))
        loss_sum = torch.zeros((), device=dev)
        bad_step = torch.full((), -1, dtype=torch.long, device=dev)
        seen, mix_s, events = 0, 0.0, []
        start = time.perf_counter()
        for step, (images, labels) in enumerate(self.train_loader):
            if dev.type == "cuda":
                ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                ev[0].record()
            else:
                t0 = time.perf_counter()
            out = self.mixer(images, labels, num_classes=self.data.num_classes, generator=self.mix_gen,
                             model=self.model, check=step == 0)
            if dev.type == "cuda":
                ev[1].record()
                events.append(ev)
            else:
                mix_s += time.perf_counter() - t0
            if not self.previewed and (out.info.applied or not self.mixer.config.mixes):  # `none`: as it is
                self.render_preview(images, out)
                self.previewed = True
            with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                logits = self.model(out.images)
            loss = self.loss_fn(logits.float(), out.targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            loss = loss.detach()
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step, bad_step)
            loss_sum += loss * labels.shape[0]
            seen += labels.shape[0]
            if (dev.type == "cpu" or step % CHECK_EVERY == 0) and int(bad_step) >= 0:
                raise TrainingDiverged(self.epoch + 1, int(bad_step))
        if int(bad_step) >= 0:
            raise TrainingDiverged(self.epoch + 1, int(bad_step))
        if events:
            torch.cuda.synchronize()
            mix_s = sum(a.elapsed_time(b) for a, b in events) / 1000.0
        elapsed = time.perf_counter() - start
        return {"train/loss": float(loss_sum) / max(seen, 1), "lr": self.optimizer.param_groups[0]["lr"],
                "time/epoch_s": elapsed, "time/mix_s": mix_s, "throughput/img_s": seen / max(elapsed, 1e-9)}

    def render_preview(self, images: torch.Tensor, out) -> None:
        from .render import render_rows, rows_from_output

        names = self.data.class_names or tuple(str(i) for i in range(self.data.num_classes))
        idx = list(range(min(6, images.shape[0])))
        rows = rows_from_output(images, out, names, idx, [f"sample {i}" for i in idx])
        what = "first mixed batch" if out.info.applied else "first batch (no mixing)"
        title = f"{self.cfg.mix.preset or 'custom'}: {what} of epoch {self.epoch + 1}"
        render_rows(rows, self.workdir / "preview.png", title=title)

    def finish(self, metrics: dict[str, float]) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        robust = {}
        if cfg.eval.robust_size:
            g = torch.Generator().manual_seed(stream_seed(cfg.seed, 0, EVAL_STREAM))
            robust = robustness(self.model, self.test_loader, size=cfg.eval.robust_size, fgsm_eps=cfg.eval.fgsm_eps,
                                noise_sigma=cfg.eval.noise_sigma, generator=g)
        self.cost_s += time.perf_counter() - t0
        return {"final/top1_err": metrics["test/top1_err"], "final/top5_err": metrics["test/top5_err"],
                "best/top1_err": self.best, **robust, "cost/device_s": self.cost_s, "epochs": self.epoch}

    def run(self) -> dict[str, float]:
        cfg = self.cfg
        self.write_metrics()
        while self.epoch < cfg.epochs:
            metrics = self.train_epoch()
            t0 = time.perf_counter()
            metrics.update(evaluate(self.model, self.test_loader, self.amp_dtype))
            self.cost_s += metrics["time/epoch_s"] + time.perf_counter() - t0
            metrics.update(self.measure_fidelity())  # a diagnostic: not part of the trial's cost
            self.epoch += 1
            self.best = min(self.best, metrics["test/top1_err"])
            metrics = {"epoch": self.epoch, **metrics, "best/top1_err": self.best}  # per epoch: for ASHA/Optuna
            if self.epoch == cfg.epochs:
                self.final = self.finish(metrics)
            self.history.append(metrics)
            path = self.save()
            self.write_metrics()
            if self.final is not None:
                atomic_write_text(self.workdir / "final.json", json.dumps(self.final, indent=1) + "\n")
            if self.verbose:
                _log(f"epoch {self.epoch}/{cfg.epochs}  train/loss {metrics['train/loss']:.4f}  "
                     f"test/top1_err {metrics['test/top1_err']:.2f}  lr {metrics['lr']:.4g}  "
                     f"{metrics['time/epoch_s']:.1f}s (mix {metrics['time/mix_s']:.2f}s)  "
                     f"{metrics['throughput/img_s']:.0f} img/s")
            if self.on_epoch is not None:
                self.on_epoch({**metrics, **(self.final or {})}, path, self.final is not None)
        if self.final is None:  # resumed a checkpoint written before epochs were raised: nothing to do
            raise RuntimeError(f"{self.workdir}: checkpoint at epoch {self.epoch} has no final metrics")
        atomic_write_text(self.workdir / "final.json", json.dumps(self.final, indent=1) + "\n")
        return self.final


def write_metrics(workdir: Path, history: list[dict[str, Any]]) -> None:
    """`metrics.jsonl`: one line per epoch, replaced as a whole (never a torn line from us)."""
    atomic_write_text(workdir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def write_config(workdir: Path, cfg: TrainConfig) -> None:
    """`config.yaml`: the resolved config as dotted keys; `read_config` + `validate_config` give `cfg` back."""
    atomic_write_text(workdir / CONFIG_FILE, yaml.safe_dump(cfg.flat(), sort_keys=False))


def read_config(path: Path) -> dict[str, Any]:
    """A `config.yaml` written by `write_config`; ConfigError naming the file when it cannot be read."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError((), f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError((), f"{path} cannot be read (expected a mapping of config keys, got {type(data).__name__})")
    return data


def _check_workdir_config(workdir: Path, cfg: TrainConfig, *, owned: bool) -> None:
    """A workdir belongs to one config: resuming it with another one is a user error.

    `owned`: the folder is named after this config's hash (a sweep trial's workdir), so an unreadable
    `config.yaml` there is rewritten instead of refused.
    """
    path = workdir / CONFIG_FILE
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
        SetupError: the trial cannot start (data files missing, a value its dataset or model refuses).
        TrainingDiverged: the loss became NaN/inf (names the epoch and step).
    """
    cfg = validate_config(config)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    final_path = workdir / "final.json"
    _check_workdir_config(workdir, cfg, owned=owned)
    if final_path.exists() and (final := _read_final(final_path)) is not None:
        if len(read_metrics(workdir)) != final.get("epochs"):  # a damaged metrics.jsonl: the checkpoint has them
            state = load_latest(workdir / "checkpoints")
            if state is not None:
                write_metrics(workdir, state["history"])
        return final
    try:
        trial = _Trial(cfg, workdir, on_epoch, verbose)
    except (ValueError, TypeError, FileNotFoundError) as exc:  # ConfigError, DatasetNotFoundError included
        raise SetupError(f"{type(exc).__name__}: {exc}") from exc
    trial.restore()
    if trial.final is not None:  # killed between the last checkpoint and final.json
        atomic_write_text(final_path, json.dumps(trial.final, indent=1) + "\n")
        return trial.final
    return trial.run()


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError((), f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
    from .runtime import keep_freed_memory

    keep_freed_memory()
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

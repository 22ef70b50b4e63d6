"""One trial's training as data and small functions: no files, no callbacks (those are `trainables.train`).

    setup, state = build_trial(cfg)        # TrialSetup: built once, never saved; TrainState: all that is saved
    metrics = run_epoch(setup, state)      # reseed_epoch + train_one_epoch + evaluate + epoch_fidelity (+ the end)
    save_checkpoint(folder, state.epoch, state.checkpoint())

Reproducibility: the data order and the mixing parameters of epoch e come from generators reseeded
by (seed, e) (`reseed_epoch`); every other RNG state (torch CPU and CUDA, both generators) is in
`TrainState.checkpoint()`, so on CPU a run restored after any epoch ends bit-identical to one that
never stopped. The label-fidelity probe (`epoch_fidelity`) and the robustness evaluation
(`final_metrics`) use generators of their own and leave every training stream untouched.

AMP: bf16 autocast on CUDA when `amp` is on; bf16 has float32's range, so there is no loss scaling
(checkpoints of older versions carry a disabled GradScaler's state: `TrainState.load` ignores it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import restore_rng, rng_state
from .config import ConfigError, TrainConfig
from .data import DatasetBundle, Loader, build_dataset, make_loader, object_sample
from .evaluate import evaluate, robustness
from .mixing import Mixer, MixOutput, build_mixer
from .mixing.fidelity import always_mixing, measure_fidelity
from .models import build_model
from .optim import LOSSES, build_optimizer, build_scheduler
from .timing import DeviceTimer

#: streams of per-epoch seeds: SeedSequence([seed, epoch, stream])
DATA_STREAM, MIX_STREAM, EVAL_STREAM, FIDELITY_STREAM = 1, 2, 3, 4
#: train images (the first ones, un-augmented) whose mixing is measured for label fidelity each epoch
FIDELITY_IMAGES = 256
#: on an accelerator, the divergence flag is read back every this many steps (and at epoch end)
CHECK_EVERY = 25

#: called with (images, mixed output, epoch index) after every mixing step (the preview watches it)
MixObserver = Callable[[Tensor, MixOutput, int], None]


class TrainingDiverged(RuntimeError):
    """The loss became non-finite; the message names the epoch and the step."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"training diverged: non-finite loss at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """The seed of `stream` in `epoch` of a run seeded by `seed`."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


def pick_device(name: str) -> torch.device:
    """The device of config value `name` (auto: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "'cuda' was requested but no CUDA device is available here (use auto or cpu)")
    return torch.device(name)


@dataclass(frozen=True)
class FidelityProbe:
    """The label-fidelity sample of a dataset with object masks, on the trial's device."""

    mixer: Mixer  #: the trial's mixer with `prob` forced to 1
    images: Tensor
    labels: Tensor
    masks: Tensor


@dataclass(frozen=True)
class TrialSetup:
    """What a trial builds once from its config and never changes or saves."""

    cfg: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None  #: bf16 autocast on CUDA when `amp` is on, else None
    data: DatasetBundle
    train_loader: Loader
    test_loader: Loader
    mixer: Mixer
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    fidelity: FidelityProbe | None  #: None: the dataset has no object masks


@dataclass
class TrainState:
    """What changes from epoch to epoch; all of it goes into the checkpoint (`checkpoint()` / `load()`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_gen: torch.Generator  #: the data order and augmentation, reseeded every epoch
    mix_gen: torch.Generator  #: the mixing parameters, reseeded every epoch
    epoch: int = 0  #: completed epochs
    best: float = math.inf  #: the best test/top1_err so far
    cost_s: float = 0.0  #: device seconds spent (training and evaluation; not the fidelity probe)
    history: list[dict[str, float]] = field(default_factory=list)  #: every completed epoch's metrics
    final: dict[str, float] | None = None  #: the final metrics, once the last epoch is done

    def _generators(self) -> dict[str, torch.Generator]:
        return {"data": self.data_gen, "mix": self.mix_gen}

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint's content (`save_checkpoint` adds the format and the epoch)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(self._generators()),
                "best": self.best, "cost_s": self.cost_s, "history": self.history, "final": self.final}

    def load(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from checkpoint `ckpt` (a "scaler" entry of older versions is ignored)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt["rng"], self._generators())
        self.epoch, self.best, self.cost_s = ckpt["epoch"], ckpt["best"], ckpt["cost_s"]
        self.history, self.final = list(ckpt["history"]), ckpt.get("final")


def build_trial(cfg: TrainConfig) -> tuple[TrialSetup, TrainState]:
    """Build a fresh trial; ValueError / TypeError / FileNotFoundError when its config, data or model cannot be.

    The global RNG is seeded first and everything that draws from it is built in a fixed order (the model's
    initial weights depend on it).
    """
    device = pick_device(cfg.device)
    amp_dtype = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
    torch.manual_seed(cfg.seed)
    data = build_dataset(cfg.dataset, **cfg.data)
    model = build_model(cfg.model, num_classes=data.num_classes, image_size=data.image_size, mean=data.mean,
                        std=data.std, **cfg.model_opts).to(device)
    data_gen, mix_gen = torch.Generator(), torch.Generator()
    train_loader = make_loader(data.train, cfg.batch_size, train=True, generator=data_gen, device=device,
                               num_workers=cfg.workers)
    test_loader = make_loader(data.test, cfg.eval.batch_size or 2 * cfg.batch_size, train=False, device=device,
                              num_workers=cfg.workers)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, cfg.epochs, len(train_loader))
    normalization = (data.mean, data.std)
    mixer = build_mixer(cfg.mix, label_smoothing=cfg.label_smoothing, normalization=normalization)
    fidelity = None
    if data.object_masks is not None:
        images, labels, masks = object_sample(data, FIDELITY_IMAGES)
        fidelity = FidelityProbe(always_mixing(cfg.mix, normalization=normalization), images.to(device),
                                 labels.to(device), masks.to(device))
    setup = TrialSetup(cfg, device, amp_dtype, data, train_loader, test_loader, mixer, LOSSES[cfg.loss], fidelity)
    return setup, TrainState(model, optimizer, scheduler, data_gen, mix_gen)


def reseed_epoch(state: TrainState, seed: int) -> None:
    """Seed the data and mixing generators for epoch `state.epoch`: an epoch's draws depend on (seed, epoch) only."""
    state.data_gen.manual_seed(stream_seed(seed, state.epoch, DATA_STREAM))
    state.mix_gen.manual_seed(stream_seed(seed, state.epoch, MIX_STREAM))


def train_step(setup: TrialSetup, state: TrainState, images: Tensor, targets: Tensor) -> Tensor:
    """One optimisation step on a mixed batch (autocast forward, float32 loss, backward, optimizer and LR step);
    returns the detached loss."""
    device, amp = setup.device, setup.amp_dtype
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = state.model(images)
    loss = setup.loss_fn(logits.float(), targets)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    return loss.detach()


class DivergenceWatch:
    """Finds the first non-finite loss of an epoch. On the CPU every step is checked; on an accelerator the
    flag stays on the device and is read back every `CHECK_EVERY` steps and by `check()` (no sync per step).

    Args:
        device: where the losses live.
        epoch: the 1-based epoch the error names.
    """

    def __init__(self, device: torch.device, epoch: int) -> None:
        self.epoch, self.every = epoch, 1 if device.type == "cpu" else CHECK_EVERY
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def observe(self, step: int, loss: Tensor) -> None:
        """Note step `step`'s loss; raises TrainingDiverged when a read-back finds a non-finite one."""
        self.bad_step = torch.where((self.bad_step < 0) & ~torch.isfinite(loss), step, self.bad_step)
        if step % self.every == 0:
            self.check()

    def check(self) -> None:
        """Raise TrainingDiverged naming the first non-finite step, if there was one."""
        if int(self.bad_step) >= 0:
            raise TrainingDiverged(self.epoch, int(self.bad_step))


def train_one_epoch(setup: TrialSetup, state: TrainState, *, on_mixed: MixObserver | None = None) -> dict[str, float]:
    """One pass over the training data (the generators as they are: see `reseed_epoch`).

    Returns train/loss, lr, time/epoch_s, time/mix_s (the mixer's share) and throughput/img_s; raises
    TrainingDiverged on a non-finite loss. `state.epoch` is not advanced here.
    """
    state.model.train()
    loss_sum = torch.zeros((), device=setup.device)
    watch = DivergenceWatch(setup.device, state.epoch + 1)
    epoch_timer, mix_timer = DeviceTimer(setup.device), DeviceTimer(setup.device)
    seen = 0
    with epoch_timer.region():
        for step, (images, labels) in enumerate(setup.train_loader):
            with mix_timer.region():
                out = setup.mixer(images, labels, num_classes=setup.data.num_classes, generator=state.mix_gen,
                                  model=state.model, check=step == 0)
            if on_mixed is not None:
                on_mixed(images, out, state.epoch)
            loss = train_step(setup, state, out.images, out.targets)
            loss_sum += loss * labels.shape[0]
            seen += labels.shape[0]
            watch.observe(step, loss)
        watch.check()
    elapsed = epoch_timer.seconds()
    return {"train/loss": float(loss_sum) / max(seen, 1), "lr": state.optimizer.param_groups[0]["lr"],
            "time/epoch_s": elapsed, "time/mix_s": mix_timer.seconds(),
            "throughput/img_s": seen / max(elapsed, 1e-9)}


def epoch_fidelity(setup: TrialSetup, state: TrainState) -> dict[str, float]:
    """mix/label_tv and mix/empty_label_rate of this epoch's model and mixer ({} without object masks).

    Nothing of the training state moves: own generator, the global RNG forked (dropout in the
    gradient-saliency pass), the model's mode restored (its buffers are restored by the saliency).
    """
    probe = setup.fidelity
    if probe is None:
        return {}
    g = torch.Generator().manual_seed(stream_seed(setup.cfg.seed, state.epoch, FIDELITY_STREAM))
    model, was_training = state.model, state.model.training
    devices = [setup.device] if setup.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.train()  # the saliency pass sees the model as the training step does
        try:
            fid = measure_fidelity(probe.mixer, probe.images, probe.labels, probe.masks,
                                   num_classes=setup.data.num_classes,
                                   batch_size=max(2, min(setup.cfg.batch_size, probe.images.shape[0])), generator=g,
                                   model=model)
        finally:
            model.train(was_training)
    summary = fid.summary()
    out = {"mix/empty_label_rate": summary["empty_label_rate"]}
    if summary["label_tv"] == summary["label_tv"]:  # NaN: no sample showed any object
        out["mix/label_tv"] = summary["label_tv"]
    return out


def final_metrics(setup: TrialSetup, state: TrainState, last: Mapping[str, float]) -> dict[str, float]:
    """The final metrics after the last epoch (`last`: its metrics): errors, robustness, cost.

    The robustness evaluation (when `eval.robust_size` > 0) draws from its own generator; its time is
    added to `state.cost_s`.
    """
    cfg = setup.cfg
    timer = DeviceTimer(None)
    robust: dict[str, float] = {}
    with timer.region():
        if cfg.eval.robust_size:
            g = torch.Generator().manual_seed(stream_seed(cfg.seed, 0, EVAL_STREAM))
            robust = robustness(state.model, setup.test_loader, size=cfg.eval.robust_size,
                                fgsm_eps=cfg.eval.fgsm_eps, noise_sigma=cfg.eval.noise_sigma, generator=g)
    state.cost_s += timer.seconds()
    return {"final/top1_err": last["test/top1_err"], "final/top5_err": last["test/top5_err"],
            "best/top1_err": state.best, **robust, "cost/device_s": state.cost_s, "epochs": state.epoch}


def run_epoch(setup: TrialSetup, state: TrainState, *, on_mixed: MixObserver | None = None) -> dict[str, float]:
    """Train, evaluate and measure epoch `state.epoch + 1`, then advance `state` (epoch, best, cost, history;
    `final` after the last epoch). Returns the epoch's metrics as `metrics.jsonl` and the reports show them."""
    reseed_epoch(state, setup.cfg.seed)
    metrics = train_one_epoch(setup, state, on_mixed=on_mixed)
    timer = DeviceTimer(None)
    with timer.region():
        metrics.update(evaluate(state.model, setup.test_loader, setup.amp_dtype))
    state.cost_s += metrics["time/epoch_s"] + timer.seconds()
    metrics.update(epoch_fidelity(setup, state))  # a diagnostic: not part of the trial's cost
    state.epoch += 1
    state.best = min(state.best, metrics["test/top1_err"])
    metrics = {"epoch": state.epoch, **metrics, "best/top1_err": state.best}  # per epoch: for ASHA/Optuna
    if state.epoch == setup.cfg.epochs:
        state.final = final_metrics(setup, state, metrics)
    state.history.append(metrics)
    return metrics

"""Optimizer, learning-rate schedule and losses of a trial.

The schedule is a per-iteration `LambdaLR` over fractional epochs, so multistep milestones fall
on epoch boundaries exactly while warm-up and cosine are smooth; its state dict restores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OptimConfig, SchedConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


class _Factor:
    """The lr lambda of LambdaLR. Only primitives as attributes: LambdaLR saves this object's
    `__dict__` in its state dict, which must load with `torch.load(weights_only=True)`."""

    def __init__(self, cfg: SchedConfig, total_epochs: int, steps_per_epoch: int) -> None:
        self.name, self.milestones, self.gamma = cfg.name, tuple(cfg.milestones), cfg.gamma
        self.warmup, self.total, self.steps = cfg.warmup_epochs, total_epochs, max(1, steps_per_epoch)

    def __call__(self, it: float) -> float:
        epoch = it / self.steps
        if self.warmup and epoch < self.warmup:
            return 0.1 + 0.9 * epoch / self.warmup
        if self.name == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.name == "cosine":
            t = min(max(epoch - self.warmup, 0.0) / max(self.total - self.warmup, 1e-9), 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedConfig, total_epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Factor(cfg, total_epochs, steps_per_epoch))


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def bce_softmax(logits: Tensor, targets: Tensor) -> Tensor:
    """GuidedMixup's loss: binary cross-entropy between softmax probabilities and soft targets."""
    return F.binary_cross_entropy(F.softmax(logits, dim=1).clamp(1e-7, 1 - 1e-7), targets)


LOSSES = {"soft_ce": soft_cross_entropy, "bce_softmax": bce_softmax}

"""Training recipes: named bundles of optimisation defaults; explicit config keys override them.

Recipes set optimisation only (optimizer, schedule, epochs, batch, loss), never the dataset or
model, so `recipe: saliencymix_cifar` serves CIFAR-10 and CIFAR-100 alike.
"""

from __future__ import annotations

from .mixing.registry import Registry

RECIPES: Registry[dict[str, object]] = Registry("recipe")

RECIPES.register(
    "saliencymix_cifar",
    {"epochs": 200, "batch_size": 256, "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": True,
     "optim.weight_decay": 5e-4, "sched.name": "multistep", "sched.milestones": [60, 120, 160], "sched.gamma": 0.2},
    help="SaliencyMix CIFAR: SGD Nesterov 0.9, wd 5e-4, lr 0.1, batch 256, 200 epochs, x0.2 at 60/120/160",
)
RECIPES.register(
    "guidedmixup_cifar100",
    {"epochs": 1200, "batch_size": 100, "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": True,
     "optim.weight_decay": 1e-4, "sched.name": "multistep", "sched.milestones": [400, 800], "sched.gamma": 0.1,
     "loss": "bce_softmax"},
    help="GuidedMixup CIFAR-100: SGD Nesterov, wd 1e-4, batch 100, 1200 epochs, lr 0.1 x0.1 at 400/800, BCE loss",
)
RECIPES.register(
    "imagenet300",
    {"epochs": 300, "batch_size": 256, "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": True,
     "optim.weight_decay": 1e-4, "sched.name": "multistep", "sched.milestones": [75, 150, 225], "sched.gamma": 0.1},
    help="SaliencyMix/CutMix ImageNet: SGD Nesterov 0.9, wd 1e-4, lr 0.1, batch 256, 300 epochs, x0.1 at 75/150/225",
)
RECIPES.register(
    "cosine",
    {"epochs": 200, "batch_size": 128, "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": True,
     "optim.weight_decay": 5e-4, "sched.name": "cosine", "sched.warmup_epochs": 1},
    help="SGD Nesterov 0.9, wd 5e-4, lr 0.1, batch 128, 200 epochs, 1 warm-up epoch then cosine to 0",
)
RECIPES.register(
    "fast",
    {"epochs": 10, "batch_size": 128, "optim.lr": 0.05, "optim.momentum": 0.9, "optim.nesterov": True,
     "optim.weight_decay": 5e-4, "sched.name": "cosine", "sched.warmup_epochs": 1},
    help="a short schedule for quick ablations: 10 epochs, batch 128, lr 0.05, warm-up + cosine",
)


def list_recipes() -> list[str]:
    return RECIPES.names()

"""Classifiers for the sweeps: CIFAR ResNet-18/50, PreActResNet-18, WRN-28-10, a small CNN for demos and
CI, and any torchvision classifier as `tv:<name>`.

    model = build_model("resnet18", num_classes=10, image_size=(32, 32), mean=..., std=..., **opts)
    logits = model(x)  # x: float (B, 3, H, W) in [0, 1]; normalised inside the model

Every model normalises internally (`.normalize`, then `.net`), because mixing, attacks and noise work
in [0, 1] pixel space.

Importing this package does not import torch: the registry, the builders (whose signatures are the
`model.*` options) and the factory are torch-free and bind the network modules by name
(`trainables.mixing.lazy`), so a config check lists and checks models without torch. The torch classes
re-exported here (`Normalize`, `NormalizedModel`, `init_weights`) are read from `_base` on first access.
"""

from typing import Any

from trainables.mixing.lazy import lazy_import
from trainables.models.builders import MODELS
from trainables.models.factory import TV_PREFIX, build_model, list_models, model_options, torchvision_names

_base = lazy_import("trainables.models._base")
_FROM_BASE = ("Normalize", "NormalizedModel", "init_weights")


def __getattr__(name: str) -> Any:  # PEP 562: the torch classes of `_base`, imported on first use
    if name in _FROM_BASE:
        return getattr(_base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MODELS",
    "TV_PREFIX",
    "Normalize",
    "NormalizedModel",
    "build_model",
    "init_weights",
    "list_models",
    "model_options",
    "torchvision_names",
]

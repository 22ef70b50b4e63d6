"""Classifiers for the sweeps: CIFAR ResNet-18/50, PreActResNet-18, WRN-28-10, a small CNN for demos and
CI, and any torchvision classifier as `tv:<name>`.

    model = build_model("resnet18", num_classes=10, image_size=(32, 32), mean=..., std=..., **opts)
    logits = model(x)  # x: float (B, 3, H, W) in [0, 1]; normalised inside the model

Every model normalises internally (`.normalize`, then `.net`), because mixing, attacks and noise work
in [0, 1] pixel space.
"""

from trainables.models import cifar_resnet, preact_resnet, small_cnn, wide_resnet  # noqa: F401  (register)
from trainables.models._base import MODELS, Normalize, NormalizedModel, init_weights
from trainables.models.factory import TV_PREFIX, build_model, list_models, model_options, torchvision_names

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

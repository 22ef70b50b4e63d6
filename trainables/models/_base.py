"""The torch side shared by the models: the in-model normaliser, the wrapper `build_model` returns, weight
init. (The `MODELS` registry and its builders are torch-free: `trainables.models.builders`.)

Mixing, saliency, FGSM attacks and noise all work in [0, 1] pixel space, so per-channel normalisation
lives *inside* the model: `NormalizedModel(x) = net(Normalize(x))`. The wrapper keeps the network as
`.net` and the normaliser as `.normalize`, so saliency code that needs raw-pixel gradients
differentiates the whole model and gets them in pixel space for free.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """`(x - mean) / std` per channel, with `mean`/`std` as (1, C, 1, 1) buffers.

    Args:
        mean: per-channel mean of the [0, 1] pixels, one value per input channel.
        std: per-channel standard deviation, same length as `mean`, every value > 0.

    The buffers are persistent, so a checkpoint records the normalisation it was trained with, and
    they follow `.to(device)` / `.half()` with the rest of the model.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = _stat_tensor("mean", mean)
        std_t = _stat_tensor("std", std)
        if mean_t.numel() != std_t.numel():
            raise ValueError(
                f"mean and std need one value per input channel and the same length; got "
                f"{mean_t.numel()} mean values {tuple(mean_t.tolist())} and {std_t.numel()} std values "
                f"{tuple(std_t.tolist())}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"every std value must be > 0; got std={tuple(std_t.tolist())}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    @property
    def num_channels(self) -> int:
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A shape check on Python ints: no device sync, and it turns a cryptic broadcasting error into
        # one that names the shapes.
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"expected a (B, {self.num_channels}, H, W) batch of [0, 1] images; "
                f"got shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        fmt = ", ".join
        return (
            f"mean=({fmt(f'{v:.4g}' for v in self.mean.flatten().tolist())}), "
            f"std=({fmt(f'{v:.4g}' for v in self.std.flatten().tolist())})"
        )


def _stat_tensor(what: str, values: Sequence[float]) -> torch.Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float32).flatten().clone()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{what} must be a sequence of numbers, one per channel; got {values!r}") from None
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be a non-empty sequence of finite numbers; got {values!r}")
    return t


class NormalizedModel(nn.Module):
    """`net(normalize(x))` for x a float (B, C, H, W) batch in [0, 1]; what `build_model` returns.

    Attributes:
        normalize: the `Normalize` module.
        net: the network proper (takes normalised input, returns (B, num_classes) logits).
        name: the registry name it was built from (e.g. "resnet18", "tv:vit_b_16").
        num_classes, image_size: as passed to `build_model`.
    """

    def __init__(
        self,
        net: nn.Module,
        normalize: Normalize,
        *,
        name: str,
        num_classes: int,
        image_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.name = name
        self.num_classes = num_classes
        self.image_size = tuple(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, image_size={self.image_size}"


def init_weights(module: nn.Module, *, zero_linear_bias: bool = False) -> None:
    """Reference init: Kaiming-normal (fan_out, ReLU) for convs, BN/GN weight 1 and bias 0.

    fan_out Kaiming is what torchvision's ResNet and the WideResNet reference use
    (`normal(0, sqrt(2 / (k * k * out_channels)))`). Linear weights keep PyTorch's default init as in
    those references; the WideResNet reference also zeroes the linear bias (`zero_linear_bias`).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and zero_linear_bias and m.bias is not None:
            nn.init.zeros_(m.bias)

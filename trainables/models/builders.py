"""The `MODELS` registry and its builders: torch-free, so that a config's `model` and `model.*` keys are
checked without importing torch.

A registered builder has the signature

    builder(*, num_classes: int, image_size: tuple[int, int], in_chans: int, <option>=<default>, ...)

and every keyword after `in_chans` is a user option (the `model.*` config keys without the prefix).
`build_model` and `model_options` read the allowed options off that signature, so a builder's options
are declared once, here. The networks (`nn.Module` subclasses, which need torch at class definition)
live in their own modules, bound by name (`trainables.mixing.lazy`): a builder's body imports its
network module the first time it builds one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from trainables.mixing.errors import check_int
from trainables.mixing.lazy import lazy_import
from trainables.mixing.registry import Registry

if TYPE_CHECKING:
    from torch import nn

cifar_resnet = lazy_import("trainables.models.cifar_resnet")
preact_resnet = lazy_import("trainables.models.preact_resnet")
small_cnn_net = lazy_import("trainables.models.small_cnn")
wide_resnet = lazy_import("trainables.models.wide_resnet")

ModelBuilder = Callable[..., "nn.Module"]

MODELS: Registry[ModelBuilder] = Registry("model")

# Parameters of a builder that `build_model` fills itself; every other keyword is a user option.
BUILDER_ARGS = ("num_classes", "image_size", "in_chans")


# ---------------------------------------------------------------------------------------------------
# Option validators: builders call these so that a bad value names the model, the option and what is
# allowed. YAML gives ints for `32` and floats for `0.3`, so strings are rejected rather than parsed.


def check_option_int(model: str, key: str, value: object, *, minimum: int = 1) -> int:
    """`value` as an int >= `minimum` (`trainables.mixing.errors.check_int`, the one integer check)."""
    return check_int(value, f"model {model!r}: option {key!r}", low=minimum)


def check_prob(model: str, key: str, value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0
    if not ok or math.isnan(float(value)):
        raise ValueError(f"model {model!r}: option {key!r} must be a number in [0, 1); got {value!r}")
    return float(value)


# -- the builders, in `mixsweep list` order ---------------------------------------------------------


@MODELS.register("resnet18")
def resnet18(*, num_classes: int, image_size: tuple[int, int], in_chans: int = 3) -> nn.Module:
    """CIFAR ResNet-18 (3x3 stem, no max-pool, BasicBlock [2, 2, 2, 2]); 11.17 M params at 10 classes."""
    return cifar_resnet.CifarResNet(cifar_resnet.BasicBlock, [2, 2, 2, 2], num_classes, in_chans)


@MODELS.register("resnet50")
def resnet50(*, num_classes: int, image_size: tuple[int, int], in_chans: int = 3) -> nn.Module:
    """CIFAR ResNet-50 (3x3 stem, no max-pool, Bottleneck [3, 4, 6, 3]); 23.5 M params at 10 classes."""
    return cifar_resnet.CifarResNet(cifar_resnet.Bottleneck, [3, 4, 6, 3], num_classes, in_chans)


@MODELS.register("preact_resnet18")
def preact_resnet18(*, num_classes: int, image_size: tuple[int, int], in_chans: int = 3) -> nn.Module:
    """PreActResNet-18 (He et al. 2016b, Manifold Mixup / GuidedMixup code); 11.17 M params at 10 classes."""
    return preact_resnet.PreActResNet([2, 2, 2, 2], num_classes, in_chans)


#: small_cnn pools this many times, so it needs images of at least 2**SMALL_CNN_POOLS pixels a side
SMALL_CNN_POOLS = 3


@MODELS.register("small_cnn")
def small_cnn(
    *, num_classes: int, image_size: tuple[int, int], in_chans: int = 3, width: int = 32, dropout: float = 0.0
) -> nn.Module:
    """Small conv-pool-BN-ReLU CNN for demos and CI (~1 s per 1 000-image epoch on 2 CPU cores)."""
    width = check_option_int("small_cnn", "width", width)
    dropout = check_prob("small_cnn", "dropout", dropout)
    min_side = 2**SMALL_CNN_POOLS
    if min(image_size) < min_side:
        raise ValueError(
            f"model 'small_cnn' pools {SMALL_CNN_POOLS} times and needs images of at least {min_side}x{min_side}; "
            f"got image_size={tuple(image_size)}"
        )
    return small_cnn_net.SmallCNN(num_classes, width, dropout, in_chans)


@MODELS.register("wrn28_10")
def wrn28_10(
    *,
    num_classes: int,
    image_size: tuple[int, int],
    in_chans: int = 3,
    dropout: float = 0.3,
    depth: int = 28,
    widen: int = 10,
) -> nn.Module:
    """WideResNet-28-10 with dropout 0.3 in the blocks; 36.5 M params at 10 classes."""
    depth = check_option_int("wrn28_10", "depth", depth, minimum=10)
    if (depth - 4) % 6 != 0:
        ok = ", ".join(str(6 * n + 4) for n in range(1, 7))
        raise ValueError(
            f"model 'wrn28_10': option 'depth' must satisfy (depth - 4) % 6 == 0 (e.g. {ok}); got {depth}"
        )
    widen = check_option_int("wrn28_10", "widen", widen)
    dropout = check_prob("wrn28_10", "dropout", dropout)
    return wide_resnet.WideResNet(depth, widen, num_classes, dropout, in_chans)


__all__ = ["BUILDER_ARGS", "MODELS", "ModelBuilder", "check_option_int", "check_prob"]

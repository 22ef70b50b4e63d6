"""`build_model`, `list_models`, `model_options`: the one entry point the training loop uses.

Names are the registry keys (`resnet18`, `preact_resnet18`, `wrn28_10`, `small_cnn`, ...) or
`tv:<name>` for any torchvision classifier (`torchvision.models.list_models(module=torchvision.models)`),
always built untrained (`weights=None`): runs are offline and every arm of an ablation starts from the
same kind of init.

torchvision models are ImageNet designs; on small inputs some of them fail (alexnet, inception_v3 needs
>= 75x75, vit_* needs sides divisible by its patch size). What `build_model` adapts for them:
- `vit_*` gets `image_size=H` (square inputs only), `maxvit_t` gets `input_size=(H, W)`;
- `googlenet` / `inception_v3` get `aux_logits=False, init_weights=True` so that `forward` returns a
  tensor in training mode as well (the training loop needs logits, not a namedtuple).
Every other option is passed through to the torchvision constructor.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trainables.mixing.errors import ConfigError
from trainables.mixing.lazy import lazy_import
from trainables.mixing.registry import did_you_mean
from trainables.models.builders import BUILDER_ARGS, MODELS

if TYPE_CHECKING:
    from torch import nn

    from trainables.models._base import NormalizedModel

_base = lazy_import("trainables.models._base")  # Normalize, NormalizedModel: torch at class definition
tvm = lazy_import("torchvision.models")

TV_PREFIX = "tv:"
TV_PLACEHOLDER = "tv:<any torchvision classifier>"
_TV_FIXED = ("weights", "progress", "num_classes")
_TV_NO_AUX = ("googlenet", "inception_v3")
_TV_EXAMPLES = ("resnet18", "resnet50", "wide_resnet50_2", "convnext_tiny", "efficientnet_b0", "vit_b_16")


def build_model(
    name: str,
    num_classes: int,
    image_size: int | Sequence[int] = (32, 32),
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    **opts: Any,
) -> NormalizedModel:
    """Build `name` as a module that takes float (B, C, H, W) images in [0, 1] and returns logits.

    Args:
        name: a registered model (`list_models()`) or `tv:<torchvision classifier name>`.
        num_classes: size of the classification head.
        image_size: (H, W) of the inputs (an int means square). Only the models that need it use it
            (small_cnn checks it is large enough; torchvision ViT/MaxViT are built for it); the CIFAR
            nets end in global pooling and take any size.
        mean, std: per-channel statistics of the [0, 1] pixels; their length is the number of input
            channels. The defaults (0, 1) leave the input unnormalised.
        **opts: model options, i.e. the `model.*` config keys without the prefix (`width=32` for
            small_cnn, `dropout=0.3` for wrn28_10). For `tv:` models they go to the torchvision
            constructor.

    Returns:
        `NormalizedModel` with `.normalize` (a `Normalize`) and `.net` (the network).

    Raises:
        ValueError: unknown model or torchvision name (with the close names), or a bad value for an
            option, `num_classes`, `image_size`, `mean` or `std`.
        ConfigError (a ValueError): an unknown option (keys: `model.<option>`, with the allowed ones).
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string; got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    size = _as_size(image_size)
    normalize = _base.Normalize(mean, std)
    if name.startswith(TV_PREFIX):
        net = _build_torchvision(name[len(TV_PREFIX) :], num_classes, size, normalize.num_channels, opts)
    else:
        builder = MODELS.get(name)
        allowed = _builder_options(builder)
        unknown = sorted(k for k in opts if k not in allowed)
        if unknown:
            raise ConfigError(
                [f"model.{k}" for k in unknown],
                f"model {name!r} has no option {', '.join(map(repr, unknown))}"
                f"{did_you_mean(unknown[0], list(allowed))}; allowed options for {name!r}: "
                f"{', '.join(f'{k} (default {v!r})' for k, v in allowed.items()) or 'none'} "
                f"(set them as model.<option> in the config)",
                context=("model",), unknown=True,
            )
        net = builder(num_classes=num_classes, image_size=size, in_chans=normalize.num_channels, **opts)
    return _base.NormalizedModel(net, normalize, name=name, num_classes=num_classes, image_size=size)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names (optionally fnmatch-filtered) plus "tv:<any torchvision classifier>"."""
    names = MODELS.names(pattern)
    if pattern is None or fnmatch.fnmatch(TV_PLACEHOLDER, pattern):
        names.append(TV_PLACEHOLDER)
    return names


def model_options(name: str) -> dict[str, Any] | None:
    """Allowed options of a registered model with their defaults; None for `tv:` models (passed through).

    Lets a config loader reject a misspelt `model.*` key before a sweep starts.
    """
    if name.startswith(TV_PREFIX):
        return None
    return _builder_options(MODELS.get(name))


def torchvision_names() -> list[str]:
    """Every torchvision classifier name, i.e. what may follow `tv:`."""
    return tvm.list_models(module=tvm)


# ---------------------------------------------------------------------------------------------------


def _builder_options(builder: Any) -> dict[str, Any]:
    params = inspect.signature(builder).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name not in BUILDER_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size must be (height, width) with positive integers; got {image_size!r}")
    return size  # type: ignore[return-value]


def _build_torchvision(
    tv_name: str, num_classes: int, size: tuple[int, int], in_chans: int, opts: dict[str, Any]
) -> nn.Module:
    model = TV_PREFIX + tv_name
    names = tvm.list_models(module=tvm)
    if tv_name not in names:
        close = difflib.get_close_matches(tv_name, names, n=5, cutoff=0.5)
        if not close:  # e.g. "tv:resnet" -> the resnet family
            close = [n for n in names if tv_name and n.startswith(tv_name[:4])][:5]
        hint = (
            f"close torchvision names: {', '.join(close)}; "
            if close
            else f"examples: {', '.join(n for n in _TV_EXAMPLES if n in names)}; "
        )
        raise ValueError(
            f"unknown torchvision classifier {tv_name!r} (from model {model!r}); {hint}"
            f"the {len(names)} valid names are torchvision.models.list_models(module=torchvision.models)"
        )
    if in_chans != 3:
        raise ValueError(
            f"model {model!r}: torchvision classifiers take 3-channel input, "
            f"but mean/std have {in_chans} values"
        )
    fixed = [k for k in _TV_FIXED if k in opts]
    if fixed:
        raise ValueError(
            f"model {model!r}: option(s) {', '.join(map(repr, fixed))} cannot be set; tv: models are built "
            f"untrained (weights=None) with num_classes from the dataset"
        )
    kwargs: dict[str, Any] = {}
    if tv_name.startswith("vit_"):
        if size[0] != size[1]:
            raise ValueError(f"model {model!r}: torchvision ViTs need square images; got image_size={size}")
        kwargs["image_size"] = size[0]
    elif tv_name.startswith("maxvit"):
        kwargs["input_size"] = size
    elif tv_name in _TV_NO_AUX:
        if opts.get("aux_logits"):
            raise ValueError(
                f"model {model!r}: aux_logits=True makes forward return a namedtuple in training mode; "
                f"the training loop needs a logits tensor, so leave aux_logits unset (False)"
            )
        kwargs.update(aux_logits=False, init_weights=True)
    kwargs.update(opts)
    try:
        return tvm.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
    except TypeError:
        _check_tv_options(tv_name, num_classes, {k: v for k, v in kwargs.items() if k not in opts}, opts)
        raise
    except (ValueError, AssertionError) as e:
        raise ValueError(f"model {model!r} with image_size={size} and options {opts}: {e}") from e


def _check_tv_options(tv_name: str, num_classes: int, ours: dict[str, Any], opts: dict[str, Any]) -> None:
    """After torchvision refused `opts` with a TypeError: compare them with the signature of the class its
    builder constructs, and raise ConfigError for an option that class does not take, or that the
    builder sets itself (a parameter without a default: block, layers, patch_size, ...). Returns when
    neither explains the TypeError (the caller re-raises it)."""
    model = TV_PREFIX + tv_name
    cls = type(tvm.get_model(tv_name, weights=None, num_classes=num_classes, **ours))  # the class, built plainly
    params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    allowed = [name for name, p in params.items() if name not in _TV_FIXED and p.default is not p.empty]
    unknown = [k for k in opts if k not in params]
    if unknown:
        raise ConfigError(
            [f"model.{k}" for k in unknown],
            f"model {model!r} has no option {', '.join(map(repr, unknown))}{did_you_mean(unknown[0], allowed)}; "
            f"options of the torchvision constructor: {', '.join(allowed) or 'see the torchvision docs'}",
            context=("model",), unknown=True,
        ) from None
    fixed = [k for k in opts if params[k].default is params[k].empty]
    if fixed:
        raise ConfigError([f"model.{k}" for k in fixed],
                          f"model {model!r}: option {', '.join(map(repr, fixed))} is fixed by torchvision's "
                          f"{tv_name} builder", context=("model",)) from None

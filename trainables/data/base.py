"""The dataset bundle, the split protocol, the `DATASETS` registry and option checking.

A dataset builder is a function of explicit keyword options (the `data.*` config keys without
the prefix) that returns a `DatasetBundle`. `build_dataset` checks the option names against the
builder's signature, so a typo in a sweep spec fails before anything is loaded, with the dataset,
the bad key and the allowed keys in the message.
"""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..mixing.errors import ConfigError
from ..mixing.errors import check_int as _check_int
from ..mixing.lazy import lazy_import
from ..mixing.registry import Registry, did_you_mean

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")

DEFAULT_ROOT = "~/.cache/mixsweep/data"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the config says; the message says what is expected."""


@runtime_checkable
class Loader(Protocol):
    """Re-iterable: each `iter()` is one epoch of `(images, labels)` batches on the target device."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...


@runtime_checkable
class Split(Protocol):
    """One split (train or test) of a dataset; the extension point for new storage kinds."""

    def __len__(self) -> int: ...

    def loader(
        self,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None,
        device: torch.device,
        num_workers: int,
    ) -> Loader: ...


@dataclass(frozen=True)
class DatasetBundle:
    """What a trial needs to know about its dataset.

    Loaders yield float images in [0, 1]; `mean`/`std` are for the model's own normalisation layer.
    """

    name: str  #: registry key (`dataset` factor value)
    num_classes: int
    image_size: tuple[int, int]  #: (H, W) of the images the loaders yield
    mean: tuple[float, float, float]  #: per-channel mean of the [0, 1] training images
    std: tuple[float, float, float]  #: per-channel standard deviation
    train: Split
    test: Split
    class_names: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  #: the resolved builder options
    #: optional hook for datasets that know where their objects are (label fidelity,
    #: `trainables.mixing.fidelity`): `object_masks(split, indices)` -> (uint8 images (n,3,H,W),
    #: int64 labels (n,), float32 object coverage (n,H,W) in [0, 1]) of the UN-augmented images
    #: `indices` (0 <= i < len(split)) of split "train" or "test"; None when the dataset has no masks.
    #: Must pickle (Ray ships bundles): a module-level function or a `functools.partial` of one.
    object_masks: Callable[[str, Tensor], tuple[Tensor, Tensor, Tensor]] | None = None

    def __post_init__(self) -> None:
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )


DATASETS: Registry[Callable[..., DatasetBundle]] = Registry("dataset")


def object_sample(bundle: DatasetBundle, n: int, *, split: str = "train") -> tuple[Tensor, Tensor, Tensor]:
    """The deterministic label-fidelity sample of a dataset with object masks: its first `n` images of
    `split` (fewer when the split is smaller), un-augmented, as (float32 images (n,3,H,W) in [0, 1],
    int64 labels (n,), float32 coverage (n,H,W)) on the CPU. ValueError when the dataset has no masks."""
    if bundle.object_masks is None:
        raise ValueError(f"dataset {bundle.name!r} has no object masks (label fidelity needs a dataset that knows "
                         "where its objects are, e.g. synthetic_salient)")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    size = len(bundle.train if split == "train" else bundle.test)
    n = check_int(bundle.name, "n", n, low=1, prefix="")
    images, labels, masks = bundle.object_masks(split, torch.arange(min(n, size)))
    return images.float().div_(255.0), labels, masks.float()


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names, optionally filtered by an fnmatch pattern (`"cifar*"`)."""
    return DATASETS.names(pattern)


def dataset_options(name: str) -> list[str]:
    """The option names (`data.*` keys without the prefix) that dataset `name` accepts."""
    return list(inspect.signature(DATASETS.get(name)).parameters)


def build_dataset(name: str, **options: Any) -> DatasetBundle:
    """Build dataset `name` with `options`; an unknown name raises `ValueError`, an unknown option
    `ConfigError` (a ValueError; keys: `data.<option>`)."""
    builder = DATASETS.get(name)
    allowed = dataset_options(name)
    unknown = [k for k in options if k not in allowed]
    if unknown:
        bad = unknown[0]
        raise ConfigError(f"data.{bad}", f"dataset {name!r}: unknown option {bad!r}{did_you_mean(bad, allowed)}",
                          allowed, context=("dataset",), unknown=True)
    return builder(**options)


def make_loader(
    split: Split,
    batch_size: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> Loader:
    """A re-iterable loader over `split`; every `iter()` is one epoch.

    `train=True`: the epoch's order and augmentation come only from `generator` (a CPU
    `torch.Generator` owned by the trial), drawn when the epoch starts, so re-seeding it replays
    the epoch exactly. The last batch is dropped only when it would hold a single sample (mixing
    pairs samples within a batch). `train=False`: dataset order, no augmentation, every sample
    exactly once. Images are float32 (B,3,H,W) in [0, 1], labels int64 (B,), both on `device`.
    `num_workers` only matters for folder datasets (decoding processes).
    """
    batch_size = check_int("loader", "batch_size", batch_size, low=1, prefix="")
    num_workers = check_int("loader", "num_workers", num_workers, low=0, prefix="")
    if train:
        if not isinstance(generator, torch.Generator):
            raise ValueError(
                "make_loader(train=True) needs the trial's torch.Generator (generator=...); the epoch order "
                "and augmentation are drawn from it and never from the global RNG"
            )
        if generator.device.type != "cpu":
            raise ValueError(
                f"make_loader: generator must be a CPU torch.Generator, got one on {generator.device}"
            )
        if batch_size < 2:
            raise ValueError(
                f"make_loader(train=True): batch_size={batch_size}; training batches need at least 2 "
                "samples (mixing pairs samples within a batch)"
            )
        if len(split) < 2:
            raise ValueError(
                f"make_loader(train=True): the split has {len(split)} sample(s); mixing needs at least 2"
            )
    device = torch.device(device) if device is not None else torch.device("cpu")
    return split.loader(batch_size, train=train, generator=generator, device=device, num_workers=num_workers)


# -- epoch bookkeeping shared by the loaders ------------------------------------------------------


def batch_bounds(n: int, batch_size: int, train: bool) -> list[tuple[int, int]]:
    """(start, end) of each batch of an epoch of `n` samples.

    Training drops the last batch only when it would hold one sample: a batch of 1 cannot be
    mixed with anything but itself, and a single image skews BatchNorm statistics.
    """
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if train and bounds and bounds[-1][1] - bounds[-1][0] == 1 and n > 1:
        bounds.pop()
    return bounds


def epoch_order(n: int, train: bool, generator: torch.Generator | None) -> Tensor:
    """The epoch's sample order on the CPU: a permutation from `generator` when training."""
    return torch.randperm(n, generator=generator) if train else torch.arange(n)


# -- option checking ---------------------------------------------------------------------------------


def _where(dataset: str, key: str, prefix: str) -> str:
    return f"{dataset}: {prefix}{key}"


def check_int(
    dataset: str,
    key: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
    prefix: str = "data.",
) -> Any:
    """`value` as an int within [low, high] (None passes when allowed); ValueError names the option
    (the one integer check, `trainables.mixing.errors.check_int`)."""
    return _check_int(value, _where(dataset, key, prefix), low=low, high=high, allow_none=allow_none)


def check_float(
    dataset: str,
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    prefix: str = "data.",
) -> float:
    """`value` as a float within its range (`low_open`: low excluded); ValueError names the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{_where(dataset, key, prefix)} must be a number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    if value != value or too_low or (high is not None and value > high):
        lo = "(" if low_open else "["
        rng = f"{lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{_where(dataset, key, prefix)} must be in {rng}, got {value}")
    return value


def check_pad(dataset: str, value: Any, side: int) -> int:
    """`data.pad`: zero padding in pixels of the training random crop, in [0, side // 2]; 0 disables the crop.

    Defaults are 4 (SaliencyMix, CutMix); GuidedMixup's released CIFAR code pads by 2.
    """
    return check_int(dataset, "pad", value, low=0, high=side // 2)


def check_bool(dataset: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{dataset}: data.{key} must be true or false, got {value!r}")
    return value


def resolve_root(dataset: str, root: Any) -> Path:
    """`root` with `~` and environment variables expanded, made absolute."""
    if not isinstance(root, str | os.PathLike) or not str(root):
        raise ValueError(f"{dataset}: data.root must be a directory path, got {root!r}")
    return Path(os.path.expandvars(os.path.expanduser(str(root)))).absolute()

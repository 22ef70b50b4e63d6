"""Datasets and loaders for the trainables.

`build_dataset(name, **options)` (options: the `data.*` config keys without the prefix) returns a
`DatasetBundle`; `make_loader(bundle.train, batch_size, train=True, generator=g, device=d)` yields
float images in [0, 1] and int64 labels on `d`, with order and augmentation drawn only from `g`.
Datasets that know their objects' pixels (`synthetic_salient`) also have `bundle.object_masks`;
`object_sample(bundle, n)` is their deterministic label-fidelity sample.

Importing the package does not import torch or torchvision: the builders are torch-free functions
whose signatures are the `data.*` options (`dataset_options`), and the modules bind torch, torchvision
and PIL by name (`trainables.mixing.lazy`); `cifar_files` (torchvision subclasses) is bound the same
way. A config check sees every dataset name and option without loading any of them.
"""

from . import cifar, folder, synthetic  # noqa: F401  (register the datasets)
from .base import (
    DATASETS,
    DatasetBundle,
    DatasetNotFoundError,
    Loader,
    Split,
    build_dataset,
    dataset_options,
    list_datasets,
    make_loader,
    object_sample,
)

__all__ = [
    "DATASETS",
    "DatasetBundle",
    "DatasetNotFoundError",
    "Loader",
    "Split",
    "build_dataset",
    "dataset_options",
    "list_datasets",
    "make_loader",
    "object_sample",
]

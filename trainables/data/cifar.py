"""`cifar10` and `cifar100` through torchvision's dataset classes, held as uint8 tensors.

torchvision reads the python-pickle batches (`cifar-10-batches-py/data_batch_1..5`, `test_batch`,
`batches.meta`; `cifar-100-python/train`, `test`, `meta`) and can download them. Deviation: its
constructor verifies the md5 of every file on each construction; `cifar_files.PresentCIFAR10/100` check
presence instead (the download path still verifies the archive's md5, and a damaged pickle
fails to load), so that data re-packed in the same format -- subsets, test fixtures -- loads
too. Missing files raise `DatasetNotFoundError` naming the directory and the expected layout.

Safety: the format is Python pickle, and without the md5 check any pickle in `data.root` would
run code on load. So every file is first read by a restricted unpickler that allows only what
CIFAR batches contain (dicts, lists, bytes, numbers and numpy arrays); anything else is refused
before torchvision loads it (`cifar_files`: the unpickler lives with the classes that use it).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..mixing.lazy import lazy_import
from .base import (
    DATASETS,
    DEFAULT_ROOT,
    DatasetBundle,
    DatasetNotFoundError,
    check_bool,
    check_int,
    check_pad,
    resolve_root,
)
from .tensor import TensorSplit

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10

np = lazy_import("numpy")
torch = lazy_import("torch")
tv_utils = lazy_import("torchvision.datasets.utils")
#: the torchvision dataset classes this module loads with (subclasses: torchvision at class definition)
cifar_files = lazy_import("trainables.data.cifar_files")

# per-channel statistics of the training images in [0, 1] (std: per-pixel, not per-image), written
# as the released code writes them (x/255 to 0.1 of a level: the measured values to 3-4 digits):
# CIFAR-10 as SaliencyMix, CutMix and GuidedMixup, CIFAR-100 as GuidedMixup (PuzzleMix lineage). So
# `mix.saliency_input: official_float`, which normalises with these, feeds the saliency detector
# exactly the float32 tensor those codes fed it. (Not quite for SaliencyMix on CIFAR-100: its
# released code normalised CIFAR-100 with the CIFAR-10 values.)
CIFAR10_MEAN = tuple(v / 255 for v in (125.3, 123.0, 113.9))
CIFAR10_STD = tuple(v / 255 for v in (63.0, 62.1, 66.7))
CIFAR100_MEAN = tuple(v / 255 for v in (129.3, 124.1, 112.4))
CIFAR100_STD = tuple(v / 255 for v in (68.2, 65.4, 70.4))


def _layout(cls: type[CIFAR10]) -> str:
    names = [n for n, _ in cls.train_list + cls.test_list]
    if len(names) > 3:
        names = [
            f"{names[0]}..{names[len(cls.train_list) - 1].rsplit('_', 1)[-1]}",
            *names[len(cls.train_list) :],
        ]
    return f"{cls.base_folder}/{{{', '.join(names)}}} (+ {cls.meta['filename']} for class names)"


def _missing(cls: type[CIFAR10], folder: Path) -> list[str]:
    return [n for n, _ in cls.train_list + cls.test_list if not (folder / n).is_file()]


def _load(name: str, cls: type[CIFAR10], root: Path, download: bool, train: bool) -> Any:
    folder = root / cls.base_folder
    if download and _missing(cls, folder):
        try:  # what `cls(..., download=True)` does, without loading the pickles twice
            tv_utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as e:  # no internet, proxy, disk full: all end in "the files are not there"
            raise DatasetNotFoundError(
                f"{name}: downloading {cls.url} into {root} failed ({type(e).__name__}: {e}); without "
                f"internet, extract {cls.filename} there by hand; expected layout: {_layout(cls)}"
            ) from e
    missing = _missing(cls, folder)
    if missing:
        raise DatasetNotFoundError(
            f"{name}: data not found in {folder} (missing: {', '.join(missing)}); expected layout under "
            f"data.root={root}: {_layout(cls)}. Set `data.download: true` to fetch it where there is "
            f"internet, or point `data.root` at the directory that contains {cls.base_folder}/"
        )
    try:
        return cls(str(root), train=train, download=False)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f"{name}: the files in {folder} are not CIFAR python-pickle batches ({e!r})") from e


def _split(
    name: str,
    ds: Any,
    size: int | None,
    num_classes: int,
    which: str,
    pad: int,
) -> TensorSplit:
    data = np.asarray(ds.data)  # torchvision: (N, 32, 32, 3) uint8, channels last
    images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    if images.dtype != torch.uint8 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"{name}: {which} data has dtype {images.dtype} and {labels.numel()} labels "
            f"for {images.shape[0]} images; expected uint8 pixels and one label each"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name}: {which} labels outside [0, {num_classes}) in {Path(ds.root, ds.base_folder)}"
        )
    if size is not None:
        if size > images.shape[0]:
            raise ValueError(
                f"{name}: data.{which}_size={size} but the {which} split has {images.shape[0]} images"
            )
        images, labels = images[:size].clone(), labels[:size].clone()
    return TensorSplit(images, labels, pad=pad)


def _build(
    name: str,
    cls: type[CIFAR10],
    num_classes: int,
    mean: tuple,
    std: tuple,
    root: str | os.PathLike,
    download: bool,
    train_size: int | None,
    test_size: int | None,
    pad: int,
) -> DatasetBundle:
    opts = {
        "root": str(resolve_root(name, root)),
        "download": check_bool(name, "download", download),
        "train_size": check_int(name, "train_size", train_size, low=1, allow_none=True),
        "test_size": check_int(name, "test_size", test_size, low=1, allow_none=True),
        "pad": check_pad(name, pad, 32),
    }
    root_path = Path(opts["root"])
    train_ds = _load(name, cls, root_path, opts["download"], train=True)  # downloads both splits
    test_ds = _load(name, cls, root_path, False, train=False)
    classes = tuple(train_ds.classes) if len(train_ds.classes) == num_classes else ()
    return DatasetBundle(
        name=name,
        num_classes=num_classes,
        image_size=(32, 32),
        mean=mean,
        std=std,
        train=_split(name, train_ds, opts["train_size"], num_classes, "train", opts["pad"]),
        test=_split(name, test_ds, opts["test_size"], num_classes, "test", opts["pad"]),
        class_names=classes,
        options=opts,
    )


@DATASETS.register("cifar10")
def cifar10(
    root: str = DEFAULT_ROOT,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    pad: int = 4,
) -> DatasetBundle:
    """CIFAR-10 (torchvision layout under `root`); train/test_size keep the first n images; `pad`: crop padding."""
    return _build(
        "cifar10", cifar_files.PresentCIFAR10, 10, CIFAR10_MEAN, CIFAR10_STD, root, download, train_size,
        test_size, pad,
    )


@DATASETS.register("cifar100")
def cifar100(
    root: str = DEFAULT_ROOT,
    download: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    pad: int = 4,
) -> DatasetBundle:
    """CIFAR-100, fine labels (torchvision layout under `root`); train/test_size keep the first n images; `pad`:
    crop padding (GuidedMixup's CIFAR recipe: 2)."""
    return _build(
        "cifar100",
        cifar_files.PresentCIFAR100,
        100,
        CIFAR100_MEAN,
        CIFAR100_STD,
        root,
        download,
        train_size,
        test_size,
        pad,
    )

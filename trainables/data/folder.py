"""Datasets of image files: `tiny_imagenet` and `imagefolder`, decoded by a torch DataLoader.

Reproducibility with worker processes: the trial's generator never leaves the main process.
When an epoch starts, the loader draws the order and one 62-bit seed per sample from it; a
worker transforms sample i with a private `torch.Generator` seeded with that sample's seed, so
an epoch is the same whatever `num_workers` is, and the global RNG is never touched (the
DataLoader gets a private generator for its worker base seed, which no transform uses).
Workers return uint8 tensors; the main process moves them to the device and scales to [0, 1].

Augmentation: `imagefolder` trains with RandomResizedCrop(image_size, scale=(0.08, 1),
ratio=(3/4, 4/3)) + horizontal flip and evaluates with resize(image_size / 0.875) + center
crop; `tiny_imagenet` (64x64) trains with random crop (`data.pad`-pixel zero padding, default 4;
0 disables the crop) + flip, and evaluates on the images as they are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..mixing.lazy import lazy_import
from .base import (
    DATASETS,
    DEFAULT_ROOT,
    DatasetBundle,
    DatasetNotFoundError,
    batch_bounds,
    check_int,
    check_pad,
    epoch_order,
    resolve_root,
)
from .tensor import apply_crop_flip, sample_crop_flip

if TYPE_CHECKING:
    from torch import Tensor

np = lazy_import("numpy")
torch = lazy_import("torch")
torch_data = lazy_import("torch.utils.data")
TF = lazy_import("torchvision.transforms.v2.functional")
Image = lazy_import("PIL.Image")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff", ".webp")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
EVAL_CROP_FRACTION = 0.875  # imagefolder eval: resize to image_size / 0.875, center crop image_size


def decode(path: str) -> Tensor:
    """The image at `path` as uint8 RGB (3,H,W) (grey, palette and RGBA images are converted)."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def random_resized_crop_params(
    h: int,
    w: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, height, width) as torchvision's RandomResizedCrop draws them, from `generator`."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
    # fallback (as torchvision): the whole image, cut to the nearest allowed aspect ratio
    if w / h < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@dataclass(eq=False)
class FolderSplit:
    """A split as a list of (file path, label); images are decoded by the loader's workers."""

    samples: list[tuple[str, int]]
    image_size: int
    mode: str  #: "tiny" (pad-crop + flip / as is) or "imagefolder" (RandomResizedCrop + flip / center crop)
    pad: int = 4  #: "tiny": random-crop zero padding when training (0 disables the crop)

    def __len__(self) -> int:
        return len(self.samples)

    def transform(self, img: Tensor, seed: int | None) -> Tensor:
        """uint8 (3,h,w) -> uint8 (3,S,S); `seed=None` is the eval transform."""
        s = self.image_size
        if self.mode == "tiny":
            if img.shape[-2:] != (s, s):
                img = TF.resize(img, [s, s], antialias=True)
            if seed is None:
                return img
            params = sample_crop_flip(1, self.pad, True, torch.Generator().manual_seed(seed))
            return apply_crop_flip(img[None], params, self.pad)[0]
        if seed is None:
            img = TF.resize(img, [round(s / EVAL_CROP_FRACTION)], antialias=True)
            return TF.center_crop(img, [s, s])
        g = torch.Generator().manual_seed(seed)
        top, left, h, w = random_resized_crop_params(img.shape[-2], img.shape[-1], g)
        img = TF.resized_crop(img, top, left, h, w, [s, s], antialias=True)
        return img.flip(-1) if torch.rand(1, generator=g).item() < 0.5 else img

    def loader(
        self,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None,
        device: torch.device,
        num_workers: int = 0,
    ) -> FolderLoader:
        return FolderLoader(
            self, batch_size, train=train, generator=generator, device=device, num_workers=num_workers
        )


class _Files:
    """Map-style dataset keyed by (index, seed); seed < 0 selects the eval transform (a plain class: the
    DataLoader needs only `__len__` and `__getitem__`)."""

    def __init__(self, split: FolderSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = key
        path, label = self.split.samples[index]
        try:
            img = decode(path)
        except OSError as e:
            raise OSError(f"cannot decode image {path}: {e}") from e
        return self.split.transform(img, seed if seed >= 0 else None), label


class _EpochBatches:
    """The DataLoader's batch_sampler: the current epoch's batches, set by `FolderLoader` each epoch."""

    def __init__(self, batches: list[list[tuple[int, int]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class FolderLoader:
    """Batches of a `FolderSplit`; see `trainables.data.make_loader` for the contract."""

    def __init__(
        self,
        split: FolderSplit,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None,
        device: torch.device,
        num_workers: int = 0,
    ) -> None:
        self.split, self.train, self.generator, self.device = split, train, generator, device
        self._bounds = batch_bounds(len(split), batch_size, train)
        self._sampler = _EpochBatches([])
        self._pin = device.type == "cuda"
        self._loader = torch_data.DataLoader(
            _Files(split),
            batch_sampler=self._sampler,
            num_workers=num_workers,
            pin_memory=self._pin,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(0),
        )

    def __len__(self) -> int:
        return len(self._bounds)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.split)
        order = epoch_order(n, self.train, self.generator).tolist()
        if self.train:
            seeds = torch.randint(0, 2**62, (n,), generator=self.generator).tolist()
        else:
            seeds = [-1] * n
        batches = [[(order[i], seeds[i]) for i in range(s, e)] for s, e in self._bounds]
        return self._batches(batches)

    def _batches(self, batches: list[list[tuple[int, int]]]) -> Iterator[tuple[Tensor, Tensor]]:
        self._sampler.batches = batches  # read when the DataLoader's iterator starts, just below
        for images, labels in self._loader:
            x = images.to(self.device, non_blocking=self._pin)
            yield x.float().div_(255.0), labels.to(self.device, non_blocking=self._pin)


# -- discovery -----------------------------------------------------------------------------------


def _images_under(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def _class_samples(name: str, folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    index = {c: i for i, c in enumerate(classes)}
    present = sorted(d.name for d in folder.iterdir() if d.is_dir())
    unknown = [c for c in present if c not in index]
    if unknown:
        raise ValueError(
            f"{name}: class folders in {folder} that train/ does not have: {', '.join(unknown[:10])}"
        )
    return [(p, index[c]) for c in present for p in _images_under(folder / c)]


TINY_LAYOUT = (
    "tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt}"
)


def _tiny_base(root: Path) -> Path:
    for base in (root / "tiny-imagenet-200", root):
        if (base / "wnids.txt").is_file():
            return base
    raise DatasetNotFoundError(
        f"tiny_imagenet: no wnids.txt in {root / 'tiny-imagenet-200'} or {root}; expected layout under "
        f"data.root={root}: {TINY_LAYOUT}. Download and unzip tiny-imagenet-200.zip "
        f"(http://cs231n.stanford.edu/tiny-imagenet-200.zip) there, then point `data.root` at it"
    )


@DATASETS.register("tiny_imagenet")
def tiny_imagenet(root: str = DEFAULT_ROOT, pad: int = 4) -> DatasetBundle:
    """Tiny-ImageNet-200 (64x64), `root` holding tiny-imagenet-200/ (or being it); val is the test split;
    `pad`: random-crop padding."""
    name = "tiny_imagenet"
    pad = check_pad(name, pad, 64)
    root_path = resolve_root(name, root)
    base = _tiny_base(root_path)
    wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    train = []
    for w in wnids:
        folder = base / "train" / w / "images"
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{name}: missing {folder} (expected layout: {TINY_LAYOUT})")
        train += [(p, index[w]) for p in _images_under(folder)]
    ann = base / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DatasetNotFoundError(f"{name}: missing {ann} (expected layout: {TINY_LAYOUT})")
    test = []
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not parts or not parts[0]:
            continue
        if len(parts) < 2 or parts[1] not in index:
            raise ValueError(
                f"{name}: {ann}:{lineno}: expected '<file>\\t<wnid>...' with a wnid of wnids.txt"
            )
        path = base / "val" / "images" / parts[0]
        if not path.is_file():
            raise DatasetNotFoundError(f"{name}: {ann}:{lineno} names {path}, which does not exist")
        test.append((str(path), index[parts[1]]))
    if not train or not test:
        raise DatasetNotFoundError(f"{name}: no {'train' if not train else 'val'} images under {base}")
    return DatasetBundle(
        name=name,
        num_classes=len(wnids),
        image_size=(64, 64),
        mean=TINY_IMAGENET_MEAN,
        std=TINY_IMAGENET_STD,
        train=FolderSplit(train, 64, "tiny", pad),
        test=FolderSplit(test, 64, "tiny", pad),
        class_names=tuple(wnids),
        options={"root": str(root_path), "pad": pad},
    )


@DATASETS.register("imagefolder")
def imagefolder(root: str | None = None, image_size: int = 224) -> DatasetBundle:
    """Any `root` with train/ and val/ (or test/) folders of class folders; classes from train/."""
    name = "imagefolder"
    if root is None:
        raise ValueError(
            f"{name}: data.root is required: a directory with train/ and val/ (or test/) class folders"
        )
    size = check_int(name, "image_size", image_size, low=8, high=4096)
    root_path = resolve_root(name, root)
    layout = f"{root_path}/{{train,val}}/<class>/*.jpg (val/ may be named test/)"
    train_dir = root_path / "train"
    test_dir = next((root_path / d for d in ("val", "test") if (root_path / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        missing = "train/" if not train_dir.is_dir() else "val/ (or test/)"
        raise DatasetNotFoundError(f"{name}: no {missing} in {root_path}; expected layout: {layout}")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DatasetNotFoundError(
            f"{name}: {train_dir} has {len(classes)} class folder(s), need at least 2; "
            f"expected layout: {layout}"
        )
    train, test = _class_samples(name, train_dir, classes), _class_samples(name, test_dir, classes)
    for split_dir, samples in ((train_dir, train), (test_dir, test)):
        if not samples:
            raise DatasetNotFoundError(f"{name}: no images ({', '.join(IMG_EXTENSIONS)}) under {split_dir}")
    return DatasetBundle(
        name=name,
        num_classes=len(classes),
        image_size=(size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        train=FolderSplit(train, size, "imagefolder"),
        test=FolderSplit(test, size, "imagefolder"),
        class_names=tuple(classes),
        options={"root": str(root_path), "image_size": size},
    )

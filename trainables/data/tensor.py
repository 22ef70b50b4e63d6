"""In-memory datasets as uint8 tensors; a batch is an index into them (the airbench recipe).

The split's images move to the loader's device once (cached per device) and stay uint8 there: a
CIFAR-10 train split is 150 MB. Training augmentation is the standard CIFAR pair, random crop
with `pad`-pixel zero padding (the `data.pad` option: 4 by default as SaliencyMix and CutMix,
2 in GuidedMixup's CIFAR code, 0 disables the crop) + horizontal flip, applied to the whole batch with one gather:
`sample_crop_flip` draws the parameters from the trial's generator, `apply_crop_flip` applies
them, so tests (and replays) can fix the parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..mixing.lazy import lazy_import
from .base import batch_bounds, epoch_order

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


@dataclass(frozen=True)
class CropFlipParams:
    """Per-sample crop offsets into the padded image, in [0, 2*pad], and flip flags."""

    dy: Tensor  #: int64 (N,)
    dx: Tensor  #: int64 (N,)
    flip: Tensor  #: bool (N,)

    def to(self, device: torch.device) -> CropFlipParams:
        return CropFlipParams(self.dy.to(device), self.dx.to(device), self.flip.to(device))

    def __getitem__(self, sl: slice) -> CropFlipParams:
        return CropFlipParams(self.dy[sl], self.dx[sl], self.flip[sl])


def sample_crop_flip(n: int, pad: int, flip: bool, generator: torch.Generator | None) -> CropFlipParams:
    """Draw crop offsets in [0, 2*pad] and flips for `n` samples (on the CPU) from `generator`."""
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flips = (
        torch.randint(0, 2, (n,), generator=generator).bool() if flip else torch.zeros(n, dtype=torch.bool)
    )
    return CropFlipParams(offsets[0], offsets[1], flips)


def apply_crop_flip(images: Tensor, params: CropFlipParams, pad: int) -> Tensor:
    """Zero-pad `images` (B,C,H,W) by `pad`, crop back to (H,W) at the offsets, mirror the flagged ones.

    One advanced-indexing gather for the whole batch; the flip is folded into the column index
    (column j of a flipped crop reads padded column dx + W-1-j). Works for any dtype and device.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    rows = params.dy.to(dev)[:, None] + torch.arange(h, device=dev)  # (B,H)
    ar = torch.arange(w, device=dev)
    dx = params.dx.to(dev)[:, None]
    cols = torch.where(params.flip.to(dev)[:, None], dx + (w - 1 - ar), dx + ar)  # (B,W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass(eq=False)
class TensorSplit:
    """A split held as uint8 images (N,3,H,W) and int64 labels (N,) on the CPU."""

    images: Tensor
    labels: Tensor
    pad: int = 4  #: random-crop zero padding when training (0 disables the crop)
    flip: bool = True  #: random horizontal flip when training
    _cache: dict[torch.device, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"TensorSplit: images must be uint8 (N,3,H,W), got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ValueError(
                f"TensorSplit: labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}  # Ray pickles splits; device copies stay behind

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The images and labels on `device`, copied there once."""
        if device.type == "cpu":
            return self.images, self.labels
        key = device
        if device.type == "cuda" and device.index is None:
            key = torch.device("cuda", torch.cuda.current_device())
        if key not in self._cache:
            self._cache[key] = (self.images.to(key), self.labels.to(key))
        return self._cache[key]

    def loader(
        self,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None,
        device: torch.device,
        num_workers: int = 0,
    ) -> TensorLoader:
        return TensorLoader(self, batch_size, train=train, generator=generator, device=device)


class TensorLoader:
    """Batches of a `TensorSplit`; see `trainables.data.make_loader` for the contract."""

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        train: bool,
        generator: torch.Generator | None,
        device: torch.device,
    ) -> None:
        self.split, self.batch_size, self.train = split, batch_size, train
        self.generator, self.device = generator, device
        self._bounds = batch_bounds(len(split), batch_size, train)

    def __len__(self) -> int:
        return len(self._bounds)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Everything random is drawn now, before the first batch, so the epoch does not depend on
        # who else draws from the trial's generator while it runs (the mixing step does).
        n, split = len(self.split), self.split
        order = epoch_order(n, self.train, self.generator)
        augment = self.train and (split.pad > 0 or split.flip)
        params = sample_crop_flip(n, split.pad, split.flip, self.generator) if augment else None
        return self._batches(order, params)

    def _batches(self, order: Tensor, params: CropFlipParams | None) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = self.split.on(self.device)
        order = order.to(self.device)
        params = params.to(self.device) if params is not None else None
        for start, end in self._bounds:
            idx = order[start:end]
            x = images[idx]
            if params is not None:
                x = apply_crop_flip(x, params[start:end], self.split.pad)
            yield x.float().div_(255.0), labels[idx]

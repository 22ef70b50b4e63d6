"""`synthetic_salient`: procedural images with one salient object on a cluttered background.

The offline default dataset. Each image has a background of smooth low-frequency colour noise,
distractor strokes and blobs that belong to no class, and pixel noise (all scaled by `clutter`;
`clutter=0` is a flat colour), and ONE object whose shape is the label: a random position,
size (`object_scale` x the image side, +-20%), aspect (+-15%), rotation (+-15 degrees) and a
colour pushed 0.45-0.8 (RGB distance) away from the mean colour of its surroundings, so it is
salient. The object covers ~8% of the image at the defaults, and ~28% of CutMix boxes
(lam ~ U(0,1)) hold no object pixel at all -- the case SaliencyMix's saliency-guided patch
selection is meant to fix, which a benchmark on this data should be able to show.

Difficulty (measured with a 3-layer CNN, Adam, batch 16, 1000 training images, 5 epochs, K=10,
mean test error of 3 seeds): clutter 0 -> 5%, 0.5 (default) -> 57%, 1 -> 73%, 2 -> 84%; after
15 epochs: clutter 0.5 -> 5%, 2 -> 34%. `object_scale` defaults to 0.4 rather than 0.35 because
objects of ~11 px were too hard to learn in a few epochs at the default clutter.

Classes: 16 shapes (`SHAPE_NAMES`); with more than 16 classes, class k >= 16 is shape k - 16
filled with diagonal stripes (a texture cue), so up to 32 classes. None of the shapes is the
mirror image of another, so the horizontal-flip augmentation never changes a label.

Determinism: every random number of image i is a counter-based hash of (seed, split, i,
stream, slot), so image i of the train split is the same whatever `train_size` is, the splits
never share images, and generation is vectorised over images (no per-image generator). Labels
are balanced exactly on every K-aligned prefix: each block of K consecutive indices holds a
hashed permutation of the K classes.

Object masks: `generate` also returns each object's anti-aliased coverage (the ground truth of
saliency tests), and the bundle's `object_masks(split, indices)` hook renders images, labels and
coverage of any indices on demand, for label fidelity (`trainables.mixing.fidelity`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ..mixing.lazy import lazy_import
from .base import DATASETS, DatasetBundle, check_float, check_int, check_pad
from .tensor import TensorSplit

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_CHUNK = 256  # images rendered at once: small temporaries (~4 MB) stay in the allocator's heap
_SS = 2  # supersampling factor of the object mask (anti-aliased edges)

# hash streams: one per kind of random quantity, so adding one never shifts the others
_LABEL, _BG, _DISTRACT, _OBJECT, _NOISE = 1, 2, 3, 4, 5
_SPLITS = {"train": 0, "test": 1}
_DISTRACT_PARAMS = 10  # uniforms per distractor slot
# what one unit of `clutter` adds (tuned so that the default 0.5 is learnable but not trivial)
_LOW_FREQ_AMP = 0.2  # amplitude of the low-frequency colour noise
_DISTRACTORS = 3.0  # mean number of distractors
_NOISE_AMP = 0.05  # amplitude of the uniform pixel noise


# -- counter-based random numbers ------------------------------------------------------------------


def _mix32(x: Tensor) -> Tensor:
    """lowbias32 (C. Wellons): a bijective 32-bit mixer on int64 tensors holding values < 2**32.

    Products of two 32-bit values may wrap around int64; only the low 32 bits are kept, which
    wrap-around does not affect.
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def _hash(*parts: int | Tensor) -> Tensor:
    """Hash of the (broadcast) parts, int64 values in [0, 2**32)."""
    h = torch.tensor(0x2545F491, dtype=torch.int64)
    for p in parts:
        h = _mix32((h ^ p) & _M32)
    return h


def _uniform(h: Tensor) -> Tensor:
    """float32 uniforms in [0, 1) from 24 bits of the hash."""
    return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))


# -- the shapes: inside-tests on object coordinates (u, v) in [-1, 1], v pointing down -----------


def _disc(u: Tensor, v: Tensor) -> Tensor:
    return u * u + v * v <= 1.0


def _square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 0.82


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    return (v <= 0.8) & (u.abs() <= (v + 0.95) * 0.6)


def _cross(u: Tensor, v: Tensor) -> Tensor:
    a, b = u.abs(), v.abs()
    return ((a <= 0.3) & (b <= 0.95)) | ((b <= 0.3) & (a <= 0.95))


def _ring(u: Tensor, v: Tensor) -> Tensor:
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5**2)


def _bar(u: Tensor, v: Tensor) -> Tensor:
    return (u.abs() <= 1.0) & (v.abs() <= 0.32)


def _diamond(u: Tensor, v: Tensor) -> Tensor:
    return u.abs() + v.abs() <= 1.05


def _star(u: Tensor, v: Tensor) -> Tensor:
    theta = torch.atan2(u, -v)
    return u * u + v * v <= (0.38 + 0.67 * ((1 + torch.cos(5 * theta)) / 2) ** 2) ** 2


def _l_shape(u: Tensor, v: Tensor) -> Tensor:
    stem = (u >= -0.85) & (u <= -0.3) & (v.abs() <= 0.95)
    foot = (v >= 0.4) & (v <= 0.95) & (u.abs() <= 0.85)
    return stem | foot


def _arrow(u: Tensor, v: Tensor) -> Tensor:
    head = (v >= -0.95) & (v <= 0.05) & (u.abs() <= (v + 0.95) * 1.0)
    shaft = (u.abs() <= 0.28) & (v > 0.05) & (v <= 0.95)
    return head | shaft


def _t_shape(u: Tensor, v: Tensor) -> Tensor:
    top = (v >= -0.9) & (v <= -0.4) & (u.abs() <= 0.9)
    stem = (u.abs() <= 0.27) & (v > -0.4) & (v <= 0.95)
    return top | stem


def _x_shape(u: Tensor, v: Tensor) -> Tensor:
    return (((u - v).abs() <= 0.42) | ((u + v).abs() <= 0.42)) & (torch.maximum(u.abs(), v.abs()) <= 0.85)


def _frame(u: Tensor, v: Tensor) -> Tensor:
    m = torch.maximum(u.abs(), v.abs())
    return (m <= 0.9) & (m >= 0.45)


def _crescent(u: Tensor, v: Tensor) -> Tensor:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.8**2)


def _two_dots(u: Tensor, v: Tensor) -> Tensor:
    return ((u - 0.52) ** 2 + v * v <= 0.45**2) | ((u + 0.52) ** 2 + v * v <= 0.45**2)


def _half_disc(u: Tensor, v: Tensor) -> Tensor:
    return (u * u + v * v <= 1.0) & (v >= -0.15)


_SHAPES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
    "bar": _bar,
    "diamond": _diamond,
    "star": _star,
    "l_shape": _l_shape,
    "arrow": _arrow,
    "t_shape": _t_shape,
    "x_shape": _x_shape,
    "frame": _frame,
    "crescent": _crescent,
    "two_dots": _two_dots,
    "half_disc": _half_disc,
}
SHAPE_NAMES: tuple[str, ...] = tuple(_SHAPES)
MAX_CLASSES = 2 * len(SHAPE_NAMES)


def class_names(num_classes: int) -> tuple[str, ...]:
    """`disc`, `square`, ... and, past the 16 shapes, `striped_disc`, `striped_square`, ..."""
    s = len(SHAPE_NAMES)
    return tuple(SHAPE_NAMES[k % s] if k < s else f"striped_{SHAPE_NAMES[k % s]}" for k in range(num_classes))


# -- rendering -----------------------------------------------------------------------------------


def _labels(idx: Tensor, key: Tensor, k: int) -> Tensor:
    block, pos = idx // k, idx % k
    keys = _hash(key, _LABEL, block[:, None], torch.arange(k))  # (n, K)
    perm = torch.argsort(keys, dim=1, stable=True)
    return perm.gather(1, pos[:, None]).squeeze(1)


def _background(idx: Tensor, key: Tensor, clutter: float, size: int) -> Tensor:
    """Flat base colour + low-frequency colour noise, (n,3,S,S) float."""
    n = idx.numel()
    u = _uniform(_hash(key, _BG, idx[:, None], torch.arange(3 + 3 * 16)))
    img = (0.1 + 0.8 * u[:, :3])[:, :, None, None].expand(n, 3, size, size)
    if clutter > 0:
        low = (u[:, 3:] * 2 - 1).view(n, 3, 4, 4)
        low = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
        img = img + _LOW_FREQ_AMP * min(clutter, 1.5) * low
    return img.clamp(0, 1)


def _distractors(img: Tensor, idx: Tensor, key: Tensor, clutter: float) -> Tensor:
    """Paint ceil(2*_DISTRACTORS*clutter) distractor slots, each on with probability 1/2: strokes, blobs."""
    n, _, size, _ = img.shape
    slots = min(math.ceil(2 * _DISTRACTORS * clutter), 64)
    if slots == 0:
        return img
    u = _uniform(_hash(key, _DISTRACT, idx[:, None], torch.arange(slots * _DISTRACT_PARAMS)))
    u = u.view(n, slots, _DISTRACT_PARAMS)
    xs = (torch.arange(size, dtype=torch.float32) + 0.5)[None, None, :]
    ys = (torch.arange(size, dtype=torch.float32) + 0.5)[None, :, None]
    for d in range(slots):
        p = u[:, d, :, None, None]  # (n, P, 1, 1)
        dx, dy = xs - p[:, 2] * size, ys - p[:, 3] * size
        c, s = torch.cos(p[:, 4] * math.pi), torch.sin(p[:, 4] * math.pi)
        a, b = c * dx + s * dy, -s * dx + c * dy  # along / across the distractor's axis
        # stroke: a 1-2.2 px wide segment, 25-65% of the image side long
        half_len, half_w = size * (0.12 + 0.2 * p[:, 5]), 0.5 + 0.6 * p[:, 6]
        dist = torch.sqrt((a.abs() - half_len).clamp_min(0) ** 2 + b * b)
        stroke = (half_w + 0.5 - dist).clamp(0, 1)
        # blob: an ellipse with radii 3-8% of the side (1-2.6 px at 32 px), soft rim
        q = (a / (size * (0.03 + 0.05 * p[:, 5]))) ** 2 + (b / (size * (0.03 + 0.05 * p[:, 6]))) ** 2
        blob = ((1 - q) * 2).clamp(0, 1)
        alpha = torch.where(p[:, 1] < 0.5, stroke, blob) * (p[:, 0] < 0.5)
        colour = u[:, d, 7:10, None, None]
        img = img + alpha[:, None] * (colour - img)
    return img


def _object(
    img: Tensor,
    idx: Tensor,
    key: Tensor,
    labels: Tensor,
    object_scale: float,
) -> tuple[Tensor, Tensor]:
    """Paint the class object; returns the image and the object's coverage mask (n,S,S) in [0,1]."""
    n, _, size, _ = img.shape
    u = _uniform(_hash(key, _OBJECT, idx[:, None], torch.arange(10)))
    col = lambda j: u[:, j, None, None]  # noqa: E731
    radius = object_scale * size / 2 * (0.8 + 0.4 * col(0))
    aspect = torch.exp((col(1) - 0.5) * 0.3)
    angle = (col(2) - 0.5) * math.radians(30)
    reach = radius * 1.15  # keeps the rotated, stretched object inside the image
    free = (size - 2 * reach).clamp_min(0)
    cx, cy = reach + col(3) * free, reach + col(4) * free

    sub = (torch.arange(size * _SS, dtype=torch.float32) + 0.5) / _SS
    dx, dy = sub[None, None, :] - cx, sub[None, :, None] - cy
    cos, sin = torch.cos(angle), torch.sin(angle)
    uu = (cos * dx + sin * dy) / (radius * aspect)
    vv = (-sin * dx + cos * dy) / (radius / aspect)
    n_shapes = len(SHAPE_NAMES)
    shape_id, striped = labels % n_shapes, labels >= n_shapes
    inside = torch.zeros(n, size * _SS, size * _SS)
    for s in shape_id.unique().tolist():
        m = shape_id == s
        inside[m] = _SHAPES[SHAPE_NAMES[s]](uu[m], vv[m]).float()
    coverage = F.avg_pool2d(inside[:, None], _SS)[:, 0]
    if striped.any():
        stripe_on = torch.remainder(torch.floor((uu + vv) * 1.6 + col(9) * 2), 2) == 0
        fill = torch.where(striped[:, None, None] & ~stripe_on, 0.4, 1.0)
        alpha = F.avg_pool2d((inside * fill)[:, None], _SS)[:, 0]
    else:
        alpha = coverage

    # colour: the mean colour around the object, moved 0.45-0.8 away (RGB distance) in a random
    # direction; channels that would leave [0, 1] move the other way instead
    px = torch.arange(size, dtype=torch.float32) + 0.5
    w = torch.exp(
        -((px[None, None, :] - cx) ** 2 + (px[None, :, None] - cy) ** 2) / (2 * (1.5 * radius) ** 2)
    )
    local = (img * w[:, None]).sum((2, 3)) / w.sum((1, 2))[:, None]  # (n, 3)
    direction = u[:, 5:8] * 2 - 1
    step = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-3) * (0.45 + 0.35 * u[:, 8:9])
    colour = local + step
    colour = torch.where((colour < 0) | (colour > 1), local - step, colour).clamp(0, 1)
    img = img + alpha[:, None] * (colour[:, :, None, None] - img)
    return img, coverage


def _noise(img: Tensor, idx: Tensor, key: Tensor, clutter: float) -> Tensor:
    if clutter <= 0:
        return img
    h = _hash(key, _NOISE, idx)[:, None]
    counter = torch.arange(img[0].numel(), dtype=torch.int64) * _GOLDEN
    u = _uniform(_mix32((h + counter) & _M32)).view_as(img)
    return img + (_NOISE_AMP * min(clutter, 2.0)) * (u * 2 - 1)


def generate(
    indices: Tensor | range,
    *,
    seed: int = 0,
    split: str = "train",
    num_classes: int = 10,
    clutter: float = 0.5,
    object_scale: float = 0.4,
    image_size: int = 32,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render images `indices` of a split: (uint8 (n,3,S,S), int64 labels (n,), object coverage (n,S,S)).

    The coverage mask (float in [0, 1]) is the object's ground-truth extent, for saliency tests.
    Arguments are not range-checked here; `build_dataset` does that.
    """
    if isinstance(indices, range):
        indices = torch.arange(indices.start, indices.stop, indices.step)
    idx = torch.as_tensor(indices, dtype=torch.int64).flatten()
    if split not in _SPLITS:
        raise ValueError(f"synthetic_salient: split must be one of {', '.join(_SPLITS)}, got {split!r}")
    key = _hash(seed & _M32, seed >> 32, _SPLITS[split])
    images, labels, masks = [], [], []
    for chunk in idx.split(_CHUNK):
        y = _labels(chunk, key, num_classes)
        img = _background(chunk, key, clutter, image_size)
        img = _distractors(img, chunk, key, clutter)
        img, cover = _object(img, chunk, key, y, object_scale)
        img = _noise(img, chunk, key, clutter)
        images.append(img.clamp(0, 1).mul(255).round().to(torch.uint8))
        labels.append(y)
        masks.append(cover)
    if not images:
        empty = torch.empty(0, image_size, image_size)
        return empty[:, None].expand(0, 3, -1, -1).to(torch.uint8), torch.empty(0, dtype=torch.int64), empty
    return torch.cat(images), torch.cat(labels), torch.cat(masks)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N,3,H,W) scaled to [0, 1]."""
    x = images.transpose(0, 1).reshape(3, -1).to(torch.float64) / 255.0
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def _object_masks(split: str, indices: Tensor, **render: object) -> tuple[Tensor, Tensor, Tensor]:
    """The bundle's `object_masks` hook: images, labels and coverage masks of `indices` of `split`."""
    return generate(indices, split=split, **render)


@DATASETS.register("synthetic_salient")
def synthetic_salient(
    seed: int = 0,
    train_size: int = 5000,
    test_size: int = 1000,
    num_classes: int = 10,
    clutter: float = 0.5,
    object_scale: float = 0.4,
    image_size: int = 32,
    pad: int = 4,
) -> DatasetBundle:
    """Offline procedural images: one class-shaped salient object on a cluttered background."""
    name = "synthetic_salient"
    opts = {
        "seed": check_int(name, "seed", seed, low=0, high=2**63 - 1),
        "train_size": check_int(name, "train_size", train_size, low=1),
        "test_size": check_int(name, "test_size", test_size, low=1),
        "num_classes": check_int(name, "num_classes", num_classes, low=2, high=MAX_CLASSES),
        "clutter": check_float(name, "clutter", clutter, low=0.0, high=4.0),
        "object_scale": check_float(name, "object_scale", object_scale, low=0.0, high=1.0, low_open=True),
        "image_size": check_int(name, "image_size", image_size, low=8, high=512),
    }
    opts["pad"] = check_pad(name, pad, opts["image_size"])  # random-crop padding of the training loader
    render = {k: opts[k] for k in ("seed", "num_classes", "clutter", "object_scale", "image_size")}
    x_train, y_train, _ = generate(range(opts["train_size"]), split="train", **render)
    x_test, y_test, _ = generate(range(opts["test_size"]), split="test", **render)
    mean, std = channel_stats(x_train)
    size = opts["image_size"]
    return DatasetBundle(
        name=name,
        num_classes=opts["num_classes"],
        image_size=(size, size),
        mean=mean,
        std=std,
        train=TensorSplit(x_train, y_train, pad=opts["pad"]),
        test=TensorSplit(x_test, y_test, pad=opts["pad"]),
        class_names=class_names(opts["num_classes"]),
        options=opts,
        object_masks=partial(_object_masks, **render),
    )

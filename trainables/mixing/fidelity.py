"""Label fidelity: does a mixed sample's soft label say what its image shows? (MIXING.md, "Label fidelity")

The papers' central claim (SaliencyMix §1, GuidedMixup §1, Saliency Grafting §1) is that a random
patch often carries background while the label still says "object". On a dataset that knows every
object's pixels (`synthetic_salient`), that is measured, not argued. Per mixed sample i with target
t = i, source s = partner[i], source weight w (B,H,W) (the share of each output pixel taken from the
source) and object coverage masks m (soft, in [0, 1]):

* visible target object  V_t = sum m_t * (1 - w)
* visible source object  V_s = sum m~_s * w, where m~_s is the source's mask MOVED exactly as the
  image pixels were: for a box pasted at another place (non-corresponding selection schemes), the
  source pixel under output pixel p is p - (target box origin) + (source box origin), clamped to
  the image, as `masks.paste_boxes` gathers it; every other mask keeps pixels in place.
* object evidence  e = (V_t onehot(y_t) + V_s onehot(y_s)) / (V_t + V_s)
* label            y~ = lam onehot(y_t) + (1 - lam) onehot(y_s)    (lam: TARGET weight, MixInfo.lam)
* label fidelity error (total variation)  TV = 1/2 ||y~ - e||_1, in [0, 1]. With y_t != y_s this is
  |lam - V_t / (V_t + V_s)|; a pair of one class has y~ = e = onehot(y): TV = 0.
* empty label: the label puts more than `label_floor` (0.1) on the source's class while nothing of
  that class is visible: (1 - lam) > 0.1 and (V_s + [y_s == y_t] V_t) < `min_visible`. For a pair of
  two classes that is "no pixel of the source object is visible"; for a pair of one class the source
  weight lands on a class whose (target) object IS visible, which is not an empty label.

Choices, stated:
* Coverage is used SOFT (the dataset's anti-aliased coverage in [0, 1], in pixel units), not
  thresholded, and blended pixels count with their weight: a Mixup blend at lam = 0.3 shows the
  source object with weight 0.7. "Visible" means at least `min_visible` = 0.5 pixel-equivalents, so
  one anti-aliased edge pixel with coverage 0.2 does not make an object "visible".
* No object visible at all (V_t + V_s < `min_visible`): e is undefined, so TV is NaN for that sample
  and `no_object` is set; summaries average TV over the other samples and report the count.
* The label is rebuilt from lam and the integer labels, WITHOUT label smoothing: the measurement is
  about the mixing rule, and smoothing would add the same constant to every method.
* Unmixed batches (`info.applied` False, e.g. a batch that lost the `prob` draw) have w = 0 and
  lam = 1, so they measure TV 0 and no empty label; callers that want to measure the mixing itself
  force `prob` to 1 (`always_mixing`).

Pure torch, no Ray / MLflow import; works on any device (the summaries read a few scalars back).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .config import MixConfig, resolve_mix_config
from .lazy import lazy_import
from .mixer import Mixer, MixInfo

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = lazy_import("torch")

MIN_VISIBLE = 0.5  #: pixel-equivalents of object coverage below which an object counts as not visible
LABEL_FLOOR = 0.1  #: source label weight above which an invisible source makes an "empty" label


@dataclass(frozen=True)
class Fidelity:
    """Per-sample label fidelity of a mixed batch (or of several, concatenated); all (B,) tensors."""

    tv: Tensor  #: float, 1/2 ||y~ - e||_1 in [0, 1]; NaN where no object pixel is visible (`no_object`)
    empty: Tensor  #: bool, source label weight > label_floor but nothing of the source's class visible
    no_object: Tensor  #: bool, no object pixel visible at all (excluded from the TV mean)
    source_share: Tensor  #: float, mean source weight over the image (the pasted / blended share)
    source_weight: Tensor  #: float, 1 - lam: the label's weight on the source
    target_visible: Tensor  #: float, V_t in pixel-equivalents
    source_visible: Tensor  #: float, V_s in pixel-equivalents
    batch: Tensor  #: long, index of the mixed batch each sample came from (for clustered statistics)

    def __len__(self) -> int:
        return int(self.tv.shape[0])

    @staticmethod
    def cat(parts: list[Fidelity]) -> Fidelity:
        if not parts:
            raise ValueError("Fidelity.cat needs at least one part")
        fields = Fidelity.__dataclass_fields__
        return Fidelity(**{k: torch.cat([getattr(p, k) for p in parts]) for k in fields})

    def summary(self) -> dict[str, float]:
        """Means over the samples: label TV (over samples with a visible object; NaN if none has one),
        empty-label rate, no-object rate, mean source share, and n."""
        n = len(self)
        ok = ~self.no_object
        tv = float(self.tv[ok].double().mean()) if bool(ok.any()) else float("nan")
        return {"label_tv": tv, "empty_label_rate": float(self.empty.double().mean()) if n else float("nan"),
                "no_object_rate": float(self.no_object.double().mean()) if n else float("nan"),
                "source_share": float(self.source_share.double().mean()) if n else float("nan"), "n": float(n)}


def moved_source_masks(masks: Tensor, partner: Tensor, source_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """Each pair's SOURCE mask (B,H,W) moved as `paste_boxes` moves source pixels.

    Output pixel p reads the source at p - target_box[:2] + source_box[:2] (clamped to the image), so
    a box cut at one place and pasted at another carries its mask along; where the boxes coincide
    (corresponding placement) or are all zero (masks without boxes) the mask stays in place.
    """
    b, h, w = masks.shape
    src = masks.index_select(0, partner)
    offset = source_boxes[:, :2] - target_boxes[:, :2]  # (dx, dy)
    if not bool(offset.any()):
        return src
    ys = torch.arange(h, device=masks.device)[None, :, None]
    xs = torch.arange(w, device=masks.device)[None, None, :]
    sy = (ys + offset[:, 1, None, None]).clamp(0, h - 1)
    sx = (xs + offset[:, 0, None, None]).clamp(0, w - 1)
    return src.flatten(1).gather(1, (sy * w + sx).flatten(1)).view(b, h, w)


def label_fidelity(masks: Tensor, labels: Tensor, info: MixInfo, *, min_visible: float = MIN_VISIBLE,
                   label_floor: float = LABEL_FLOOR) -> Fidelity:
    """Label fidelity of one mixed batch.

    Args:
        masks: (B,H,W) object coverage in [0, 1] of the UNMIXED batch (the mixer's input), same order.
        labels: (B,) integer class of each unmixed image.
        info: the `MixInfo` of the mixer's output for that batch (partner, lam, boxes, source_weight).
        min_visible: pixel-equivalents of coverage an object needs to count as visible.
        label_floor: source label weight above which an invisible source makes an empty label.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B,H,W) object coverage, got {tuple(masks.shape)}")
    if labels.ndim != 1 or labels.is_floating_point() or labels.shape[0] != masks.shape[0]:
        raise ValueError(f"labels must be integer ({masks.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
    b = masks.shape[0]
    masks = masks.float()
    partner, lam = info.partner.to(masks.device), info.lam.to(masks.device).double()
    if info.partner.shape != (b,):
        raise ValueError(f"info.partner {tuple(info.partner.shape)} does not match the batch of {b} masks")
    sw = info.source_weight
    if sw is None or not info.applied:
        sw = torch.zeros_like(masks)
    elif sw.shape != masks.shape:
        raise ValueError(f"source_weight {tuple(sw.shape)} does not match the masks {tuple(masks.shape)}")
    sw = sw.to(masks.device, masks.dtype)
    moved = moved_source_masks(masks, partner, info.source_boxes.to(masks.device), info.boxes.to(masks.device))
    v_t = (masks * (1.0 - sw)).flatten(1).double().sum(1)
    v_s = (moved * sw).flatten(1).double().sum(1)
    total = v_t + v_s
    same = labels == labels.index_select(0, partner)
    no_object = total < min_visible
    share_t = v_t / total.clamp_min(1e-12)
    tv = torch.where(same, torch.zeros_like(lam), (lam - share_t).abs())
    tv = torch.where(no_object, torch.full_like(tv, float("nan")), tv)
    source_class = v_s + torch.where(same, v_t, torch.zeros_like(v_t))
    empty = ((1.0 - lam) > label_floor) & (source_class < min_visible)
    return Fidelity(tv=tv.float(), empty=empty, no_object=no_object, source_share=sw.flatten(1).mean(1),
                    source_weight=(1.0 - lam).float(), target_visible=v_t.float(), source_visible=v_s.float(),
                    batch=torch.zeros(b, dtype=torch.long, device=masks.device))


def always_mixing(config: Mapping[str, object] | MixConfig | None, *,
                  normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> Mixer:
    """A `Mixer` of `config` with `prob` forced to 1 (every batch mixed); `none` stays a non-mixer.
    `normalization`: the dataset's (mean, std), for `saliency_input: official_float` (see `Mixer`)."""
    cfg = resolve_mix_config(config)
    return Mixer(replace(cfg, prob=1.0) if cfg.mask is not None else cfg, normalization=normalization)


def measure_fidelity(mixer: Mixer, images: Tensor, labels: Tensor, masks: Tensor, *, num_classes: int,
                     batch_size: int, generator: torch.Generator, model: nn.Module | None = None,
                     min_visible: float = MIN_VISIBLE, label_floor: float = LABEL_FLOOR) -> Fidelity:
    """Mix `images` batch by batch (consecutive slices of `batch_size`) and measure each mixed batch.

    `images` (N,3,H,W) in [0, 1], `labels` (N,), `masks` (N,H,W). A last slice of one image is left
    out (mixing pairs images within a batch). The mixer draws its parameters from `generator` only;
    `model` is needed by `gradient` saliency. `Fidelity.batch` numbers the batches.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (mixing pairs images within a batch), got {batch_size}")
    parts = []
    for k, start in enumerate(range(0, images.shape[0], batch_size)):
        x, y, m = (t[start:start + batch_size] for t in (images, labels, masks))
        if x.shape[0] < 2:
            break
        out = mixer(x, y, num_classes=num_classes, generator=generator, model=model, check=False)
        fid = label_fidelity(m, y, out.info, min_visible=min_visible, label_floor=label_floor)
        parts.append(replace(fid, batch=torch.full_like(fid.batch, k)))
    if not parts:
        raise ValueError(f"measure_fidelity needs at least 2 images, got {images.shape[0]}")
    return Fidelity.cat(parts)

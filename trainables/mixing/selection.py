"""Box selection schemes of SaliencyMix §3.4, plus CutMix's random box.

A scheme says where the source box is cut (around the SOURCE map's peak, its minimum, or a
uniform random centre) and where it is pasted in the target (the corresponding location, or
around the TARGET map's peak / minimum). Peaks are the first maximum (minimum) in row-major
order, like numpy and torch.argmax.

Geometry (SaliencyMix paper and released code): cut = sqrt(1 - lam); side h = int(H * cut),
w = int(W * cut); box [c - h//2, c + h//2) clipped to the image (so the side before clipping is
2*(h//2)). For non-corresponding schemes the target box has the clipped source box's size, is
centred on the target point and shifted to lie inside the image, so it always contains that
point and both boxes have equal size. lam is recomputed from the clipped box:
lam = 1 - area / (H*W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import Registry


@dataclass(frozen=True)
class Selection:
    """Where a box is cut in the source and pasted in the target."""

    name: str
    source: str  #: "max" | "min" | "random"
    target: str  #: "corresponding" | "max" | "min"
    doc: str


SELECTIONS: Registry[Selection] = Registry("selection scheme")
for _name, _src, _tgt, _doc in (
    ("salient_to_corresponding", "max", "corresponding", "source peak, pasted at the same place (paper default)"),
    ("salient_to_salient", "max", "max", "source peak, pasted on the target's peak"),
    ("salient_to_nonsalient", "max", "min", "source peak, pasted on the target's least salient pixel"),
    ("nonsalient_to_salient", "min", "max", "source minimum, pasted on the target's peak"),
    ("nonsalient_to_nonsalient", "min", "min", "source minimum, pasted on the target's minimum"),
    ("random", "random", "corresponding", "uniform random centre, same place in the target (CutMix)"),
):
    SELECTIONS.register(_name, Selection(_name, _src, _tgt, _doc), help=_doc)


def peak(maps: Tensor, which: str) -> tuple[Tensor, Tensor]:
    """(y, x) of the first maximum ("max") or minimum ("min") of each (B,H,W) map, row-major."""
    flat = maps.flatten(1)
    idx = flat.argmax(1) if which == "max" else flat.argmin(1)
    w = maps.shape[-1]
    return idx // w, idx % w


def cut_sizes(lam: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Box sides int(H*sqrt(1-lam)), int(W*sqrt(1-lam)) from host float64 lam (no device work)."""
    cut = torch.sqrt(1.0 - lam.double().clamp(0.0, 1.0))
    return (height * cut).floor().long(), (width * cut).floor().long()


def place_boxes(
    scheme: Selection,
    cut_h: Tensor,
    cut_w: Tensor,
    size: tuple[int, int],
    *,
    source_maps: Tensor | None = None,
    target_maps: Tensor | None = None,
    centres: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Source and target boxes (B,4) long as (x1, y1, x2, y2).

    Args:
        scheme: a registered selection scheme.
        cut_h, cut_w: (B,) box sides before clipping, on the output device.
        size: (H, W) of the images.
        source_maps: (B,H,W) saliency of each pair's SOURCE (for source "max"/"min").
        target_maps: (B,H,W) saliency of each TARGET (for target "max"/"min").
        centres: (B,2) (y, x) random centres (for source "random").
    """
    h, w = size
    if scheme.source == "random":
        cy, cx = centres[:, 0], centres[:, 1]
    else:
        cy, cx = peak(source_maps, scheme.source)
    hh, hw = cut_h // 2, cut_w // 2
    y1, y2 = (cy - hh).clamp(0, h), (cy + hh).clamp(0, h)
    x1, x2 = (cx - hw).clamp(0, w), (cx + hw).clamp(0, w)
    source = torch.stack((x1, y1, x2, y2), dim=1)
    if scheme.target == "corresponding":
        return source, source
    ty, tx = peak(target_maps, scheme.target)
    bh, bw = y2 - y1, x2 - x1
    ty1 = torch.minimum((ty - bh // 2).clamp_min(0), h - bh)
    tx1 = torch.minimum((tx - bw // 2).clamp_min(0), w - bw)
    return source, torch.stack((tx1, ty1, tx1 + bw, ty1 + bh), dim=1)

"""Box selection schemes of SaliencyMix §3.4, plus CutMix's random box.

A scheme says where the source box is cut (around the SOURCE map's peak, its minimum, or a
uniform random centre) and where it is pasted in the target (the corresponding location, or
around the TARGET map's peak / minimum). Peaks are the first maximum (minimum) in row-major
order, like numpy and torch.argmax.

Geometry: cut = sqrt(1 - lam); side h = int(H * cut), w = int(W * cut); box
[c - h//2, c + h//2), so the box's side is 2*(h//2). A box that crosses the border is fitted
into the image by `box_fit` (the factor `mix.box_fit`):

* `shift` (the SaliencyMix paper: "centering on the maximum saliency pixel if possible, or
  keeping the maximum saliency pixel on the selected patch"): the box keeps its size and is
  moved inside the image; it still contains the chosen point, so every selection scheme pastes
  the area lam asked for.
* `clip` (CutMix and the released SaliencyMix code): the box is cut at the border. Saliency
  peaks sit near the border of small images, so clipped boxes are smaller than lam asked for,
  by an amount that depends on the scheme.

For non-corresponding schemes the target box has the fitted source box's size, is centred on
the target point and shifted to lie inside the image (with either fit), so it always contains
that point and both boxes have equal size. The label rule `area` then recomputes lam from the
pasted box: lam = 1 - area / (H*W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lazy import lazy_import
from .registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

torch = lazy_import("torch")


@dataclass(frozen=True)
class Selection:
    """Where a box is cut in the source and pasted in the target."""

    name: str
    source: str  #: "max" | "min" | "random"
    target: str  #: "corresponding" | "max" | "min"
    doc: str


BOX_FITS = ("shift", "clip")  #: how a box that crosses the border is fitted into the image

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
    box_fit: str = "clip",
) -> tuple[Tensor, Tensor]:
    """Source and target boxes (B,4) long as (x1, y1, x2, y2).

    Args:
        scheme: a registered selection scheme.
        cut_h, cut_w: (B,) box sides before clipping, on the output device.
        size: (H, W) of the images.
        source_maps: (B,H,W) saliency of each pair's SOURCE (for source "max"/"min").
        target_maps: (B,H,W) saliency of each TARGET (for target "max"/"min").
        centres: (B,2) (y, x) random centres (for source "random").
        box_fit: `shift` (keep the size, move the box inside the image) or `clip` (cut it at the
            border).
    """
    if box_fit not in BOX_FITS:
        raise ValueError(f"unknown box_fit {box_fit!r}; allowed: {', '.join(BOX_FITS)}")
    h, w = size
    if scheme.source == "random":
        cy, cx = centres[:, 0], centres[:, 1]
    else:
        cy, cx = peak(source_maps, scheme.source)
    hh, hw = cut_h // 2, cut_w // 2
    if box_fit == "shift":  # side 2*hh <= h, so the start lies in [0, h - 2*hh] and the box holds cy
        y1 = torch.minimum((cy - hh).clamp_min(0), h - 2 * hh)
        x1 = torch.minimum((cx - hw).clamp_min(0), w - 2 * hw)
        y2, x2 = y1 + 2 * hh, x1 + 2 * hw
    else:
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

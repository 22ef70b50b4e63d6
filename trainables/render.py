"""Pictures of what a mixer does: one row per mixed sample.

Columns: source | source saliency with the box cut from it | target | mixed image with the box
pasted into it (or the source-weight map for soft masks) | the soft label's two largest
entries. Used by `mixsweep preview` (real photos, one row per preset or selection scheme) and by
training (`preview.png`: the first mixed batch of a trial). Matplotlib's Agg backend, no pyplot
state: servers have no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .mixing import MixOutput


@dataclass(frozen=True)
class PreviewRow:
    """One mixed sample, ready to draw (HWC float arrays in [0,1])."""

    title: str
    source: np.ndarray
    saliency: np.ndarray | None
    source_box: tuple[int, int, int, int] | None
    target: np.ndarray
    mixed: np.ndarray
    target_box: tuple[int, int, int, int] | None
    source_weight: np.ndarray | None
    label: list[tuple[str, float]]


def rows_from_output(
    images: Tensor, out: MixOutput, class_names: Sequence[str], indices: Sequence[int], titles: Sequence[str]
) -> list[PreviewRow]:
    """PreviewRows for samples `indices` of one mixer call on `images`."""
    info = out.info
    hwc = lambda t: t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # noqa: E731
    rows = []
    for i, title in zip(indices, titles):
        j = int(info.partner[i])
        box = info.boxes[i].tolist()
        has_box = info.applied and box[2] > box[0] and box[3] > box[1]
        sal = info.source_saliency[i].float().cpu().numpy() if info.source_saliency is not None else None
        weight = info.source_weight[i].float().cpu().numpy() if info.source_weight is not None else None
        probs = out.targets[i].float().cpu()
        top = torch.topk(probs, k=min(2, probs.numel()))
        label = [(class_names[int(k)], float(v)) for v, k in zip(top.values, top.indices) if float(v) > 1e-4]
        rows.append(PreviewRow(
            title=title, source=hwc(images[j]), saliency=sal,
            source_box=tuple(info.source_boxes[i].tolist()) if has_box else None,
            target=hwc(images[i]), mixed=hwc(out.images[i]),
            target_box=tuple(box) if has_box else None, source_weight=weight, label=label,
        ))
    return rows


def render_rows(rows: Sequence[PreviewRow], path: str | Path, title: str = "") -> Path:
    """Draw rows into one PNG at `path` (parent folders created); returns the path."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    cols = ["source", "source saliency + cut", "target", "mixed", "soft label"]
    fig = Figure(figsize=(2.3 * len(cols), 2.2 * len(rows) + 0.6), dpi=110, layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    if title:
        fig.suptitle(title, fontsize=11)

    def box(ax, b, color):
        x1, y1, x2, y2 = b
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=color, lw=1.8))

    for r, row in enumerate(rows):
        a_src, a_sal, a_tgt, a_mix, a_lab = axes[r]
        a_src.imshow(row.source)
        if row.saliency is not None:
            a_sal.imshow(row.saliency, cmap="inferno", vmin=0, vmax=1)
            if row.source_box:
                box(a_sal, row.source_box, "cyan")
        else:
            a_sal.text(0.5, 0.5, "no saliency", ha="center", va="center", transform=a_sal.transAxes, color="0.4")
        if row.source_box:
            box(a_src, row.source_box, "cyan")
        a_tgt.imshow(row.target)
        a_mix.imshow(row.mixed)
        if row.target_box:
            box(a_mix, row.target_box, "lime")
        elif row.source_weight is not None and row.source_weight.std() > 1e-6:
            a_mix.contour(row.source_weight, levels=[0.5], colors="lime", linewidths=0.8)
        names = [n for n, _ in row.label][::-1]
        vals = [v for _, v in row.label][::-1]
        a_lab.barh(range(len(vals)), vals, color=["tab:orange", "tab:blue"][-len(vals):])
        a_lab.set_yticks(range(len(vals)), [f"{n}\n{v:.2f}" for n, v in zip(names, vals)], fontsize=8)
        a_lab.set_xlim(0, 1)
        a_lab.tick_params(axis="x", labelsize=7)
        a_src.set_ylabel(row.title, fontsize=9, rotation=0, ha="right", va="center", labelpad=8)
        for ax in (a_src, a_sal, a_tgt, a_mix):
            ax.set_xticks([])
            ax.set_yticks([])
        if r == 0:
            for ax, name in zip(axes[r], cols):
                ax.set_title(name, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "hubble_deep_field")
PHOTO_NAMES = {"chelsea": "cat", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket",
               "camera": "camera", "hubble_deep_field": "galaxies"}


def photo_batch(names: Sequence[str] = PHOTOS, size: int = 128) -> Tensor:
    """scikit-image's sample photos as a (B,3,size,size) batch in [0,1] (centre crop, area resize)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise ValueError("preview photos come from scikit-image: pip install scikit-image") from exc
    import cv2

    out = []
    for name in names:
        if not hasattr(skimage.data, name):
            raise ValueError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        out.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0

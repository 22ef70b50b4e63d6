"""SaliencyMix box selection: where the box is cut, where it lands, how it is fitted into the image
(`mix.box_fit`), and lam from the pasted box."""

from __future__ import annotations

import pytest
import torch

from trainables.mixing import SELECTIONS, build_mixer, saliency_map

from .conftest import photo_batch

SCHEMES = [s for s in SELECTIONS.names() if s != "random"]


def first_extreme(m: torch.Tensor, which: str) -> tuple[int, int]:
    flat = m.flatten()
    i = int(flat.argmax() if which == "max" else flat.argmin())  # torch: first occurrence
    return divmod(i, m.shape[1])


def inside(box, y, x) -> bool:
    x1, y1, x2, y2 = box
    return y1 <= y < y2 and x1 <= x < x2


@pytest.fixture(scope="module")
def batch():
    x = photo_batch((48, 40))  # non-square on purpose
    return torch.cat([x, x.flip(3)])  # 10 real images


@pytest.mark.parametrize("box_fit", ["shift", "clip"])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("lam", ["fixed(0.75)", "fixed(0.36)", "uniform(0,1)"])
def test_box_contains_peak_and_lands_where_the_scheme_says(batch, scheme, lam, box_fit):
    mixer = build_mixer({"preset": "saliencymix", "selection": scheme, "lam": lam, "prob": 1.0, "box_fit": box_fit})
    out = mixer(batch, torch.arange(10), num_classes=10, generator=torch.Generator().manual_seed(5))
    info, sel = out.info, SELECTIONS.get(scheme)
    sal = saliency_map("fine_grained", batch)
    b, _, h, w = batch.shape
    assert torch.equal(info.saliency, sal)
    for i in range(b):
        j = int(info.partner[i])
        src, tgt = info.source_boxes[i].tolist(), info.boxes[i].tolist()
        bw, bh = src[2] - src[0], src[3] - src[1]
        assert (tgt[2] - tgt[0], tgt[3] - tgt[1]) == (bw, bh), "source and target boxes have equal size"
        assert 0 <= tgt[0] <= tgt[2] <= w and 0 <= tgt[1] <= tgt[3] <= h
        # lam from the clipped box, exactly
        assert info.lam[i] == torch.tensor(1.0 - bw * bh / (h * w), dtype=torch.float64).float()
        if bw == 0 or bh == 0:
            assert torch.equal(out.images[i], batch[i])
            continue
        assert inside(src, *first_extreme(sal[j], sel.source))
        if sel.target == "corresponding":
            assert tgt == src
        else:
            assert inside(tgt, *first_extreme(sal[i], sel.target))
        # pixels: the source box of the partner, pasted into the target box; the rest untouched
        pasted = out.images[i][:, tgt[1] : tgt[3], tgt[0] : tgt[2]]
        assert torch.equal(pasted, batch[j][:, src[1] : src[3], src[0] : src[2]])
        keep = torch.ones(h, w, dtype=torch.bool)
        keep[tgt[1] : tgt[3], tgt[0] : tgt[2]] = False
        assert torch.equal(out.images[i][:, keep], batch[i][:, keep])
        # soft label
        expect = torch.zeros(10)
        expect[i] += info.lam[i]
        expect[j] += 1 - info.lam[i]
        assert torch.allclose(out.targets[i], expect, atol=1e-6)


@pytest.mark.parametrize("corner", [(0, 0), (31, 31), (0, 31)])
def test_box_side_parity_clip_and_shift(corner):
    """side 2*(cut//2) (released code); `clip` cuts the box at the border and lam follows the clipped
    box, `shift` keeps the full box inside the image, still holding the peak."""
    py, px = corner
    x = torch.zeros(1, 3, 32, 32)
    x[0, :, py, px] = 1.0  # peak in a corner
    cut = int(32 * 0.5**0.5)  # 22 -> half 11
    half = cut // 2
    results = {}
    for fit in ("clip", "shift"):
        mixer = build_mixer({"preset": "saliencymix", "lam": "fixed(0.5)", "prob": 1.0, "pairing": "flip",
                             "box_fit": fit})
        out = mixer(x, torch.tensor([0]), num_classes=2, generator=torch.Generator().manual_seed(0))
        results[fit] = (out.info.source_boxes[0].tolist(), float(out.info.lam[0]))
    clip_box = [max(px - half, 0), max(py - half, 0), min(px + half, 32), min(py + half, 32)]
    clip_area = (clip_box[2] - clip_box[0]) * (clip_box[3] - clip_box[1])
    assert clip_area < half * half * 1.2
    assert results["clip"] == (clip_box, pytest.approx(1 - clip_area / 1024))
    shift_start = [0 if px == 0 else 32 - 2 * half, 0 if py == 0 else 32 - 2 * half]
    assert results["shift"][0] == [*shift_start, shift_start[0] + 2 * half, shift_start[1] + 2 * half]
    assert inside(results["shift"][0], py, px)
    assert results["shift"][1] == pytest.approx(1 - (2 * half) ** 2 / 1024)


@pytest.fixture(scope="module")
def crops():
    """2,048 32x32 crops of scikit-image photos: saliency peaks near the border, as in CIFAR-size data."""
    from .conftest import photo

    photos = [torch.from_numpy(photo(n, (96, 96))).permute(2, 0, 1).float() / 255.0
              for n in ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat")]
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 65, (2048, 2), generator=g).tolist()
    return torch.stack([photos[k % len(photos)][:, y : y + 32, x : x + 32] for k, (y, x) in enumerate(offsets)])


def unclipped_area(size: int = 32) -> float:
    """E[(2*(int(size*sqrt(1-lam))//2))^2] / size^2 for lam ~ U(0,1): the area lam asks for (midpoint rule)."""
    lams = (torch.arange(400_000, dtype=torch.float64) + 0.5) / 400_000
    side = (size * torch.sqrt(1 - lams)).floor() // 2 * 2
    return float((side * side).mean() / size**2)


def pasted_share(crops, scheme: str, box_fit: str):
    mixer = build_mixer({"preset": "saliencymix", "selection": scheme, "prob": 1.0, "box_fit": box_fit})
    labels = torch.arange(len(crops)) % 2
    out = mixer(crops, labels, num_classes=2, generator=torch.Generator().manual_seed(1))
    return out, labels


def test_shift_pastes_the_area_lam_asks_for_in_every_scheme(crops):
    """Issue 9: with `shift`, every selection scheme pastes (on average over 2,048 pairs) the area that
    lam ~ U(0,1) asks for, so `selection_schemes` compares placements, not patch sizes."""
    expect = unclipped_area()
    shares = {}
    for scheme in SELECTIONS.names():
        out, labels = pasted_share(crops, scheme, "shift")
        area = out.info.source_weight.flatten(1).double().mean(1)  # pasted pixel share per sample
        shares[scheme] = float(area.mean())
        assert abs(shares[scheme] - expect) < 0.02, (scheme, shares[scheme], expect)
        # the label weight of the source is the pasted pixel share, exactly
        assert torch.equal(out.info.lam, (1.0 - area).float())
        src = labels.index_select(0, out.info.partner)
        same = labels == src
        w_src = out.targets[torch.arange(len(crops)), src]
        assert torch.allclose(w_src[~same], area[~same].float(), atol=1e-6)
        # the chosen point stays inside the source box (random: the drawn centre)
        if SELECTIONS.get(scheme).source != "random":
            sal = out.info.source_saliency
            for i in range(0, len(crops), 7):
                box = out.info.source_boxes[i].tolist()
                if box[2] > box[0]:
                    assert inside(box, *first_extreme(sal[i], SELECTIONS.get(scheme).source)), (scheme, i)
    assert max(shares.values()) - min(shares.values()) < 0.02, shares


def test_clip_shrinks_boxes_near_the_border(crops):
    """What `clip` (CutMix, the released SaliencyMix code) does on the same crops: peaks near the border
    shrink the salient boxes well below what lam asks for (the confound `shift` removes)."""
    expect = unclipped_area()
    out, _ = pasted_share(crops, "salient_to_corresponding", "clip")
    share = float(out.info.source_weight.flatten(1).double().mean())
    assert share < expect - 0.1, (share, expect)


def test_per_batch_pastes_one_box_into_all(batch):
    mixer = build_mixer({"preset": "saliencymix", "scope": "per_batch", "prob": 1.0, "lam": "fixed(0.6)"})
    out = mixer(batch, torch.arange(10), num_classes=10, generator=torch.Generator().manual_seed(2))
    boxes = out.info.boxes
    assert (boxes == boxes[0]).all() and (boxes[0, 2:] > boxes[0, :2]).all()
    assert (out.info.lam == out.info.lam[0]).all()
    # the box comes from the saliency of ONE image, x[partner[0]] (released code)
    j0 = int(out.info.partner[0])
    peak = first_extreme(saliency_map("fine_grained", batch[j0 : j0 + 1])[0], "max")
    assert inside(boxes[0].tolist(), *peak)


def test_cutmix_random_box_uniform_centre():
    x = torch.rand(512, 3, 16, 16)
    mixer = build_mixer({"preset": "cutmix", "prob": 1.0, "lam": "fixed(0.75)", "scope": "per_sample"})
    out = mixer(x, torch.zeros(512, dtype=torch.long), num_classes=2, generator=torch.Generator().manual_seed(0))
    b = out.info.boxes.float()
    cy, cx = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
    assert 6.0 < float(cy.mean()) < 10.0 and 6.0 < float(cx.mean()) < 10.0  # centre uniform over the image
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert torch.equal(out.info.lam, (1 - area.double() / 256).float())
    assert torch.equal(out.info.boxes, out.info.source_boxes)


@pytest.mark.parametrize("preset", ["mixup", "cutmix"])
def test_baselines_draw_one_lam_and_one_box_per_batch(preset):
    """Mixup, CutMix (their reference code, timm's default mode='batch', torchvision v2) draw ONE lam
    (and ONE box) per batch; per-sample draws are the explicit `mix.scope: per_sample`."""
    x = torch.rand(64, 3, 16, 16)
    y = torch.arange(64) % 10
    mixed = 0
    for seed in range(12):
        out = build_mixer({"preset": preset, "prob": 1.0})(x, y, num_classes=10,
                                                            generator=torch.Generator().manual_seed(seed))
        assert out.info.applied
        assert torch.unique(out.info.lam).numel() == 1
        if preset == "cutmix":
            assert (out.info.boxes == out.info.boxes[0]).all()
            assert torch.equal(out.info.boxes, out.info.source_boxes)
        mixed += 1
    assert mixed == 12
    per_sample = build_mixer({"preset": preset, "prob": 1.0, "scope": "per_sample"})
    out = per_sample(x, y, num_classes=10, generator=torch.Generator().manual_seed(0))
    assert torch.unique(out.info.lam).numel() > 10

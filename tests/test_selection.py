"""SaliencyMix box selection: where the box is cut, where it lands, and lam from the clipped box."""

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


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("lam", ["fixed(0.75)", "fixed(0.36)", "uniform(0,1)"])
def test_box_contains_peak_and_lands_where_the_scheme_says(batch, scheme, lam):
    mixer = build_mixer({"preset": "saliencymix", "selection": scheme, "lam": lam, "prob": 1.0})
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


def test_box_side_parity_and_clipping():
    """side 2*(cut//2) before clipping (released code), recomputed lam from the clipped box."""
    x = torch.zeros(1, 3, 32, 32)
    x[0, :, 0, 0] = 1.0  # peak in the corner: the box gets clipped to a quarter
    mixer = build_mixer({"preset": "saliencymix", "lam": "fixed(0.5)", "prob": 1.0, "pairing": "flip"})
    out = mixer(x, torch.tensor([0]), num_classes=2, generator=torch.Generator().manual_seed(0))
    cut = int(32 * 0.5**0.5)  # 22 -> half 11
    assert out.info.source_boxes[0].tolist() == [0, 0, cut // 2, cut // 2]
    assert float(out.info.lam[0]) == pytest.approx(1 - (cut // 2) ** 2 / 1024)


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
    mixer = build_mixer({"preset": "cutmix", "prob": 1.0, "lam": "fixed(0.75)"})
    out = mixer(x, torch.zeros(512, dtype=torch.long), num_classes=2, generator=torch.Generator().manual_seed(0))
    b = out.info.boxes.float()
    cy, cx = (b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2
    assert 6.0 < float(cy.mean()) < 10.0 and 6.0 < float(cx.mean()) < 10.0  # centre uniform over the image
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert torch.equal(out.info.lam, (1 - area.double() / 256).float())
    assert torch.equal(out.info.boxes, out.info.source_boxes)

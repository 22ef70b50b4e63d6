"""GuidedMixup, Mixup and Saliency Grafting follow MIXING.md (independent NumPy/SciPy re-derivations)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from trainables.mixing import build_mixer, saliency_map

from .conftest import TinyNet, photo_batch


def guided_maps(sal: np.ndarray) -> np.ndarray:
    """GuidedMixup step 1: Gaussian 7x7 sigma 3 (reflect-101), then sum-to-1 per image."""
    blurred = np.stack([ndi.gaussian_filter(s.astype(np.float64), 3.0, mode="mirror", truncate=1.0) for s in sal])
    blurred = np.clip(blurred, 0, None) + 1e-12
    return blurred / blurred.sum(axis=(1, 2), keepdims=True)


@pytest.fixture(scope="module")
def photos():
    x = photo_batch((32, 32))
    return torch.cat([x, x.flip(2), x.flip(3)])  # 15 real images


def test_guided_sr_pairs_greedily_and_masks_by_pixel_ratio(photos):
    from tests.test_pairing import algorithm1

    mixer = build_mixer({"preset": "guided_sr", "prob": 1.0})
    out = mixer(photos, torch.arange(15), num_classes=15, generator=torch.Generator().manual_seed(0))
    s = guided_maps(saliency_map("spectral_residual_guided", photos).numpy())
    flat = s.reshape(15, -1)
    dist = np.sqrt(((flat[:, None] - flat[None]) ** 2).sum(-1))
    partner = algorithm1(dist)
    assert out.info.partner.tolist() == partner
    m = s / (s + s[partner])  # target weight M_i
    x, xp = photos.numpy(), photos.numpy()[partner]
    assert np.abs(out.images.numpy() - (m[:, None] * x + (1 - m[:, None]) * xp)).max() < 1e-5
    assert np.abs(out.info.lam.numpy() - m.reshape(15, -1).mean(1)).max() < 1e-6
    expect = np.eye(15) * m.reshape(15, -1).mean(1)[:, None]
    expect[np.arange(15), partner] += 1 - m.reshape(15, -1).mean(1)
    assert np.abs(out.targets.numpy() - expect).max() < 1e-5


def test_guided_ap_uses_model_gradient(photos):
    model = TinyNet(15).train()
    mixer = build_mixer({"preset": "guided_ap", "prob": 1.0})
    out = mixer(photos, torch.arange(15), num_classes=15, generator=torch.Generator().manual_seed(0), model=model)
    grad = saliency_map("gradient", photos, model=model, targets=torch.eye(15))
    assert torch.allclose(out.info.saliency, grad, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_pixel_ratio_with_identical_maps_is_half():
    x = torch.rand(4, 3, 16, 16)
    x[1] = x[0]
    mixer = build_mixer({"preset": "guided_sr", "prob": 1.0, "pairing": "flip"})
    out = mixer(x, torch.arange(4), num_classes=4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.images).all()
    # constant images have zero saliency everywhere: the mask is exactly one half, not NaN
    z = torch.full((2, 3, 16, 16), 0.5)
    z[1] = 0.2
    out = mixer(z, torch.arange(2), num_classes=2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.info.lam, torch.full((2,), 0.5), atol=1e-4)


def test_mixup_blends_globally(photos):
    mixer = build_mixer({"preset": "mixup"})
    out = mixer(photos, torch.arange(15), num_classes=15, generator=torch.Generator().manual_seed(3))
    lam, p = out.info.lam, out.info.partner
    assert out.info.applied and sorted(p.tolist()) == list(range(15))
    expect = lam[:, None, None, None] * photos + (1 - lam[:, None, None, None]) * photos[p]
    assert torch.allclose(out.images, expect, atol=1e-6)
    assert torch.allclose(out.targets, lam[:, None] * torch.eye(15) + (1 - lam[:, None]) * torch.eye(15)[p], atol=1e-6)
    lams = torch.cat([mixer(photos, torch.arange(15), num_classes=15,
                            generator=torch.Generator().manual_seed(s)).info.lam for s in range(200)])
    assert abs(float(lams.mean()) - 0.5) < 0.03 and float(lams.std()) > 0.25  # Beta(1,1) = U(0,1)


def test_mixup_per_batch_uses_one_lam(photos):
    out = build_mixer({"preset": "mixup", "scope": "per_batch"})(
        photos, torch.arange(15), num_classes=15, generator=torch.Generator().manual_seed(3))
    assert (out.info.lam == out.info.lam[0]).all()


def test_grafting_patches_and_calibrated_label(photos):
    model = TinyNet(15).train()
    cfg = {"preset": "grafting", "graft_grid": 4, "graft_p": 0.5, "graft_temperature": 0.5}
    out = build_mixer(cfg)(photos, torch.arange(15), num_classes=15, generator=torch.Generator().manual_seed(1),
                           model=model)
    m = out.info.source_weight.numpy()
    sal = out.info.saliency.numpy()
    p = out.info.partner.numpy()
    assert set(np.unique(m)) <= {0.0, 1.0}
    patches = m.reshape(15, 4, 8, 4, 8)
    assert (patches == patches[:, :, :1, :, :1]).all(), "mask is constant on each 8x8 patch"
    on = patches[:, :, 0, :, 0].reshape(15, 16)
    assert (on.sum(1) >= 1).all(), "at least one patch grafted"
    pooled = sal[p].reshape(15, 4, 8, 4, 8).mean((2, 4)).reshape(15, 16)
    pooled = pooled / pooled.max(1, keepdims=True)
    prob = np.exp(pooled / 0.5) / np.exp(pooled / 0.5).sum(1, keepdims=True)
    cand = prob > prob.mean(1, keepdims=True)
    forced = on.sum(1) == 1
    assert (on[~forced] <= cand[~forced]).all(), "only candidate patches are grafted"
    x, xs = photos.numpy(), photos.numpy()[p]
    assert np.abs(out.images.numpy() - ((1 - m[:, None]) * x + m[:, None] * xs)).max() < 1e-6
    a_s = (sal[p] * m).sum((1, 2)) / sal[p].sum((1, 2))
    a_t = (sal * (1 - m)).sum((1, 2)) / sal.sum((1, 2))
    assert np.abs(out.info.lam.numpy() - a_t / (a_t + a_s)).max() < 1e-5


def test_saliency_mass_on_off_place_boxes_uses_source_coordinates(photos):
    cfg = {"preset": "saliencymix", "selection": "salient_to_nonsalient", "label": "saliency_mass", "prob": 1.0,
           "lam": "fixed(0.7)"}
    out = build_mixer(cfg)(photos, torch.arange(15), num_classes=15, generator=torch.Generator().manual_seed(0))
    sal, p = out.info.saliency.numpy(), out.info.partner.numpy()
    for i in range(15):
        x1, y1, x2, y2 = out.info.source_boxes[i].tolist()
        tx1, ty1, tx2, ty2 = out.info.boxes[i].tolist()
        a_s = sal[p[i], y1:y2, x1:x2].sum() / sal[p[i]].sum()
        keep = np.ones((32, 32))
        keep[ty1:ty2, tx1:tx2] = 0
        a_t = (sal[i] * keep).sum() / sal[i].sum()
        assert abs(float(out.info.lam[i]) - a_t / (a_t + a_s)) < 1e-5


def test_guided_sr_official_float_mixes_with_the_released_input(photos):
    """`mix.saliency_input: official_float` = GuidedMixup's SR of the batch normalised with the dataset's stats."""
    stats = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the released code's Tiny-ImageNet normalisation
    cfg = {"preset": "guided_sr", "prob": 1.0, "saliency_input": "official_float"}
    out = build_mixer(cfg, normalization=stats)(photos, torch.arange(15), num_classes=15,
                                                generator=torch.Generator().manual_seed(0))
    expect = saliency_map("spectral_residual_guided", photos, saliency_input="official_float", normalization=stats)
    assert torch.equal(out.info.saliency, expect)
    plain = build_mixer({"preset": "guided_sr", "prob": 1.0})(photos, torch.arange(15), num_classes=15,
                                                               generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain.info.saliency, expect)
    with pytest.raises(ValueError, match=r"normalization must be \(mean, std\)"):
        build_mixer(cfg, normalization=((0.5, 0.5), (0.5, 0.5)))


def test_training_hands_the_dataset_statistics_to_the_mixer(tmp_path):
    from trainables.config import validate_config
    from trainables.loop import build_trial
    from trainables.mixing.ops import CIFAR_MEAN, CIFAR_STD

    cfg = validate_config({"dataset": "synthetic_salient", "data.train_size": 16, "data.test_size": 4,
                           "model": "small_cnn", "batch_size": 8, "epochs": 1, "device": "cpu", "workers": 0,
                           "mix.preset": "saliencymix_official"})
    setup, _ = build_trial(cfg)
    assert setup.mixer.normalization == (setup.data.mean, setup.data.std)
    assert setup.mixer.normalization != (CIFAR_MEAN, CIFAR_STD)


def _graft_reference(maps: np.ndarray, grid: int, t: float, p: float, u: np.ndarray, rescale: bool = True):
    """MIXING.md's grafting rule in its order: pool, rescale to max 1, softmax(S/T), P > mean, Bernoulli(p), at
    least one patch (the most salient), nearest upsampling. Returns (mask, candidates)."""
    b, h, w = maps.shape
    pooled = maps.reshape(b, grid, h // grid, grid, w // grid).mean((2, 4)).reshape(b, -1).astype(np.float64)
    if rescale:
        pooled = pooled / pooled.max(1, keepdims=True)
    e = np.exp(pooled / t - (pooled / t).max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    cand = prob > prob.mean(1, keepdims=True)
    chosen = cand & (u < p)
    none = ~chosen.any(1)
    chosen[none, prob[none].argmax(1)] = True
    mask = np.stack([np.kron(c.reshape(grid, grid), np.ones((h // grid, w // grid))) for c in chosen])
    return mask, cand


def test_graft_mask_is_free_of_the_map_scale():
    """The pooled map is rescaled to max 1 before the softmax: 100x (or 1/1000x) the map gives the same mask."""
    from trainables.mixing.masks import graft_weight

    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 32, 32, generator=g) ** 4
    uniform = torch.rand(6, 16, generator=g)
    uniform[0] = 0.99  # row 0 keeps no candidate: the most salient patch is grafted
    mask = graft_weight(maps, 4, 0.5, 0.5, uniform)
    for scale in (100.0, 1e-3):
        assert torch.equal(graft_weight(maps * scale, 4, 0.5, 0.5, uniform), mask)
    ref, _ = _graft_reference(maps.numpy(), 4, 0.5, 0.5, uniform.numpy())
    assert np.array_equal(mask.numpy(), ref) and mask[0].sum() == 64  # one 8x8 patch in row 0
    # the rescale is what makes this hold: without it, 100x the map leaves other candidates at T = 0.5
    _, raw = _graft_reference(maps.numpy(), 4, 0.5, 0.5, uniform.numpy(), rescale=False)
    _, raw100 = _graft_reference(maps.numpy() * 100, 4, 0.5, 0.5, uniform.numpy(), rescale=False)
    assert not np.array_equal(raw, raw100)

"""The same contract for every registered preset (torchvision v2 style), driven by the registry."""

from __future__ import annotations

import pickle

import pytest
import torch

from trainables.mixing import build_mixer, list_presets

from .conftest import TinyNet, photo_batch

PRESETS = list_presets()


def run(mixer, x, y, seed=0, k=10, model=None, **kw):
    if model is None:
        torch.manual_seed(1234)  # the same weights on every call: gradient saliency depends on them
        model = TinyNet(k)
    return mixer(x, y, num_classes=k, generator=torch.Generator().manual_seed(seed), model=model, **kw)


def cfg(preset: str) -> dict:
    return {"preset": preset} if preset == "none" else {"preset": preset, "prob": 1.0}


@pytest.fixture(scope="module")
def batch():
    x = photo_batch((32, 32))
    return torch.cat([x, x.flip(3)]), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])


@pytest.mark.parametrize("preset", PRESETS)
def test_pickle_round_trip(preset, batch):
    mixer = build_mixer(cfg(preset))
    clone = pickle.loads(pickle.dumps(mixer))
    assert clone.config == mixer.config
    a, b = run(mixer, *batch), run(clone, *batch)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)


@pytest.mark.parametrize("preset", PRESETS)
def test_input_not_mutated_and_outputs_valid(preset, batch):
    x, y = batch
    x0, y0 = x.clone(), y.clone()
    out = run(build_mixer(cfg(preset)), x, y)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert out.images.shape == x.shape and out.targets.shape == (10, 10)
    assert torch.allclose(out.targets.sum(1), torch.ones(10), atol=1e-6)
    assert (out.targets >= 0).all()
    assert out.info.lam.shape == (10,) and (out.info.lam >= 0).all() and (out.info.lam <= 1).all()
    assert out.info.partner.dtype == torch.long and out.info.boxes.shape == (10, 4)
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.info.applied == (preset != "none")
    images, targets = out  # timm/torchvision call shape
    assert images is out.images and targets is out.targets


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_kept(preset, dtype, batch):
    x, y = batch
    out = run(build_mixer(cfg(preset)), x.to(dtype), y)
    assert out.images.dtype == dtype and out.images.device == x.device
    assert out.targets.device == x.device and out.info.lam.device == x.device


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_same_output_different_seed_differs(preset, batch):
    mixer = build_mixer(cfg(preset))
    model = TinyNet(10)
    a, b = run(mixer, *batch, seed=7, model=model), run(mixer, *batch, seed=7, model=model)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.info.partner, b.info.partner)
    if preset not in ("none", "guided_sr", "guided_ap"):  # greedy pairing is deterministic given the maps
        c = run(mixer, *batch, seed=8, model=model)
        assert not torch.equal(a.targets, c.targets)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("b", [1, 2])
def test_tiny_batches(preset, b, batch):
    x, y = batch
    out = run(build_mixer(cfg(preset)), x[:b], y[:b])
    assert out.images.shape == (b, 3, 32, 32) and torch.allclose(out.targets.sum(1), torch.ones(b), atol=1e-6)
    if b == 2 and preset in ("guided_sr", "guided_ap"):
        assert out.info.partner.tolist() == [1, 0]


@pytest.mark.parametrize("preset", PRESETS)
def test_soft_labels_and_smoothing(preset, batch):
    x, y = batch
    soft = torch.softmax(torch.randn(10, 10), 1)
    out = build_mixer(cfg(preset), label_smoothing=0.1)(x, soft, generator=torch.Generator().manual_seed(0),
                                                        model=TinyNet(10))
    assert torch.allclose(out.targets.sum(1), torch.ones(10), atol=1e-6)
    if preset == "none":
        assert torch.allclose(out.targets, soft * 0.9 + 0.01)


def test_prob_decides_per_batch(batch):
    mixer = build_mixer({"preset": "cutmix", "prob": 0.5})
    applied = [run(mixer, *batch, seed=s).info.applied for s in range(200)]
    assert 70 < sum(applied) < 130
    assert not any(run(build_mixer({"preset": "cutmix", "prob": 0.0}), *batch, seed=s).info.applied for s in range(5))


def test_bad_inputs_raise_with_shapes_and_names(batch):
    x, y = batch
    mixer = build_mixer({"preset": "saliencymix", "prob": 1.0})
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"shape \(B,3,H,W\), got \(3, 32, 32\)"):
        mixer(x[0], y, num_classes=10, generator=g)
    with pytest.raises(ValueError, match=r"shape \(B,3,H,W\), got \(10, 1, 32, 32\)"):
        mixer(x[:, :1], y, num_classes=10, generator=g)
    with pytest.raises(ValueError, match=r"labels \(9,\) do not match the batch of 10"):
        mixer(x, y[:9], num_classes=10, generator=g)
    with pytest.raises(ValueError, match=r"soft labels \(10, 7\) do not match \(B=10, K=10\)"):
        mixer(x, torch.full((10, 7), 1 / 7), num_classes=10, generator=g)
    with pytest.raises(ValueError, match=r"must lie in \[0,1\].*got min 0 max 2[0-9][0-9]"):
        mixer(x * 255, y, num_classes=10, generator=g)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\), got min 0 max 9"):
        mixer(x, y, num_classes=5, generator=g)
    with pytest.raises(ValueError, match="integer labels need num_classes"):
        mixer(x, y, generator=g)
    with pytest.raises(ValueError, match=r"floating tensor in \[0,1\], got dtype torch.uint8"):
        mixer((x * 255).to(torch.uint8), y, num_classes=10, generator=g)
    with pytest.raises(ValueError, match="needs the model"):
        build_mixer({"preset": "guided_ap", "prob": 1.0})(x, y, num_classes=10, generator=g)
    with pytest.raises(ValueError, match=r"unknown value 'guided'.*allowed: none, mixup, cutmix"):
        build_mixer({"preset": "guided"})


@pytest.mark.gpu
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "saliencymix_official"])
def test_cuda_matches_cpu_and_never_syncs(preset, batch):
    """Same generator -> same parameters -> same output on CPU and GPU, with no host sync on the GPU."""
    x, y = batch
    model = TinyNet(10)
    mixer = build_mixer(cfg(preset))
    cpu = run(mixer, x, y, model=model)
    xg, yg, mg = x.cuda(), y.cuda(), model.cuda()
    run(mixer, xg, yg, model=mg, check=False)  # warm-up (lazy CUDA init syncs)
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = run(mixer, xg, yg, model=mg, check=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.allclose(gpu.images.cpu(), cpu.images, atol=1e-5)
    assert torch.allclose(gpu.targets.cpu(), cpu.targets, atol=1e-5)


def test_value_checks_run_on_the_first_call_only_by_default(batch):
    x, y = batch
    mixer = build_mixer({"preset": "cutmix", "prob": 1.0})
    with pytest.raises(ValueError, match=r"must lie in \[0,1\]"):
        mixer(x * 2, y, num_classes=10)
    mixer(x, y, num_classes=10)  # first successful call: checked
    mixer(x * 2, y, num_classes=10)  # later calls: no host sync for checks
    with pytest.raises(ValueError, match=r"must lie in \[0,1\]"):
        mixer(x * 2, y, num_classes=10, check=True)


def test_saliency_is_computed_only_when_something_reads_it(batch, monkeypatch):
    import trainables.mixing.mixer as mixer_module

    calls = []
    real = mixer_module.saliency_map
    monkeypatch.setattr(mixer_module, "saliency_map", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    x, y = batch
    build_mixer({"preset": "mixup", "saliency": "fine_grained"})(x, y, num_classes=10)
    build_mixer({"preset": "saliencymix", "selection": "random", "prob": 1.0})(x, y, num_classes=10)
    assert calls == []
    build_mixer({"preset": "saliencymix", "prob": 1.0})(x, y, num_classes=10)
    assert calls == ["fine_grained"]


def test_per_batch_refuses_per_sample_consumers():
    with pytest.raises(ValueError, match=r"per_batch uses the saliency of ONE image"):
        build_mixer({"preset": "saliencymix_official", "pairing": "greedy"})
    with pytest.raises(ValueError, match=r"per_batch uses the saliency of ONE image"):
        build_mixer({"preset": "saliencymix_official", "label": "saliency_mass"})

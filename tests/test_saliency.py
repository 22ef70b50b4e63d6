"""Saliency detectors against their references: OpenCV itself, and float64 NumPy for FT."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from trainables.mixing import list_saliency, saliency_map
from trainables.mixing.ops import CIFAR_MEAN, CIFAR_STD

from .conftest import PHOTOS, TinyNet, photo_batch

SIZES = [(32, 32), (48, 64), (97, 131), (224, 224)]


def opencv_maps(kind: str, batch: torch.Tensor) -> np.ndarray:
    create = {
        "fine_grained": cv2.saliency.StaticSaliencyFineGrained_create,
        "spectral_residual": cv2.saliency.StaticSaliencySpectralResidual_create,
    }[kind]
    out = []
    for img in batch:
        bgr = np.ascontiguousarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[..., ::-1])
        ok, m = create().computeSaliency(bgr)
        assert ok
        out.append(np.asarray(m, dtype=np.float32) / (255.0 if m.dtype == np.uint8 else 1.0))
    return np.stack(out)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fine_grained_is_bit_exact_with_opencv(size):
    batch = photo_batch(size)
    ours = saliency_map("fine_grained", batch)  # whole batch in one call
    assert ours.shape == (len(PHOTOS), *size) and ours.dtype == torch.float32
    ref_u8 = np.round(opencv_maps("fine_grained", batch) * 255).astype(np.int64)
    ours_u8 = (ours * 255).round().long().numpy()
    assert np.array_equal(ours_u8, ref_u8), f"{(ours_u8 != ref_u8).sum()} pixels differ"
    assert np.allclose(ours.numpy() * 255, ours_u8, atol=1e-3), "maps must be uint8 levels / 255"


def test_fine_grained_exact_on_random_textures():
    rng = np.random.default_rng(0)
    arr = (rng.random((16, 40, 24, 3)) ** rng.uniform(0.3, 4, (16, 1, 1, 1)) * 255).astype(np.uint8)
    batch = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    ref = np.round(opencv_maps("fine_grained", batch) * 255)
    assert np.array_equal((saliency_map("fine_grained", batch) * 255).round().numpy(), ref)


@pytest.mark.parametrize("name", list_saliency())
def test_constant_image_gives_finite_maps(name):
    x = torch.full((2, 3, 20, 24), 0.3)
    m = saliency_map(name, x, model=TinyNet(4))
    assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
    if name in ("fine_grained", "opencv_fine_grained", "frequency_tuned"):
        assert (m == 0).all()


@pytest.mark.parametrize("size", SIZES + [(300, 451)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_spectral_residual_matches_opencv(size):
    batch = photo_batch(size)
    ours = saliency_map("spectral_residual", batch).numpy()
    err = np.abs(ours - opencv_maps("spectral_residual", batch)).max()
    assert err < 1e-3


def frequency_tuned_reference(img: np.ndarray) -> np.ndarray:
    """Achanta 2009 in float64 NumPy, straight from the spec (independent of our torch code)."""
    x = img.astype(np.float64)
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T / np.array([0.950456, 1.0, 1.088754])
    d = 6 / 29
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    blurred = np.stack(
        [ndi.correlate1d(ndi.correlate1d(lab[..., c], k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
         for c in range(3)], -1)
    sal = np.sqrt(((blurred - lab.reshape(-1, 3).mean(0)) ** 2).sum(-1))
    return sal / sal.max()


@pytest.mark.parametrize("size", [(32, 32), (61, 90)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_frequency_tuned_matches_float64_reference(size):
    batch = photo_batch(size)
    ours = saliency_map("frequency_tuned", batch).numpy()
    for i, img in enumerate(batch.permute(0, 2, 3, 1).numpy()):
        assert np.abs(ours[i] - frequency_tuned_reference(img)).max() < 1e-4


def test_official_float_reproduces_opencv_on_normalised_float():
    batch = photo_batch((32, 32))
    ours = saliency_map("fine_grained", batch, saliency_input="official_float").numpy()
    mean, std = np.array(CIFAR_MEAN, np.float32), np.array(CIFAR_STD, np.float32)
    det = cv2.saliency.StaticSaliencyFineGrained_create()
    for i, img in enumerate(batch.permute(0, 2, 3, 1).numpy()):
        normalised = np.ascontiguousarray((img - mean) / std, dtype=np.float32)  # what the released code passed
        ok, ref = det.computeSaliency(normalised)
        ref = np.asarray(ref, np.float32) / (255.0 if ref.dtype == np.uint8 else 1.0)
        assert np.array_equal(ours[i], ref)
    # and it is not saliency: its peak disagrees with the uint8 detector's on most photos
    correct = saliency_map("fine_grained", batch).flatten(1).argmax(1)
    assert (torch.from_numpy(ours).flatten(1).argmax(1) != correct).sum() >= 3


def test_opencv_backends_equal_batched_ones(photos32):
    fg = saliency_map("fine_grained", photos32)
    assert torch.equal((fg * 255).round(), (saliency_map("opencv_fine_grained", photos32) * 255).round())
    sr = saliency_map("spectral_residual", photos32)
    assert (sr - saliency_map("opencv_spectral_residual", photos32)).abs().max() < 1e-3


def guided_sr_reference(x: np.ndarray) -> np.ndarray:
    """Independent NumPy/SciPy re-derivation of GuidedMixup's spectral_residual.py at 32x32, (B,3,H,W) in."""
    gray = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    spec = np.fft.fft2(gray)
    mag = np.sqrt(spec.real**2 + spec.imag**2 + 1e-10)
    box = np.stack([ndi.uniform_filter(np.log(m), 3, mode="nearest") for m in mag])
    sal = np.abs(np.fft.ifft2(spec * np.exp(np.log(mag) - box) / mag))
    sal = np.stack([ndi.gaussian_filter(s, 3.0, mode="mirror", truncate=1.0) for s in sal])
    return sal / sal.max(axis=(1, 2), keepdims=True)


def test_spectral_residual_guided_follows_the_released_recipe(photos32):
    sal = guided_sr_reference(photos32.numpy())
    assert np.abs(saliency_map("spectral_residual_guided", photos32).numpy() - sal).max() < 1e-4


#: the released GuidedMixup code's CIFAR-100 normalisation (load_data.py)
GUIDED_CIFAR100 = (tuple(v / 255 for v in (129.3, 124.1, 112.4)), tuple(v / 255 for v in (68.2, 65.4, 70.4)))


def test_spectral_residual_guided_official_float_reads_the_normalised_batch(photos32):
    """The released code computed the SR of the loader's NORMALISED tensor (`sr.transform_spectral_residual(input)`)."""
    (mean, std), x = GUIDED_CIFAR100, photos32.numpy()
    normalised = (x - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    ours = saliency_map("spectral_residual_guided", photos32, saliency_input="official_float",
                        normalization=GUIDED_CIFAR100).numpy()
    assert np.abs(ours - guided_sr_reference(normalised)).max() < 1e-4
    default = saliency_map("spectral_residual_guided", photos32).numpy()
    assert np.abs(ours - default).max() > 0.05  # a different map, not a rescaled one
    # without `normalization` it normalises with the released SaliencyMix/CutMix CIFAR values
    cifar = (x - np.array(CIFAR_MEAN)[None, :, None, None]) / np.array(CIFAR_STD)[None, :, None, None]
    implicit = saliency_map("spectral_residual_guided", photos32, saliency_input="official_float").numpy()
    assert np.abs(implicit - guided_sr_reference(cifar)).max() < 1e-4


@pytest.mark.parametrize("name", ["fine_grained", "opencv_fine_grained"])
def test_official_float_normalises_with_the_given_statistics(name):
    """`normalization` reaches OpenCV: the dataset's mean/std, not CIFAR's, when given."""
    batch = photo_batch((32, 32))
    stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ours = saliency_map(name, batch, saliency_input="official_float", normalization=stats).numpy()
    mean, std = np.array(stats[0], np.float32), np.array(stats[1], np.float32)
    det = cv2.saliency.StaticSaliencyFineGrained_create()
    for i, img in enumerate(batch.permute(0, 2, 3, 1).numpy()):
        ok, ref = det.computeSaliency(np.ascontiguousarray((img - mean) / std, dtype=np.float32))
        assert ok and np.array_equal(ours[i], np.asarray(ref, np.float32))
    assert not np.array_equal(ours, saliency_map(name, batch, saliency_input="official_float").numpy())


def test_detectors_declare_their_inputs():
    from trainables.mixing.saliency import SALIENCY, SALIENCY_INPUTS

    takes = {name: SALIENCY.get(name).inputs for name in list_saliency()}
    assert all(inputs[0] == "uint8" and set(inputs) <= set(SALIENCY_INPUTS) for inputs in takes.values())
    assert {n for n, inputs in takes.items() if "official_float" in inputs} == {
        "fine_grained", "spectral_residual", "spectral_residual_guided", "opencv_fine_grained",
        "opencv_spectral_residual"}


def test_gradient_saliency_leaves_model_untouched(photos32):
    torch.manual_seed(0)
    model = TinyNet(5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    targets = torch.nn.functional.one_hot(torch.arange(5), 5).float()
    m = saliency_map("gradient", photos32, model=model, targets=targets)
    assert m.shape == (5, 32, 32) and torch.isfinite(m).all() and m.amax((1, 2)).allclose(torch.ones(5))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"  # BN running stats restored
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    x = photos32.clone().requires_grad_(True)  # the definition: sqrt(mean_c grad^2) of the soft CE
    loss = -(targets * torch.log_softmax(model(x), 1)).sum()
    (g,) = torch.autograd.grad(loss, x)
    ref = g.pow(2).mean(1).sqrt()
    for k, v in before.items():
        model.state_dict()[k].copy_(v)
    assert torch.allclose(m, ref / ref.amax((1, 2), keepdim=True), atol=1e-6)


def test_errors_name_the_problem(photos32):
    with pytest.raises(ValueError, match=r"unknown saliency detector 'fine_grain'.*did you mean 'fine_grained'"):
        saliency_map("fine_grain", photos32)
    with pytest.raises(ValueError, match=r"\(B,3,H,W\), got \(3, 32, 32\)"):
        saliency_map("fine_grained", photos32[0])
    with pytest.raises(ValueError, match="needs the model"):
        saliency_map("gradient", photos32)
    with pytest.raises(ValueError, match=r"'official_float' applies only to fine_grained, .*spectral_residual_guided, "
                                         r"not 'frequency_tuned' \(which accepts: uint8\)"):
        saliency_map("frequency_tuned", photos32, saliency_input="official_float")
    with pytest.raises(ValueError, match=r"normalization must be \(mean, std\) with 3 finite values each and std > 0"):
        saliency_map("spectral_residual_guided", photos32, saliency_input="official_float",
                     normalization=((0.5, 0.5, 0.5), (0.2, 0.0, 0.2)))
    with pytest.raises(ValueError, match=r"normalization must be \(mean, std\)"):
        saliency_map("fine_grained", photos32, normalization=(0.5, 0.2))
    with pytest.raises(ValueError, match="unknown saliency_input 'float'"):
        saliency_map("fine_grained", photos32, saliency_input="float")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fine_grained", "spectral_residual", "spectral_residual_guided", "frequency_tuned"])
def test_cuda_equals_cpu(name, photos32):
    cpu = saliency_map(name, photos32)
    gpu = saliency_map(name, photos32.cuda())
    assert gpu.device.type == "cuda"
    tol = 0 if name == "fine_grained" else 1e-4
    assert (gpu.cpu() - cpu).abs().max() <= tol


def test_gradient_saliency_is_taken_on_the_normalised_input(photos32):
    """dL/dx_n = std_c * dL/dx for a model that normalises with per-channel std (MIXING.md)."""
    from trainables.models import build_model

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=5, image_size=(32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.5, 1.0))
    targets = torch.eye(5)
    x = photos32.clone().requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = -(targets * torch.log_softmax(model(x), 1)).sum()
    (g,) = torch.autograd.grad(loss, x)
    model.load_state_dict(before)
    ref = (g * torch.tensor([0.2, 0.5, 1.0]).view(1, 3, 1, 1)).pow(2).mean(1).sqrt()
    m = saliency_map("gradient", photos32, model=model, targets=targets)
    assert torch.allclose(m, ref / ref.amax((1, 2), keepdim=True), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_opencv_fine_grained_returns_float_maps(dtype):
    """What opencv_ref's docstring states: a float32 map in [0,1] (opencv_contrib >= 3.4.3) whatever the input
    dtype, whose x255 + truncation (the released SaliencyMix code's `astype("uint8")`) gives its levels back."""
    rng = np.random.default_rng(0)
    img = (rng.random((24, 20, 3)) * 255).astype(np.uint8)
    arr = img if dtype == np.uint8 else img.astype(np.float32) / 255
    ok, m = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(np.ascontiguousarray(arr))
    assert ok and m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
    levels = np.round(m * 255)
    assert np.allclose(m * 255, levels, atol=1e-3)  # 8-bit levels / 255
    assert np.array_equal((m * 255).astype(np.uint8), levels.astype(np.uint8))

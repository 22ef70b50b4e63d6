"""Contract tests for `trainables.models`, parametrised over the registry.

CPU-only and fast: every model is built at most once per session through `_built` (resnet50 and
wrn28_10 are the expensive ones). Shapes and gradients are checked on B=2 32x32; checks whose
property does not depend on the size (normalisation, pickling, state_dict) use B=1 16x16.
"""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
import torch.nn.functional as F

from trainables.models import (
    MODELS,
    Normalize,
    NormalizedModel,
    build_model,
    list_models,
    model_options,
    torchvision_names,
)

STATS = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
REGISTERED = MODELS.names()
HEAVY = ("resnet50", "wrn28_10")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny batches gain nothing from intra-op threads, and OpenMP spin-waits make 2-thread convs ~10x
    # slower when another process (a parallel test run, a Ray worker) shares the 2 cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    _built.cache_clear()  # free resnet50 / wrn28_10 for the rest of the session


@functools.cache
def _built(name: str, num_classes: int = 10) -> NormalizedModel:
    """One shared instance per model; tests reset grads / mode themselves."""
    torch.manual_seed(0)
    return build_model(name, num_classes=num_classes, image_size=(32, 32), **STATS)


def _stats(n_channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(STATS["mean"][:n_channels]).view(1, -1, 1, 1)
    std = torch.tensor(STATS["std"][:n_channels]).view(1, -1, 1, 1)
    return mean, std


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _images(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --- registry ----------------------------------------------------------------------------------------


def test_registry_holds_the_paper_models() -> None:
    assert {"resnet18", "resnet50", "preact_resnet18", "wrn28_10", "small_cnn"} <= set(REGISTERED)


def test_list_models() -> None:
    names = list_models()
    assert names[:-1] == REGISTERED
    assert names[-1] == "tv:<any torchvision classifier>"
    assert list_models("resnet*") == ["resnet18", "resnet50"]
    assert list_models("tv:*") == ["tv:<any torchvision classifier>"]
    assert "resnet18" in torchvision_names()


def test_model_options() -> None:
    assert model_options("resnet18") == {}
    assert model_options("wrn28_10") == {"dropout": 0.3, "depth": 28, "widen": 10}
    assert set(model_options("small_cnn")) == {"width", "dropout"}
    assert model_options("tv:resnet18") is None
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        model_options("nope")


# --- contract, every registered model ----------------------------------------------------------------


@pytest.mark.parametrize("name", REGISTERED)
def test_forward_backward(name: str) -> None:
    model = _built(name)
    model.train()
    model.zero_grad(set_to_none=True)
    x = _images().requires_grad_(True)
    x_before = x.detach().clone()
    logits = model(x)
    assert logits.shape == (2, 10) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([1, 7])).backward()
    # Saliency and FGSM need the gradient w.r.t. the [0, 1] pixels.
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    torch.testing.assert_close(x.detach(), x_before, rtol=0, atol=0)  # input not mutated
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", REGISTERED)
def test_normalization_lives_inside_the_model(name: str) -> None:
    model = _built(name).eval()
    assert isinstance(model.normalize, Normalize)
    x = _images(b=1, h=16, w=16, seed=1)  # the property does not depend on the size; keep it cheap
    mean, std = _stats()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / std))
        torch.testing.assert_close(model.normalize(x), (x - mean) / std)


@pytest.mark.parametrize("name", [n for n in REGISTERED if n not in HEAVY])
def test_larger_and_odd_inputs(name: str) -> None:
    model = build_model(name, num_classes=5, image_size=(64, 64), **STATS).eval()
    with torch.no_grad():
        assert model(_images(h=64, w=64)).shape == (2, 5)
        assert model(_images(h=24, w=40)).shape == (2, 5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", 11.17e6), ("resnet50", 23.5e6), ("preact_resnet18", 11.17e6), ("wrn28_10", 36.5e6)],
)
def test_parameter_counts(name: str, expected: float) -> None:
    n = _n_params(_built(name))
    assert abs(n - expected) / expected < 0.01, f"{name}: {n:,} parameters, expected about {expected:,.0f}"


@pytest.mark.parametrize("name", REGISTERED)
def test_pickle_round_trip(name: str) -> None:
    model = _built(name).eval()
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone) is NormalizedModel and clone.name == name
    x = _images(b=1, h=16, w=16, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


@pytest.mark.parametrize("name", REGISTERED)
def test_state_dict_loads_into_fresh_model(name: str) -> None:
    # The heavy nets are rebuilt small (same classes); resnet50 shares CifarResNet with resnet18.
    opts = {"depth": 10, "widen": 1} if name == "wrn28_10" else {}
    if name == "resnet50":
        name = "resnet18"
    torch.manual_seed(1)
    trained = build_model(name, num_classes=10, **STATS, **opts)
    trained.train()
    with torch.no_grad():  # move the BN running stats away from their init
        trained(_images(h=16, w=16, seed=3))
    trained.eval()
    torch.manual_seed(2)
    fresh = build_model(name, num_classes=10, **STATS, **opts).eval()
    assert {"normalize.mean", "normalize.std"} <= set(fresh.state_dict())
    fresh.load_state_dict(trained.state_dict())
    x = _images(b=1, h=16, w=16, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x))


def test_same_seed_same_init() -> None:
    torch.manual_seed(0)
    a = build_model("small_cnn", num_classes=10).state_dict()
    torch.manual_seed(0)
    b = build_model("small_cnn", num_classes=10).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


# --- options -----------------------------------------------------------------------------------------


def test_small_cnn_options_and_sizes() -> None:
    narrow = build_model("small_cnn", num_classes=10, width=8)
    assert _n_params(narrow) < _n_params(_built("small_cnn"))
    with torch.no_grad():
        assert narrow.eval()(_images(h=16, w=16)).shape == (2, 10)
    dropped = build_model("small_cnn", num_classes=10, dropout=0.5)
    assert dropped.net.drop.p == 0.5
    with pytest.raises(ValueError, match=r"model 'small_cnn': option 'width' must be an integer, got '32'"):
        build_model("small_cnn", num_classes=10, width="32")
    with pytest.raises(ValueError, match=r"small_cnn.*at least 8x8.*\(4, 4\)"):
        build_model("small_cnn", num_classes=10, image_size=(4, 4))


def test_wrn_options() -> None:
    small = build_model("wrn28_10", num_classes=10, depth=10, widen=1, dropout=0.0)
    assert len(small.net.block1) == 1
    assert all(m.p == 0.0 for m in small.net.modules() if isinstance(m, torch.nn.Dropout))
    assert all(m.p == 0.3 for m in _built("wrn28_10").net.modules() if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ValueError, match=r"wrn28_10.*depth.*\(depth - 4\) % 6 == 0.*27"):
        build_model("wrn28_10", num_classes=10, depth=27)
    with pytest.raises(ValueError, match=r"wrn28_10.*dropout.*\[0, 1\)"):
        build_model("wrn28_10", num_classes=10, dropout=1.5)


# --- errors ------------------------------------------------------------------------------------------


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown model 'resnet181'.*did you mean 'resnet18'.*known:.*wrn28_10"
    ):
        build_model("resnet181", num_classes=10)


def test_unknown_option_names_model_key_and_allowed() -> None:
    with pytest.raises(
        ValueError, match=r"'small_cnn' has no option 'widht'.*did you mean 'width'.*width.*dropout"
    ):
        build_model("small_cnn", num_classes=10, widht=16)
    with pytest.raises(ValueError, match=r"'resnet18' has no option 'dropout'.*allowed options.*none"):
        build_model("resnet18", num_classes=10, dropout=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2, 0.2)}, r"same length.*2 mean values.*3 std values"),
        ({"std": (0.2, 0.0, 0.2)}, r"std value must be > 0"),
        ({"mean": ("a", "b", "c")}, r"mean must be a sequence of numbers"),
        ({"num_classes": 0}, r"num_classes must be a positive integer"),
        ({"image_size": (32,)}, r"image_size must be \(height, width\)"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    kwargs = {"num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model("small_cnn", **kwargs)


def test_wrong_channel_count_names_the_shape() -> None:
    model = _built("small_cnn")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*got shape \(2, 1, 32, 32\)"):
        model(torch.rand(2, 1, 32, 32))


def test_one_channel_models() -> None:
    model = build_model("resnet18", num_classes=10, mean=(0.13,), std=(0.31,)).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# --- torchvision -------------------------------------------------------------------------------------


def test_torchvision_model() -> None:
    torch.manual_seed(0)
    model = build_model("tv:resnet18", num_classes=7, image_size=(32, 32), **STATS)
    assert model.name == "tv:resnet18" and type(model.net).__name__ == "ResNet"
    model.train()
    x = _images().requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    model.eval()
    mean, std = _stats()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / std))
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))


def test_torchvision_aux_heads_off() -> None:
    model = build_model("tv:googlenet", num_classes=3).train()
    assert isinstance(model(_images()), torch.Tensor)


def test_torchvision_unknown_name_lists_close_names() -> None:
    with pytest.raises(ValueError, match=r"unknown torchvision classifier 'resnet19'.*resnet18"):
        build_model("tv:resnet19", num_classes=10)


def test_torchvision_bad_options() -> None:
    with pytest.raises(ValueError, match=r"'tv:resnet18' has no option 'foo'.*zero_init_residual"):
        build_model("tv:resnet18", num_classes=10, foo=1)
    with pytest.raises(ValueError, match=r"'weights' cannot be set.*weights=None"):
        build_model("tv:resnet18", num_classes=10, weights="DEFAULT")
    with pytest.raises(ValueError, match=r"3-channel input.*1 values"):
        build_model("tv:resnet18", num_classes=10, mean=(0.5,), std=(0.5,))

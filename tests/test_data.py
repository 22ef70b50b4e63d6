"""Tests for `trainables.data`: registry, synthetic_salient, CIFAR, folder datasets and loaders.

CPU-only and fast: small splits, CIFAR fixtures written in CIFAR's own python-2 pickle format,
folder fixtures of a few PNG/JPEG files in tmp_path.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from trainables.data import (
    DATASETS,
    DatasetBundle,
    DatasetNotFoundError,
    build_dataset,
    list_datasets,
    make_loader,
)
from trainables.data.base import batch_bounds, dataset_options
from trainables.data.folder import random_resized_crop_params
from trainables.data.synthetic import MAX_CLASSES, SHAPE_NAMES, generate
from trainables.data.tensor import CropFlipParams, TensorSplit, apply_crop_flip, sample_crop_flip

SMALL = {"train_size": 40, "test_size": 20}


@pytest.fixture(scope="module")
def small() -> DatasetBundle:
    return build_dataset("synthetic_salient", seed=3, **SMALL)


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


# -- registry --------------------------------------------------------------------------------------


def test_registry_lists_every_dataset():
    names = list_datasets()
    assert {"synthetic_salient", "cifar10", "cifar100", "tiny_imagenet", "imagefolder"} <= set(names)
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    assert names == DATASETS.names()


def test_unknown_dataset_lists_known_names():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'cifar1'.*did you mean 'cifar10'.*known: .*imagefolder"
    ):
        build_dataset("cifar1")


@pytest.mark.parametrize("name", DATASETS.names())
def test_unknown_option_names_dataset_key_and_allowed_keys(name):
    allowed = dataset_options(name)
    with pytest.raises(ValueError, match=rf"dataset '{name}'.*'bogus_key'.*allowed: {', '.join(allowed)}"):
        build_dataset(name, bogus_key=1)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"clutter": -0.1}, "data.clutter"),
        ({"object_scale": 0.0}, "data.object_scale"),
        ({"object_scale": 1.5}, "data.object_scale"),
        ({"num_classes": 1}, "data.num_classes"),
        ({"num_classes": MAX_CLASSES + 1}, "data.num_classes"),
        ({"train_size": 0}, "data.train_size"),
        ({"seed": 1.5}, "data.seed"),
        ({"seed": True}, "data.seed"),
    ],
)
def test_synthetic_bad_values_name_the_field(options, field):
    with pytest.raises(ValueError, match=rf"synthetic_salient: {field}"):
        build_dataset("synthetic_salient", **options)


# -- synthetic_salient -------------------------------------------------------------------------------


def test_synthetic_bundle_shapes_dtypes_ranges(small):
    assert small.name == "synthetic_salient" and small.num_classes == 10 and small.image_size == (32, 32)
    assert len(small.train) == 40 and len(small.test) == 20
    for split in (small.train, small.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64 and split.labels.min() >= 0 and split.labels.max() < 10
    assert len(small.mean) == len(small.std) == 3
    assert all(0 < m < 1 for m in small.mean) and all(0 < s < 0.5 for s in small.std)
    assert small.class_names == SHAPE_NAMES[:10]
    assert small.options["seed"] == 3 and small.options["clutter"] == 0.5


def test_synthetic_image_i_does_not_depend_on_split_size(small):
    bigger = build_dataset("synthetic_salient", seed=3, train_size=70, test_size=33)
    assert torch.equal(bigger.train.images[:40], small.train.images)
    assert torch.equal(bigger.train.labels[:40], small.train.labels)
    assert torch.equal(bigger.test.images[:20], small.test.images)
    # rendering is per image: any subset, in any order, gives the same pixels
    x, y, _ = generate([37, 5, 12], seed=3, split="train")
    picks = [37, 5, 12]
    assert torch.equal(x, bigger.train.images[picks]) and torch.equal(y, bigger.train.labels[picks])


def test_synthetic_seed_and_split_change_the_images(small):
    other = build_dataset("synthetic_salient", seed=4, **SMALL)
    differs = (other.train.images != small.train.images).flatten(1).any(1)
    assert differs.all()
    assert (small.test.images != small.train.images[:20]).flatten(1).any(1).all()


def test_synthetic_labels_balanced():
    _, y, _ = generate(range(200), num_classes=10)
    assert torch.bincount(y, minlength=10).tolist() == [20] * 10  # exact on K-aligned prefixes
    _, y, _ = generate(range(257), num_classes=7, seed=9)
    counts = torch.bincount(y, minlength=7)
    assert counts.min() >= 257 // 7 and counts.max() <= 257 // 7 + 1


def test_synthetic_many_classes_use_striped_shapes():
    b = build_dataset("synthetic_salient", num_classes=20, train_size=40, test_size=4)
    assert b.num_classes == 20 and b.class_names[16] == "striped_disc"
    assert set(b.train.labels.tolist()) == set(range(20))


def _dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(mask[:, None].float(), 2 * r + 1, 1, r)[:, 0] > 0


def test_clutter_zero_is_a_flat_background_and_clutter_adds_variation():
    stds = {}
    for clutter in (0.0, 1.0):
        x, _, mask = generate(range(32), clutter=clutter)
        background = ~_dilate(mask > 0, 1)
        x = x.float() / 255
        stds[clutter] = torch.stack([x[i][:, background[i]].std(1).mean() for i in range(len(x))])
    assert stds[0.0].max() == 0  # one colour per image
    assert stds[1.0].min() > 0.03 and stds[1.0].mean() > 0.08


def test_object_is_salient_against_its_surroundings():
    x, y, mask = generate(range(200), clutter=1.0)
    x = x.float() / 255
    inside = mask > 0.99
    ring = _dilate(mask > 0, 3) & ~_dilate(mask > 0, 1)
    assert inside.sum((1, 2)).min() >= 15  # every image has a visible object
    obj = (x * inside[:, None]).sum((2, 3)) / inside.sum((1, 2))[:, None]
    around = (x * ring[:, None]).sum((2, 3)) / ring.sum((1, 2))[:, None]
    distance = (obj - around).norm(dim=1)  # RGB distance of the mean colours
    assert distance.min() > 0.25 and distance.median() > 0.45
    # and the object is small enough that a random patch often misses it
    assert 0.03 < mask.mean() < 0.2


def test_bundle_pickles(small):
    back = pickle.loads(pickle.dumps(small))
    assert torch.equal(back.train.images, small.train.images) and back.num_classes == small.num_classes


# -- loaders ---------------------------------------------------------------------------------------


def test_batch_bounds_drop_only_a_singleton_last_batch():
    assert batch_bounds(10, 3, train=True) == [(0, 3), (3, 6), (6, 9)]
    assert batch_bounds(10, 3, train=False) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert batch_bounds(11, 3, train=True)[-1] == (9, 11)
    assert batch_bounds(5, 8, train=True) == [(0, 5)]


def test_train_loader_is_a_function_of_the_generator(small):
    g = torch.Generator()
    loader = make_loader(small.train, 16, train=True, generator=g)
    assert len(loader) == 3
    g.manual_seed(7)
    first = _epoch(loader)
    g.manual_seed(7)
    again = _epoch(loader)
    g.manual_seed(8)
    other = _epoch(loader)
    assert _same(first, again)
    assert not torch.equal(first[0][1], other[0][1]) or not torch.equal(first[0][0], other[0][0])
    for x, y in first:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 32, 32)
        assert x.min() >= 0 and x.max() <= 1
    labels = torch.cat([y for _, y in first])
    assert sorted(labels.tolist()) == sorted(small.train.labels.tolist())  # a permutation, nothing dropped


def test_epoch_randomness_is_drawn_up_front_and_never_from_global_rng(small):
    g = torch.Generator().manual_seed(1)
    clean = _epoch(make_loader(small.train, 16, train=True, generator=g))
    g.manual_seed(1)
    global_state = torch.get_rng_state()
    interleaved = []
    for x, y in make_loader(small.train, 16, train=True, generator=g):
        interleaved.append((x.clone(), y.clone()))
        torch.rand(5, generator=g)  # the mixing step draws from the same generator mid-epoch
    assert _same(clean, interleaved)
    assert torch.equal(torch.get_rng_state(), global_state)


def test_train_loader_augments(small):
    g = torch.Generator().manual_seed(0)
    x, y = next(iter(make_loader(small.train, 40, train=True, generator=g)))
    originals = small.train.images.float() / 255
    # a sample comes out unchanged only for the centre crop without flip (1 in 162)
    identical = sum(any(torch.equal(xi, o) for o in originals) for xi in x)
    assert identical < len(x) // 2


def test_eval_loader_is_ordered_unaugmented_and_complete(small):
    loader = make_loader(small.test, 6, train=False)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 4 and batches[-1][0].shape[0] == 2  # 20 = 6+6+6+2, no drop
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(x, small.test.images.float() / 255) and torch.equal(y, small.test.labels)
    assert _same(batches, _epoch(loader))


def test_loader_errors_are_actionable(small):
    with pytest.raises(ValueError, match="torch.Generator"):
        make_loader(small.train, 8, train=True)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(small.train, 0, train=False)
    with pytest.raises(ValueError, match="batch_size=1; training batches need at least 2"):
        make_loader(small.train, 1, train=True, generator=torch.Generator())
    one = TensorSplit(small.train.images[:1], small.train.labels[:1])
    with pytest.raises(ValueError, match="at least 2"):
        make_loader(one, 8, train=True, generator=torch.Generator())


def _reference_crop_flip(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    out = F.pad(img, (pad,) * 4)[:, dy : dy + h, dx : dx + w]
    return out.flip(-1) if flip else out


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_matches_per_image_reference(dtype):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 10), generator=gen).to(dtype)
    params = sample_crop_flip(6, 3, True, gen)
    out = apply_crop_flip(images, params, 3)
    assert out.shape == images.shape and out.dtype == dtype
    for i in range(6):
        ref = _reference_crop_flip(images[i], int(params.dy[i]), int(params.dx[i]), bool(params.flip[i]), 3)
        assert torch.equal(out[i], ref)
    centre = CropFlipParams(torch.full((6,), 3), torch.full((6,), 3), torch.zeros(6, dtype=torch.bool))
    assert torch.equal(apply_crop_flip(images, centre, 3), images)


@pytest.mark.gpu
def test_loader_cpu_equals_cuda(small):
    cpu = _epoch(make_loader(small.train, 16, train=True, generator=torch.Generator().manual_seed(2)))
    gpu = _epoch(
        make_loader(small.train, 16, train=True, generator=torch.Generator().manual_seed(2), device="cuda")
    )
    assert gpu[0][0].device.type == "cuda"
    assert _same(cpu, [(x.cpu(), y.cpu()) for x, y in gpu])


# -- CIFAR -----------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes `str` and `bytes` as python-2 strings, as in the pickles of the CIFAR website.

    Python 3 reads those back as `str` with encoding="latin1" (what torchvision does) and as
    `bytes` with encoding="bytes" (the website's `unpickle` recipe, whose keys are b"data", ...).
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _batch(rng: np.random.Generator, n: int, label_key: str, num_classes: int) -> dict:
    return {
        "batch_label": "training batch",
        label_key: rng.integers(0, num_classes, n).tolist(),
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


@pytest.fixture
def cifar10_root(tmp_path) -> tuple[Path, list[dict], dict]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    train = [_batch(rng, 3, "labels", 10) for _ in range(5)]
    train[0]["data"][0, :] = 0
    train[0]["data"][0, 0] = 255  # red at (0, 0): the first 1024 bytes are the R plane, row-major
    train[0]["data"][0, 1024 + 33] = 200  # green at (1, 1)
    for i, b in enumerate(train, 1):
        _write(folder / f"data_batch_{i}", b)
    test = _batch(rng, 4, "labels", 10)
    _write(folder / "test_batch", test)
    _write(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    return tmp_path, train, test


def test_fixture_is_cifar_format(cifar10_root):
    root, train, _ = cifar10_root
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # the CIFAR website's own `unpickle`
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert np.array_equal(entry[b"data"], train[0]["data"])


def test_cifar10_roundtrips_pixels_and_labels(cifar10_root):
    root, train, test = cifar10_root
    b = build_dataset("cifar10", root=str(root))
    assert b.num_classes == 10 and b.image_size == (32, 32) and b.class_names[3] == "class3"
    expected = np.concatenate([t["data"] for t in train]).reshape(-1, 3, 32, 32)
    assert b.train.images.dtype == torch.uint8 and torch.equal(b.train.images, torch.from_numpy(expected))
    assert b.train.labels.tolist() == sum((t["labels"] for t in train), [])
    assert torch.equal(b.test.images, torch.from_numpy(test["data"].reshape(-1, 3, 32, 32)))
    assert b.test.labels.tolist() == test["labels"]
    first = b.train.images[0]
    assert first[0, 0, 0] == 255 and first[1, 1, 1] == 200 and first.sum() == 455  # channel order kept
    x, y = next(iter(make_loader(b.test, 4, train=False)))
    assert torch.equal(x, b.test.images.float() / 255) and y.tolist() == test["labels"]


def test_cifar_subsets_keep_the_first_images(cifar10_root):
    root, train, _ = cifar10_root
    b = build_dataset("cifar10", root=str(root), train_size=4, test_size=2)
    assert len(b.train) == 4 and len(b.test) == 2
    assert torch.equal(b.train.images[3], torch.from_numpy(train[1]["data"][0].reshape(3, 32, 32)))
    with pytest.raises(ValueError, match="train_size=99 but the train split has 15"):
        build_dataset("cifar10", root=str(root), train_size=99)


def test_cifar_statistics_are_the_released_codes_normalisation(cifar10_root):
    """`official_float` normalises with the bundle's mean/std: for CIFAR they are the released code's constants, so
    the saliency detector sees exactly the float32 tensor that code fed it."""
    from trainables.data.cifar import CIFAR100_MEAN, CIFAR100_STD
    from trainables.mixing.ops import CIFAR_MEAN, CIFAR_STD

    b = build_dataset("cifar10", root=str(cifar10_root[0]))
    assert (b.mean, b.std) == (CIFAR_MEAN, CIFAR_STD)  # SaliencyMix, CutMix, GuidedMixup (x / 255)
    assert tuple(v / 255 for v in (129.3, 124.1, 112.4)) == CIFAR100_MEAN  # GuidedMixup's load_data.py
    assert tuple(v / 255 for v in (68.2, 65.4, 70.4)) == CIFAR100_STD


def test_cifar100_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    splits = {}
    for name, n in (("train", 6), ("test", 3)):
        splits[name] = _batch(rng, n, "fine_labels", 100)
        splits[name]["coarse_labels"] = [0] * n
        _write(folder / name, splits[name])
    _write(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["c"]})
    b = build_dataset("cifar100", root=str(tmp_path))
    assert b.num_classes == 100 and b.class_names[99] == "f99"
    assert b.train.labels.tolist() == splits["train"]["fine_labels"]
    assert torch.equal(b.test.images, torch.from_numpy(splits["test"]["data"].reshape(-1, 3, 32, 32)))


@pytest.mark.parametrize(
    "name, folder, file",
    [("cifar10", "cifar-10-batches-py", "data_batch_1"), ("cifar100", "cifar-100-python", "train")],
)
def test_cifar_missing_files_error(tmp_path, name, folder, file):
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(name, root=str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / folder) in msg and file in msg and "data.download: true" in msg


def test_cifar_partial_files_are_named(cifar10_root):
    root, _, _ = cifar10_root
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing: test_batch\)"):
        build_dataset("cifar10", root=str(root))


def test_cifar_root_expands_user(monkeypatch, cifar10_root):
    root, _, _ = cifar10_root
    monkeypatch.setenv("HOME", str(root.parent))
    b = build_dataset("cifar10", root=f"~/{root.name}")
    assert b.options["root"] == str(root)


# -- folder datasets --------------------------------------------------------------------------------


def _image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr).convert(mode)
    img.save(path)
    return np.asarray(img.convert("RGB"))


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        for i in range(3):
            _image(base / "train" / w / "images" / f"{w}_{i}.JPEG", (64, 64), 10 * k + i)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i in range(4):
        mode = "L" if i == 0 else "RGB"  # Tiny-ImageNet has some greyscale JPEGs
        _image(base / "val" / "images" / f"val_{i}.JPEG", (64, 64), 100 + i, mode)
        lines.append(f"val_{i}.JPEG\t{wnids[i % 3]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_tiny_imagenet_loads(tiny_root):
    b = build_dataset("tiny_imagenet", root=str(tiny_root))
    assert b.num_classes == 3 and b.image_size == (64, 64) and b.class_names == ("n01", "n02", "n03")
    assert len(b.train) == 9 and len(b.test) == 4
    x, y = next(iter(make_loader(b.train, 4, train=True, generator=torch.Generator().manual_seed(0))))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert y.dtype == torch.int64
    xs, ys = zip(*make_loader(b.test, 3, train=False))
    x, y = torch.cat(xs), torch.cat(ys)
    assert y.tolist() == [1, 0, 2, 1]  # val_i is wnids[i % 3] = n02, n01, n03, n02 -> sorted index
    path = tiny_root / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG"
    decoded = np.array(Image.open(path).convert("RGB"))
    assert torch.equal(x[0], torch.from_numpy(decoded).permute(2, 0, 1).float() / 255)  # eval: as is
    assert torch.equal(x[0][0], x[0][1])  # greyscale expanded to 3 channels


def test_tiny_imagenet_root_may_be_the_folder_itself(tiny_root):
    b = build_dataset("tiny_imagenet", root=str(tiny_root / "tiny-imagenet-200"))
    assert len(b.train) == 9


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"tiny-imagenet-200.*wnids\.txt"):
        build_dataset("tiny_imagenet", root=str(tmp_path))


@pytest.fixture
def folder_root(tmp_path) -> Path:
    sizes = [(40, 30), (50, 60), (33, 33)]
    for split, n in (("train", 3), ("val", 2)):
        for k, cls in enumerate(("dog", "cat")):
            for i in range(n):
                seed = 7 * k + i + (50 if split == "val" else 0)
                _image(tmp_path / split / cls / f"{i}.png", sizes[i], seed)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagefolder_loads(folder_root):
    b = build_dataset("imagefolder", root=str(folder_root), image_size=16)
    assert b.class_names == ("cat", "dog") and b.num_classes == 2 and b.image_size == (16, 16)
    assert len(b.train) == 6 and len(b.test) == 4
    loader = make_loader(b.train, 4, train=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 2
    batches = _epoch(loader)
    assert [x.shape for x, _ in batches] == [(4, 3, 16, 16), (2, 3, 16, 16)]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 0, 1, 1, 1]
    xs, ys = zip(*make_loader(b.test, 3, train=False))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (4, 3, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert y.tolist() == [0, 0, 1, 1]  # dataset order: class folders sorted, files sorted


def test_folder_loader_is_reproducible_and_independent_of_workers(folder_root):
    b = build_dataset("imagefolder", root=str(folder_root), image_size=16)
    g = torch.Generator()
    runs = []
    for workers in (0, 2):
        loader = make_loader(b.train, 4, train=True, generator=g, num_workers=workers)
        for _ in range(2):  # the second epoch reuses the persistent workers
            g.manual_seed(5)
            runs.append(_epoch(loader))
    assert all(_same(runs[0], run) for run in runs[1:])
    g = torch.Generator().manual_seed(6)
    assert not _same(runs[0], _epoch(make_loader(b.train, 4, train=True, generator=g)))


def test_imagefolder_errors(tmp_path, folder_root):
    with pytest.raises(ValueError, match="data.root is required"):
        build_dataset("imagefolder")
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "nothing")):
        build_dataset("imagefolder", root=str(tmp_path / "nothing"))
    _image(folder_root / "val" / "bird" / "0.png", (8, 8), 0)
    with pytest.raises(ValueError, match="train/ does not have: bird"):
        build_dataset("imagefolder", root=str(folder_root))


@pytest.mark.parametrize("h, w", [(64, 64), (30, 200), (200, 30), (1, 100), (5, 5)])
def test_random_resized_crop_params_stay_inside(h, w):
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        top, left, ch, cw = random_resized_crop_params(h, w, g)
        assert top >= 0 and left >= 0 and ch > 0 and cw > 0 and top + ch <= h and left + cw <= w


# -- data.pad: random-crop padding -----------------------------------------------------------------


def test_pad_option_reaches_the_training_loader(small):
    assert small.train.pad == 4 and small.options["pad"] == 4  # the default: SaliencyMix / CutMix
    b = build_dataset("synthetic_salient", seed=3, pad=2, train_size=16, test_size=2)  # GuidedMixup's CIFAR pad
    assert b.train.pad == 2 and b.options["pad"] == 2 and torch.equal(b.train.images, small.train.images[:16])
    x, _ = next(iter(make_loader(b.train, 16, train=True, generator=torch.Generator().manual_seed(5))))
    g = torch.Generator().manual_seed(5)  # the loader's draws: the order, then the crop/flip parameters
    order = torch.randperm(16, generator=g)
    params = sample_crop_flip(16, 2, True, g)
    assert int(params.dy.max()) <= 4 and int(params.dx.max()) <= 4
    assert torch.equal(x, apply_crop_flip(b.train.images[order], params, 2).float() / 255)


def test_pad_zero_disables_the_crop_but_not_the_flip(small):
    b = build_dataset("synthetic_salient", seed=3, pad=0, train_size=16, test_size=2)
    g = torch.Generator().manual_seed(0)
    x, _ = next(iter(make_loader(b.train, 16, train=True, generator=g)))
    originals = b.train.images.float() / 255
    as_is = [any(torch.equal(xi, o) for o in originals) for xi in x]
    mirrored = [any(torch.equal(xi, o.flip(-1)) for o in originals) for xi in x]
    assert all(a or m for a, m in zip(as_is, mirrored)) and any(as_is) and not all(as_is)


@pytest.mark.parametrize(
    "pad, message",
    [(-1, r"data.pad must be in \[0, 16\], got -1"), (17, r"data.pad must be in \[0, 16\], got 17"),
     (1.5, r"data.pad must be an integer, got 1.5"), ("2", r"data.pad must be an integer")],
)
def test_bad_pad_names_the_key_and_the_range(pad, message):
    with pytest.raises(ValueError, match=rf"synthetic_salient: {message}"):
        build_dataset("synthetic_salient", pad=pad, **SMALL)
    with pytest.raises(ValueError, match=r"synthetic_salient: data.pad must be in \[0, 32\], got 33"):
        build_dataset("synthetic_salient", pad=33, image_size=64, **SMALL)


def test_cifar_pad(cifar10_root):
    root = str(cifar10_root[0])
    assert build_dataset("cifar10", root=root).train.pad == 4
    b = build_dataset("cifar10", root=root, pad=2)
    assert (b.train.pad, b.test.pad, b.options["pad"]) == (2, 2, 2)
    with pytest.raises(ValueError, match=r"cifar10: data.pad must be in \[0, 16\], got -2"):
        build_dataset("cifar10", root=root, pad=-2)
    assert "pad" in dataset_options("cifar100") and "pad" not in dataset_options("imagefolder")  # RandomResizedCrop


def test_tiny_imagenet_pad(tiny_root):
    b = build_dataset("tiny_imagenet", root=str(tiny_root), pad=0)
    assert (b.train.pad, b.options["pad"]) == (0, 0)
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    outs = [b.train.transform(img, seed) for seed in range(8)]
    assert all(torch.equal(o, img) or torch.equal(o, img.flip(-1)) for o in outs)  # no crop, still flips
    assert build_dataset("tiny_imagenet", root=str(tiny_root)).train.pad == 4
    with pytest.raises(ValueError, match=r"tiny_imagenet: data.pad must be in \[0, 32\], got 40"):
        build_dataset("tiny_imagenet", root=str(tiny_root), pad=40)
